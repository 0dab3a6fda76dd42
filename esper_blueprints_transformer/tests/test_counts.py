"""Exact parameter counts, FLOP counts, and option validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from esper_blueprints_transformer import build_attention, build_flex_attention, counts
from esper_core import RegistryError, create_blueprint
from esper_core.errors import OptionError
from esper_core.registry import flop_count, param_count

ALL_DIMS = range(1, 1025)
# Non-default option values are swept over a spread of widths (all powers of two, odd and
# prime widths among them) rather than all 1024, which keeps the sweep fast.
SOME_DIMS = sorted({*range(1, 1025, 37), *(2**k for k in range(11)), 6, 12, 96, 384, 768, 1023})

# Declared option values per blueprint, besides the defaults: values on either side of them.
OTHER_OPTIONS = {
    "noop": [],
    "norm": [],
    "lora": [{"rank": r} for r in (1, 3, 32)],
    "lora_large": [{"rank": r} for r in (1, 8, 33)],
    "attention": [{"n_head": h} for h in (1, 2, 3, 6, 8, 16)],
    "flex_attention": [{"n_head": h} for h in (1, 2, 3, 6, 8, 16)],
    "mlp_small": [{"expansion": 1}, {"expansion": 3}, {"checkpoint": True}],
    "mlp": [{"expansion": 1}, {"expansion": 5}, {"checkpoint": True}],
}


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _count_mismatches(spec, options, dims) -> tuple[list, int]:
    mismatches, checked = [], 0
    for dim in dims:
        if dim % options.get("n_head", spec.defaults().get("n_head", 1)) != 0:
            continue
        with torch.device("meta"):
            module = spec.factory(dim, **spec.resolve(dim, options))
        declared, actual = spec.count_params(dim, **options), _numel(module)
        if declared != actual:
            mismatches.append((dim, options, declared, actual))
        checked += 1
    return mismatches, checked


def test_param_count_is_exact_for_every_dim_up_to_1024(name, spec_of):
    """Closed form == numel of the built module (on the meta device, so nothing is allocated)."""
    spec = spec_of(name)
    mismatches, checked = _count_mismatches(spec, {}, ALL_DIMS)
    assert mismatches == []
    assert checked >= len(ALL_DIMS) // 4  # attention checks only dims divisible by n_head=4


def test_param_count_is_exact_for_other_option_values(name, spec_of):
    spec = spec_of(name)
    for options in OTHER_OPTIONS[name]:
        mismatches, checked = _count_mismatches(spec, options, SOME_DIMS)
        assert mismatches == []
        assert checked > 0


def test_param_count_through_the_registry_at_documented_widths():
    # Spec facts (blueprints spec, section 6.1), independent of this implementation.
    documented = {
        ("norm", 384): 769,
        ("lora", 384): 6_144,
        ("lora_large", 384): 24_576,
        ("attention", 384): 591_360,
        ("flex_attention", 384): 591_360,
        ("mlp_small", 384): 590_976,
        ("mlp", 384): 1_181_568,
        ("mlp", 4096): 134_238_208,
        ("mlp_small", 1): 7,
        ("mlp", 1): 13,
        ("lora", 1): 16,
    }
    for (name, dim), expected in documented.items():
        assert param_count("transformer", name, dim) == expected


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("shape", [(2, 6), (1, 130)])
def test_flop_count_matches_flop_counter(case, build, scramble, dim, shape, grad):
    """Declared forward FLOPs == FlopCounterMode's count of one forward pass.

    The math SDPA backend is forced because the counter sees attention only as the batched
    products it decomposes into (or as a registered fused GPU kernel); CPU's fused SDPA
    kernel is invisible to it and would count as zero.
    """
    module = scramble(build(case.name, **case.options)).train()
    x = torch.randn(*shape, dim)
    with (
        sdpa_kernel(SDPBackend.MATH),
        FlopCounterMode(display=False) as counter,
        torch.set_grad_enabled(grad),
    ):
        module(x)
    declared = flop_count("transformer", case.name, dim, (*shape, dim), **case.options)
    assert declared == counter.get_total_flops()


def test_flop_count_rejects_a_shape_that_is_not_b_t_dim():
    for bad in [(2, 6), (2, 6, 9), (2, 0, 8), (1, 2, 3, 8), (2.0, 6, 8), (True, 6, 8)]:
        with pytest.raises(RegistryError, match=r"input_shape"):
            flop_count("transformer", "mlp", 8, bad)


@pytest.mark.parametrize("name_", ["attention", "flex_attention"])
@pytest.mark.parametrize(("dim_", "n_head"), [(10, 3), (65, 4), (1, 4), (6, 4), (384, 7)])
def test_bad_head_count_is_rejected_before_anything_is_built(name_, dim_, n_head, monkeypatch):
    built: list[tuple[int, int]] = []
    original = nn.Linear.__init__

    def recording_init(self, in_features, out_features, *args, **kwargs):
        built.append((in_features, out_features))
        original(self, in_features, out_features, *args, **kwargs)

    monkeypatch.setattr(nn.Linear, "__init__", recording_init)
    message = rf"dim={dim_}\b.*n_head={n_head}\b"
    with pytest.raises(OptionError, match=message):
        create_blueprint("transformer", name_, dim_, n_head=n_head)
    with pytest.raises(OptionError, match=message):
        param_count("transformer", name_, dim_, n_head=n_head)
    with pytest.raises(OptionError, match=message):
        flop_count("transformer", name_, dim_, (1, 2, dim_), n_head=n_head)
    factory = build_attention if name_ == "attention" else build_flex_attention
    with pytest.raises(OptionError, match=message):
        factory(dim_, n_head=n_head)
    assert built == []


def test_accepted_head_counts_are_exactly_the_divisors():
    for dim in range(1, 400):
        assert counts.accepted_head_counts(dim) == [n for n in range(1, dim + 1) if dim % n == 0]


def test_head_error_lists_the_accepted_head_counts():
    with pytest.raises(OptionError) as info:
        counts.check_heads(12, n_head=5)
    assert "[1, 2, 3, 4, 6, 12]" in str(info.value)


def test_options_are_validated_by_the_registry():
    with pytest.raises(OptionError, match="rank"):
        create_blueprint("transformer", "lora", 8, rank=0)
    with pytest.raises(OptionError, match="expansion"):
        create_blueprint("transformer", "mlp", 8, expansion=2.5)
    with pytest.raises(OptionError, match="checkpoint"):
        create_blueprint("transformer", "mlp", 8, checkpoint=1)
    with pytest.raises(OptionError, match="n_head"):
        create_blueprint("transformer", "norm", 8, n_head=2)


def test_variants_share_one_factory_and_count(spec_of):
    """mlp_small/mlp and lora/lora_large differ only in a default (B3-TFM-04)."""
    for small, large, option, defaults in [
        ("mlp_small", "mlp", "expansion", (2, 4)),
        ("lora", "lora_large", "rank", (8, 32)),
    ]:
        a, b = spec_of(small), spec_of(large)
        assert a.factory is b.factory and a.param_count is b.param_count and a.flop_count is b.flop_count
        assert (a.option(option).default, b.option(option).default) == defaults
    attention, flex = spec_of("attention"), spec_of("flex_attention")
    assert attention.param_count is flex.param_count and attention.flop_count is flex.flop_count


def test_declared_defaults_build_what_they_say(build):
    assert build("lora").down.weight.shape == (8, 8)
    assert build("lora_large").up.weight.shape == (8, 32)
    assert build("mlp_small").fc1.out_features == 16
    assert build("mlp").fc1.out_features == 32
    assert build("mlp").use_checkpoint is False
    assert build("mlp", checkpoint=True).use_checkpoint is True
    assert build("attention").n_head == 4 and build("attention").head_dim == 2
    assert create_blueprint("transformer", "lora", 64, rank=16).down.weight.shape == (16, 64)
