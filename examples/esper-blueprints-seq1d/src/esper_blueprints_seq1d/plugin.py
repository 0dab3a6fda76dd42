"""The module the ``esper.blueprints`` entry point names: one topology, two blueprints.

Esper calls every pack's ``esper_register_topologies`` before any
``esper_register_blueprints``, so blueprints (this pack's or another's) can target
``seq1d`` no matter in which order packs load.
"""

from __future__ import annotations

from collections.abc import Callable

from esper_blueprints_seq1d import counts, seeds
from esper_blueprints_seq1d.topology import SEQ1D
from esper_core import BlueprintSpec, Option, Topology, hookimpl

__all__ = ["BLUEPRINTS", "esper_register_blueprints", "esper_register_topologies"]

BLUEPRINTS: tuple[BlueprintSpec, ...] = (
    BlueprintSpec(
        name="causal_conv",
        topology="seq1d",
        factory=seeds.CausalConvSeed,
        param_count=counts.causal_conv_params,
        flop_count=counts.causal_conv_flops,
        description="causal depthwise conv + 1x1 mix, x + P*GELU(DW(x)); P starts at zero",
        options=(
            Option("kernel_size", int, 3, "taps of the causal depthwise convolution", minimum=2, maximum=9),
            Option("bias", bool, False, "give both convolutions a bias"),
        ),
    ),
    BlueprintSpec(
        name="shift_mix",
        topology="seq1d",
        factory=seeds.ShiftMixSeed,
        param_count=counts.shift_mix_params,
        flop_count=counts.shift_mix_flops,
        description="causal shift + 1x1 mix, x + P*x[t - shift]; P starts at zero",
        options=(
            Option("shift", int, 1, "how many positions back each position looks", minimum=1, maximum=4),
        ),
    ),
)


@hookimpl
def esper_register_topologies(register: Callable[[Topology], None]) -> None:
    """Called once, before any blueprint is registered."""
    register(SEQ1D)


@hookimpl
def esper_register_blueprints(register: Callable[[BlueprintSpec], None]) -> None:
    """Called once, after every pack's topologies are registered."""
    for spec in BLUEPRINTS:
        register(spec)
