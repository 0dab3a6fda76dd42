"""The ``attention`` blueprint: an extra causal self-attention layer.

The projections match a GPT-style host block (one fused ``qkv`` projection whose output is
the query block, then the key block, then the value block, heads contiguous inside each),
so weights can be compared or transplanted between a seed and a host layer. ``proj`` starts
at zero, weight and bias, which makes the seed exactly the identity at birth; ``proj``
learns from the first step and ``qkv`` once ``proj`` is non-zero.

Causality comes from the attention itself (``is_causal=True``): position ``t`` only reads
keys and values at positions ``≤ t``.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from esper_blueprints_transformer.counts import check_heads

__all__ = ["CausalSelfAttentionSeed", "build_attention", "merge_heads", "split_heads"]


def split_heads(qkv: Tensor, n_head: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split a fused ``(B, T, 3D)`` projection into q, k, v of shape ``(B, H, T, D/H)``."""
    q, k, v = qkv.unflatten(-1, (3, n_head, -1)).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def merge_heads(heads: Tensor) -> Tensor:
    """Inverse of the head split for one tensor: ``(B, H, T, hd)`` to ``(B, T, H·hd)``."""
    return heads.transpose(1, 2).flatten(-2)


class CausalSelfAttentionSeed(nn.Module):
    """``y = x + proj(causal_attention(qkv(x)))`` with a zero-initialised ``proj``.

    Subclasses change only :meth:`attend`, the step from per-head q, k, v to per-head
    outputs, so every variant shares parameters, ``state_dict`` keys and initialisation.
    """

    def __init__(self, dim: int, n_head: int) -> None:
        check_heads(dim, n_head=n_head)
        super().__init__()
        self.n_head = n_head
        self.head_dim = dim // n_head
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Causal scaled dot-product attention with the default ``1/sqrt(head_dim)`` scale."""
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = split_heads(self.qkv(x), self.n_head)
        return x + self.proj(merge_heads(self.attend(q, k, v)))


def build_attention(dim: int, *, n_head: int) -> CausalSelfAttentionSeed:
    """Factory of the ``attention`` blueprint; the constructor rejects a bad head count first."""
    return CausalSelfAttentionSeed(dim, n_head)
