"""Options and dims: declared, validated before anything is built, with clear errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import esper_core
from esper_blueprints_cnn import BottleneckSeed, SqueezeExcitationSeed
from esper_core import RegistryError
from esper_core.errors import OptionError
from esper_core.registry import flop_count, param_count, plugin_report

BAD_REDUCTIONS = [0, -1, 2.5, 4.0, True, "4", None]


def test_declared_options() -> None:
    keys = {info.distribution: info for info in plugin_report()}["esper-blueprints-cnn"].blueprints
    specs = [esper_core.get_blueprint(*key.split(":")) for key in keys]
    declared = {spec.name: [opt.name for opt in spec.options] for spec in specs}
    assert declared == {
        "noop": [],
        "norm": [],
        "attention": ["reduction"],
        "depthwise": [],
        "bottleneck": ["reduction"],
        "conv_small": [],
        "conv_light": [],
        "conv_heavy": [],
    }
    for name in ("attention", "bottleneck"):
        option = esper_core.get_blueprint("cnn", name).option("reduction")
        assert (option.type, option.default, option.minimum) == (int, 4, 1)
        assert "C // reduction" in option.help


@pytest.mark.parametrize("bad", BAD_REDUCTIONS, ids=repr)
def test_bad_reduction_is_rejected_everywhere(reducible: str, bad: object) -> None:
    spec = esper_core.get_blueprint("cnn", reducible)
    calls = [
        lambda: esper_core.create_blueprint("cnn", reducible, 16, reduction=bad),
        lambda: param_count("cnn", reducible, 16, reduction=bad),
        lambda: flop_count("cnn", reducible, 16, (1, 16, 2, 2), reduction=bad),
        lambda: spec.factory(16, reduction=bad),  # the factory validates too
    ]
    for call in calls:
        with pytest.raises(OptionError, match="reduction") as info:
            call()
        assert repr(bad) in str(info.value)
        assert ">= 1" in str(info.value)


@pytest.mark.parametrize("cls", [SqueezeExcitationSeed, BottleneckSeed])
def test_seed_classes_validate_reduction(cls: type) -> None:
    with pytest.raises(OptionError, match="reduction"):
        cls(8, reduction=0)


@pytest.mark.parametrize(("dim", "reduction"), [(1, 4), (3, 8), (3, 1000), (7, 8), (16, 17)])
def test_reduction_larger_than_channels(
    reducible: str, dim: int, reduction: int, build: Callable, numel: Callable, generator: torch.Generator
) -> None:
    module = build(reducible, dim, reduction=reduction)
    # Hidden widths floor at 1 (attention) and 8 (bottleneck) instead of collapsing to 0.
    hidden = module.fc[0].out_features if reducible == "attention" else module.down.out_channels
    assert hidden == (1 if reducible == "attention" else 8)
    assert numel(module) == param_count("cnn", reducible, dim, reduction=reduction)
    x = torch.randn(2, dim, 3, 4, generator=generator)
    assert torch.equal(module(x), x)


def test_reduction_one_keeps_full_width(build: Callable) -> None:
    assert build("attention", 12, reduction=1).fc[0].out_features == 12
    assert build("bottleneck", 12, reduction=1).down.out_channels == 12


def test_unknown_option_lists_accepted_ones(blueprint: str) -> None:
    with pytest.raises(OptionError, match="ratio") as info:
        esper_core.create_blueprint("cnn", blueprint, 8, ratio=2)
    if blueprint in ("attention", "bottleneck"):
        assert "reduction" in str(info.value)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "8", None], ids=repr)
def test_bad_dim_is_rejected(blueprint: str, bad: object) -> None:
    spec = esper_core.get_blueprint("cnn", blueprint)
    for call in (
        lambda: esper_core.create_blueprint("cnn", blueprint, bad),
        lambda: param_count("cnn", blueprint, bad),
        lambda: spec.factory(bad),
    ):
        with pytest.raises(RegistryError) as info:
            call()
        assert repr(bad) in str(info.value)
