"""Closed-form parameter and FLOP counts of the transformer blueprints.

The registry charges a seed's "rent" from these numbers and sorts blueprints by them, so
they must be exact for every width and cheap enough to call in a policy loop: no module is
ever built here. Each function mirrors one module's layer list; the tests compare them with
``numel`` of modules built on the meta device and with ``FlopCounterMode``.

FLOPs follow ``torch.utils.flop_counter`` conventions, so the two can be compared directly:
a matrix product of an (M, K) and a (K, N) operand costs ``2·M·K·N``; bias additions,
normalisations and activations cost nothing; scaled dot-product attention is charged as
its two dense batched products (``QKᵀ`` and ``AV``) even though the causal mask means a
fused kernel skips about half of that work.
"""

from __future__ import annotations

import math

from esper_core.errors import OptionError, RegistryError

__all__ = [
    "accepted_head_counts",
    "attention_flops",
    "attention_params",
    "check_heads",
    "lora_flops",
    "lora_params",
    "mlp_flops",
    "mlp_params",
    "noop_flops",
    "noop_params",
    "norm_flops",
    "norm_params",
    "tokens_in",
]


def accepted_head_counts(dim: int) -> list[int]:
    """Every head count that divides ``dim``, ascending (to say what a bad ``n_head`` could be)."""
    small = [n for n in range(1, math.isqrt(dim) + 1) if dim % n == 0]
    large = [dim // n for n in reversed(small) if n * n != dim]
    return small + large


def check_heads(dim: int, *, n_head: int) -> None:
    """Reject a head count that does not split ``dim`` into equal heads.

    Called by the spec's ``validate`` hook (so the registry rejects the call before any
    factory or count runs) and again at the top of the attention factories and counts, so a
    direct call fails the same way before a single tensor is allocated.
    """
    if dim % n_head != 0:
        raise OptionError(
            f"attention needs dim % n_head == 0, but dim={dim} is not divisible by n_head={n_head}; "
            f"accepted n_head values for dim={dim}: {accepted_head_counts(dim)}"
        )


def tokens_in(dim: int, input_shape: tuple[int, ...]) -> int:
    """Number of token vectors (``B·T``) in a ``(B, T, dim)`` input; rejects other shapes."""
    shape = tuple(input_shape)
    sizes_ok = all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    if len(shape) != 3 or shape[-1] != dim or not sizes_ok:
        raise RegistryError(f"input_shape must be (B, T, {dim}) with positive int sizes; got {shape!r}")
    return shape[0] * shape[1]


# --- noop -----------------------------------------------------------------------------------


def noop_params(dim: int) -> int:
    """``noop`` has no parameters."""
    return 0


def noop_flops(dim: int, input_shape: tuple[int, ...]) -> int:
    """``noop`` does no arithmetic."""
    tokens_in(dim, input_shape)
    return 0


# --- norm -----------------------------------------------------------------------------------


def norm_params(dim: int) -> int:
    """LayerNorm weight and bias (``2D``) plus the scalar gate ``scale``."""
    return 2 * dim + 1


def norm_flops(dim: int, input_shape: tuple[int, ...]) -> int:
    """Normalisation and gating are elementwise: no matrix-product FLOPs."""
    tokens_in(dim, input_shape)
    return 0


# --- lora -----------------------------------------------------------------------------------


def lora_params(dim: int, *, rank: int) -> int:
    """``down`` (rankxD) and ``up`` (Dxrank), both without bias."""
    return 2 * dim * rank


def lora_flops(dim: int, input_shape: tuple[int, ...], *, rank: int) -> int:
    """Two products per token: D→rank and rank→D."""
    return 4 * tokens_in(dim, input_shape) * dim * rank


# --- attention / flex_attention ------------------------------------------------------------


def attention_params(dim: int, *, n_head: int) -> int:
    """``qkv`` (3DxD + 3D) and ``proj`` (DxD + D); the head count does not change it."""
    check_heads(dim, n_head=n_head)
    return 4 * dim * dim + 4 * dim


def attention_flops(dim: int, input_shape: tuple[int, ...], *, n_head: int) -> int:
    """``qkv`` and ``proj`` products (``8·N·D²``) plus dense ``QKᵀ`` and ``AV`` (``4·B·T²·D``)."""
    check_heads(dim, n_head=n_head)
    tokens = tokens_in(dim, input_shape)
    batch, seq = int(input_shape[0]), int(input_shape[1])
    return 8 * tokens * dim * dim + 4 * batch * seq * seq * dim


# --- mlp_small / mlp -----------------------------------------------------------------------


def mlp_params(dim: int, *, expansion: int, checkpoint: bool = False) -> int:
    """``fc1`` (eDxD + eD) and ``fc2`` (DxeD + D); checkpointing changes no parameter."""
    hidden = expansion * dim
    return 2 * hidden * dim + hidden + dim


def mlp_flops(dim: int, input_shape: tuple[int, ...], *, expansion: int, checkpoint: bool = False) -> int:
    """Two products per token, D→eD and eD→D (forward pass; recomputation is not counted)."""
    return 4 * tokens_in(dim, input_shape) * expansion * dim * dim
