"""The module the ``esper.blueprints`` entry point names: it registers the pack's blueprints."""

from __future__ import annotations

from collections.abc import Callable

from esper_blueprints_example import counts, seeds
from esper_core import BlueprintSpec, Option, hookimpl

__all__ = ["BLUEPRINTS", "esper_register_blueprints"]

BLUEPRINTS: tuple[BlueprintSpec, ...] = (
    BlueprintSpec(
        name="pointwise",
        topology="cnn",
        factory=seeds.PointwiseSeed,
        param_count=counts.pointwise_params,
        flop_count=counts.pointwise_flops,
        description="1x1 residual MLP x + W2*GELU(W1*x); W2 starts at zero",
        options=(
            Option("expansion", int, 2, "hidden width as a multiple of the channels", minimum=1, maximum=4),
            Option("bias", bool, False, "give both convolutions a bias"),
        ),
    ),
    BlueprintSpec(
        name="token_shift",
        topology="transformer",
        factory=seeds.TokenShiftSeed,
        param_count=counts.token_shift_params,
        flop_count=counts.token_shift_flops,
        description="causal token shift x + W*x[t - shift]; W starts at zero",
        options=(
            Option("shift", int, 1, "how many positions back each token looks", minimum=1, maximum=4),
            Option("bias", bool, True, "give the projection a bias"),
        ),
    ),
)


@hookimpl
def esper_register_blueprints(register: Callable[[BlueprintSpec], None]) -> None:
    """Called once by Esper, the first time its registry is used."""
    for spec in BLUEPRINTS:
        register(spec)
