"""The eight CNN blueprint specifications, in registration order.

Descriptions are written for someone choosing a blueprint: what the seed does, what it costs
as a function of the channel count C (and spatial size H x W where that matters), and when
it is the right pick. Parameter counts and FLOPs come from :mod:`esper_blueprints_cnn.counts`;
the registry validates ``dim`` and options before any factory or count runs.
"""

from __future__ import annotations

from esper_blueprints_cnn.counts import (
    attention_flops,
    attention_params,
    bottleneck_flops,
    bottleneck_params,
    conv_heavy_flops,
    conv_heavy_params,
    conv_light_flops,
    conv_light_params,
    conv_small_flops,
    conv_small_params,
    depthwise_flops,
    depthwise_params,
    noop_flops,
    noop_params,
    norm_flops,
    norm_params,
)
from esper_blueprints_cnn.groups import check_channels
from esper_blueprints_cnn.options import ATTENTION_REDUCTION, BOTTLENECK_REDUCTION
from esper_blueprints_cnn.seeds import (
    BottleneckSeed,
    DepthwiseSeed,
    NoopSeed,
    NormSeed,
    ResidualConvSeed,
    SqueezeExcitationSeed,
)
from esper_core import BlueprintSpec

__all__ = [
    "SPECS",
    "TOPOLOGY",
    "build_attention",
    "build_bottleneck",
    "build_conv_heavy",
    "build_conv_light",
    "build_conv_small",
    "build_depthwise",
    "build_noop",
    "build_norm",
]

TOPOLOGY = "cnn"


def build_noop(dim: int) -> NoopSeed:
    """The parameter-free identity seed (``dim`` is validated, then unused)."""
    check_channels(dim, "dim")
    return NoopSeed()


def build_norm(dim: int) -> NormSeed:
    return NormSeed(dim)


def build_attention(dim: int, reduction: int = ATTENTION_REDUCTION.default) -> SqueezeExcitationSeed:
    return SqueezeExcitationSeed(dim, reduction)


def build_depthwise(dim: int) -> DepthwiseSeed:
    return DepthwiseSeed(dim)


def build_bottleneck(dim: int, reduction: int = BOTTLENECK_REDUCTION.default) -> BottleneckSeed:
    return BottleneckSeed(dim, reduction)


def build_conv_small(dim: int) -> ResidualConvSeed:
    return ResidualConvSeed(dim, kernel_size=1, depth=1)


def build_conv_light(dim: int) -> ResidualConvSeed:
    return ResidualConvSeed(dim, kernel_size=3, depth=1)


def build_conv_heavy(dim: int) -> ResidualConvSeed:
    return ResidualConvSeed(dim, kernel_size=3, depth=2)


SPECS: tuple[BlueprintSpec, ...] = (
    BlueprintSpec(
        name="noop",
        topology=TOPOLOGY,
        factory=build_noop,
        param_count=noop_params,
        flop_count=noop_flops,
        description=(
            "Identity with no parameters and no compute. The do-nothing baseline: "
            "use it to measure what a real seed adds; controllers normally never germinate it."
        ),
    ),
    BlueprintSpec(
        name="norm",
        topology=TOPOLOGY,
        factory=build_norm,
        param_count=norm_params,
        flop_count=norm_flops,
        description=(
            "Learned, bounded blend toward GroupNorm of the features (2C + 1 params, no conv "
            "compute). The cheapest useful seed: pick it when activations at this point drift in "
            "scale or offset and the host only needs re-normalising, not new features."
        ),
    ),
    BlueprintSpec(
        name="attention",
        topology=TOPOLOGY,
        factory=build_attention,
        param_count=attention_params,
        flop_count=attention_flops,
        options=(ATTENTION_REDUCTION,),
        description=(
            "Squeeze-and-excitation: a small MLP on channel means rescales every channel by a "
            "gate in (0, 2) (about 2C^2/reduction params; compute independent of H x W). Pick it "
            "to re-weight existing channels per input at almost no cost; it adds no spatial "
            "processing and no new features."
        ),
    ),
    BlueprintSpec(
        name="depthwise",
        topology=TOPOLOGY,
        factory=build_depthwise,
        param_count=depthwise_params,
        flop_count=depthwise_flops,
        description=(
            "Depthwise-separable residual branch: per-channel 3x3 conv, then 1x1 channel mixing "
            "(C^2 + 11C params, about 1/9 of a full 3x3 conv). Pick it for spatial context plus "
            "channel mixing on a budget, especially at large C."
        ),
    ),
    BlueprintSpec(
        name="bottleneck",
        topology=TOPOLOGY,
        factory=build_bottleneck,
        param_count=bottleneck_params,
        flop_count=bottleneck_flops,
        options=(BOTTLENECK_REDUCTION,),
        description=(
            "ResNet bottleneck residual branch: 1x1 down to b = max(8, C // reduction) channels, "
            "3x3 conv, 1x1 back up (2Cb + 9b^2 + 2C params). Pick it for a full 3x3 receptive "
            "field in a compressed space; reduction trades capacity for cost."
        ),
    ),
    BlueprintSpec(
        name="conv_small",
        topology=TOPOLOGY,
        factory=build_conv_small,
        param_count=conv_small_params,
        flop_count=conv_small_flops,
        description=(
            "1x1 conv + GroupNorm residual branch (C^2 + 2C params): mixes channels at each "
            "position without spatial context. Pick it when features need recombining, not "
            "a larger receptive field."
        ),
    ),
    BlueprintSpec(
        name="conv_light",
        topology=TOPOLOGY,
        factory=build_conv_light,
        param_count=conv_light_params,
        flop_count=conv_light_flops,
        description=(
            "One full 3x3 conv + GroupNorm residual branch (9C^2 + 2C params): spatial and channel "
            "mixing together, like adding one standard conv layer to the host."
        ),
    ),
    BlueprintSpec(
        name="conv_heavy",
        topology=TOPOLOGY,
        factory=build_conv_heavy,
        param_count=conv_heavy_params,
        flop_count=conv_heavy_flops,
        description=(
            "Two 3x3 conv + GroupNorm blocks with a ReLU between, as a residual branch (a ResNet "
            "basic block; 18C^2 + 4C params). The most capacity in this pack: pick it when the "
            "host lacks depth at this point and the budget allows twice conv_light's cost."
        ),
    ),
)
