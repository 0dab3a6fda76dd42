"""The eight transformer blueprint specifications this pack registers.

Specs are plain values; :mod:`esper_blueprints_transformer.plugin` hands them to the
registry through the ``esper_register_blueprints`` hook. Pairs that differ only in a default
(``lora``/``lora_large``, ``mlp_small``/``mlp``) share one factory and one count function
and declare the same options, so the larger variant is a different default, not a copy.

Every blueprint but the two attention ones is position-wise (``position_wise=True``): a
decoder feeding one new token at a time with a KV cache gives the same results as the full
forward. ``attention`` and ``flex_attention`` mix positions and keep no KV cache of their
own, so a seed of theirs that reaches the output refuses cached decoding with a clear error
(decode with ``use_cache=False``); see ``docs/blueprints-transformer.md``.
"""

from __future__ import annotations

from torch import nn

from esper_blueprints_transformer import counts
from esper_blueprints_transformer.attention import build_attention
from esper_blueprints_transformer.lora import LoRASeed
from esper_blueprints_transformer.mlp import build_mlp
from esper_blueprints_transformer.norm import NormSeed
from esper_core import BlueprintSpec, Option

__all__ = ["BLUEPRINTS", "TOPOLOGY"]

TOPOLOGY = "transformer"


def _build_noop(dim: int) -> nn.Module:
    return nn.Identity()


def _build_norm(dim: int) -> nn.Module:
    return NormSeed(dim)


def _build_flex_attention(dim: int, *, n_head: int) -> nn.Module:
    # Imported on first build: FlexAttention pulls in torch._dynamo, which registering and
    # listing blueprints should not pay for.
    from esper_blueprints_transformer.flex import build_flex_attention

    return build_flex_attention(dim, n_head=n_head)


def _build_lora(dim: int, *, rank: int) -> nn.Module:
    return LoRASeed(dim, rank)


def _rank(default: int) -> Option:
    return Option("rank", int, default, "width of the low-rank bottleneck", minimum=1)


def _n_head() -> Option:
    return Option("n_head", int, 4, "number of attention heads; must divide dim", minimum=1)


def _expansion(default: int) -> Option:
    return Option("expansion", int, default, "hidden width as a multiple of dim", minimum=1)


_CHECKPOINT = Option(
    "checkpoint", bool, False, "recompute the hidden activation in backward instead of storing it"
)


BLUEPRINTS: tuple[BlueprintSpec, ...] = (
    BlueprintSpec(
        name="noop",
        topology=TOPOLOGY,
        position_wise=True,
        factory=_build_noop,
        param_count=counts.noop_params,
        flop_count=counts.noop_flops,
        description="identity; no parameters (a placeholder that never changes the host)",
    ),
    BlueprintSpec(
        name="norm",
        topology=TOPOLOGY,
        position_wise=True,
        factory=_build_norm,
        param_count=counts.norm_params,
        flop_count=counts.norm_flops,
        description="LayerNorm delta behind a tanh gate that starts closed",
    ),
    BlueprintSpec(
        name="lora",
        topology=TOPOLOGY,
        position_wise=True,
        factory=_build_lora,
        param_count=counts.lora_params,
        flop_count=counts.lora_flops,
        options=(_rank(8),),
        description="low-rank residual update (rank 8), zero-initialised up-projection",
    ),
    BlueprintSpec(
        name="lora_large",
        topology=TOPOLOGY,
        position_wise=True,
        factory=_build_lora,
        param_count=counts.lora_params,
        flop_count=counts.lora_flops,
        options=(_rank(32),),
        description="low-rank residual update (rank 32), zero-initialised up-projection",
    ),
    BlueprintSpec(
        name="attention",
        topology=TOPOLOGY,
        # Mixes positions: it keeps no KV cache, so cached decoding is refused (docs/shipping.md, cached decoding).
        position_wise=False,
        factory=build_attention,
        param_count=counts.attention_params,
        flop_count=counts.attention_flops,
        options=(_n_head(),),
        validate=counts.check_heads,
        description="extra causal self-attention (SDPA), zero-initialised output projection",
    ),
    BlueprintSpec(
        name="mlp_small",
        topology=TOPOLOGY,
        position_wise=True,
        factory=build_mlp,
        param_count=counts.mlp_params,
        flop_count=counts.mlp_flops,
        options=(_expansion(2), _CHECKPOINT),
        description="position-wise GELU MLP (expansion 2), zero-initialised output layer",
    ),
    BlueprintSpec(
        name="mlp",
        topology=TOPOLOGY,
        position_wise=True,
        factory=build_mlp,
        param_count=counts.mlp_params,
        flop_count=counts.mlp_flops,
        options=(_expansion(4), _CHECKPOINT),
        description="position-wise GELU MLP (expansion 4), zero-initialised output layer",
    ),
    BlueprintSpec(
        name="flex_attention",
        topology=TOPOLOGY,
        # Mixes positions: it keeps no KV cache, so cached decoding is refused (docs/shipping.md, cached decoding).
        position_wise=False,
        factory=_build_flex_attention,
        param_count=counts.attention_params,
        flop_count=counts.attention_flops,
        options=(_n_head(),),
        validate=counts.check_heads,
        description="causal self-attention via FlexAttention (SDPA where Flex cannot run); same weights as attention",
    ),
)
