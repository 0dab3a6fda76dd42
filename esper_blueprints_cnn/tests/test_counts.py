"""Exact closed-form parameter and FLOP counts.

Parameter counts are checked against ``numel`` of real modules for every C in 1..1024 (built
on the meta device, so no memory is allocated), and against the table of the spec this pack
re-implements. FLOP counts are checked against ``FlopCounterMode``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import esper_core
from esper_blueprints_cnn import counts
from esper_core import RegistryError
from esper_core.registry import flop_count, param_count

ALL_WIDTHS = range(1, 1025)


@contextmanager
def cheap_construction() -> Iterator[None]:
    """Build on the meta device and skip the layers' random init.

    Initialisation never changes a parameter's shape, and skipping it makes a full sweep of
    1024 widths cost a few seconds instead of a minute. The blueprint's own birth init
    (zeroing) still runs, so a factory that built extra tensors there would still be caught.
    """
    with ExitStack() as stack:
        patcher = stack.enter_context(pytest.MonkeyPatch.context())
        for layer in (nn.Conv2d, nn.Linear, nn.GroupNorm):
            patcher.setattr(layer, "reset_parameters", lambda self: None)
        stack.enter_context(torch.device("meta"))
        yield


def mismatches(name: str, widths: range, numel: Callable[[nn.Module], int], **options: int) -> list:
    spec = esper_core.get_blueprint("cnn", name)
    found = []
    with cheap_construction():
        for dim in widths:
            built = numel(spec.factory(dim, **options))
            declared = spec.param_count(dim, **options)
            if built != declared:
                found.append((dim, options, built, declared))
    return found


def test_param_count_is_exact_for_every_width(blueprint: str, numel: Callable[[nn.Module], int]) -> None:
    assert mismatches(blueprint, ALL_WIDTHS, numel) == []


@pytest.mark.parametrize("reduction", [1, 1025])
def test_param_count_is_exact_for_every_width_with_reduction(
    reducible: str, reduction: int, numel: Callable[[nn.Module], int]
) -> None:
    # The extremes: no reduction, and one larger than every width in the sweep (the default,
    # 4, is swept above; every reduction at selected widths is swept below).
    assert mismatches(reducible, ALL_WIDTHS, numel, reduction=reduction) == []


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 8, 9, 17, 64, 100, 257])
def test_param_count_is_exact_for_every_reduction(
    reducible: str, dim: int, numel: Callable[[nn.Module], int]
) -> None:
    # Every reduction from 1 past dim: beyond dim the hidden width no longer changes.
    spec = esper_core.get_blueprint("cnn", reducible)
    with cheap_construction():
        for reduction in range(1, dim + 3):
            assert numel(spec.factory(dim, reduction=reduction)) == spec.param_count(dim, reduction=reduction)


# Parameter counts from the spec's numerical verification table (spec/blueprints.md §6.1).
SPEC_TABLE = {
    "norm": [3, 7, 17, 33, 65, 129, 193, 257, 769, 1025, 1537, 8193],
    "attention": [3, 9, 40, 144, 544, 2112, 4704, 8320, 74112, 131584, 295680, 8392704],
    "depthwise": [12, 42, 152, 432, 1376, 4800, 10272, 17792, 151680, 267776, 598272, 16822272],
    "bottleneck": [594, 630, 720, 864, 1152, 4480, 9984, 17664, 157440, 279552, 628224, 17833984],
    "conv_small": [3, 15, 80, 288, 1088, 4224, 9408, 16640, 148224, 263168, 591360, 16785408],
    "conv_light": [11, 87, 592, 2336, 9280, 36992, 83136, 147712, 1327872, 2360320, 5309952, 151003136],
    "conv_heavy": [22, 174, 1184, 4672, 18560, 73984, 166272, 295424, 2655744, 4720640, 10619904, 302006272],
}
SPEC_DIMS = [1, 3, 8, 16, 32, 64, 96, 128, 384, 512, 768, 4096]


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_param_count_matches_spec_table(name: str) -> None:
    got = [param_count("cnn", name, dim) for dim in SPEC_DIMS]
    assert got == SPEC_TABLE[name]


def test_noop_has_no_parameters() -> None:
    assert [param_count("cnn", "noop", dim) for dim in (1, 64, 4096)] == [0, 0, 0]


def test_reduction_changes_the_count_as_documented() -> None:
    # attention: 2 C max(1, C // r) + C ; bottleneck: 2 C b + 9 b^2 + 2 C, b = max(8, C // r)
    assert param_count("cnn", "attention", 64, reduction=16) == 2 * 64 * 4 + 64
    assert param_count("cnn", "attention", 64, reduction=1000) == 2 * 64 * 1 + 64
    assert param_count("cnn", "bottleneck", 64, reduction=2) == 2 * 64 * 32 + 9 * 32 * 32 + 128
    assert param_count("cnn", "bottleneck", 64, reduction=1000) == 2 * 64 * 8 + 9 * 64 + 128


# ------------------------------------------------------------------------------------------
# FLOPs
# ------------------------------------------------------------------------------------------

FLOP_SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (3, 16, 4, 4), (2, 64, 8, 8)]


def counted_flops(module: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("shape", FLOP_SHAPES, ids=str)
def test_flop_count_matches_flop_counter(blueprint: str, shape: tuple[int, ...], build: Callable) -> None:
    dim = shape[1]
    module = build(blueprint, dim)
    expected = counted_flops(module, torch.randn(shape))
    assert flop_count("cnn", blueprint, dim, shape) == expected


@pytest.mark.parametrize("reduction", [1, 3, 100])
def test_flop_count_matches_flop_counter_with_reduction(
    reducible: str, reduction: int, build: Callable
) -> None:
    shape = (2, 24, 6, 5)
    module = build(reducible, 24, reduction=reduction)
    expected = counted_flops(module, torch.randn(shape))
    assert flop_count("cnn", reducible, 24, shape, reduction=reduction) == expected


def test_flops_are_nonzero_where_there_is_compute() -> None:
    # Guards the FLOP test against a counter that silently counts nothing.
    shape = (2, 8, 4, 4)
    for name in ("attention", "depthwise", "bottleneck", "conv_small", "conv_light", "conv_heavy"):
        assert flop_count("cnn", name, 8, shape) > 0, name


def test_attention_flops_do_not_depend_on_spatial_size() -> None:
    small = flop_count("cnn", "attention", 32, (2, 32, 1, 1))
    large = flop_count("cnn", "attention", 32, (2, 32, 64, 64))
    assert small == large


@pytest.mark.parametrize(
    "shape",
    [(2, 9, 4, 4), (2, 8, 4), (2, 8, 4, 4, 1), (0, 8, 4, 4), (2, 8, 0, 4), (2, 8, 4.0, 4), (2, 8, True, 4)],
    ids=str,
)
def test_flop_count_rejects_bad_input_shapes(blueprint: str, shape: tuple) -> None:
    with pytest.raises(RegistryError, match="input_shape"):
        flop_count("cnn", blueprint, 8, shape)


def test_count_functions_are_public() -> None:
    for name in counts.__all__:
        assert hasattr(counts, name), name
