"""A GPT-style (pre-norm, causal) language-model host with a slot after every segment of layers."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from esper_core.hosts.base import HostError, InjectionPoint, SegmentedHost

__all__ = ["CausalSelfAttention", "TransformerBlock", "TransformerHost", "transformer_host_param_count"]


def transformer_host_param_count(
    *, vocab_size: int = 256, n_embd: int = 128, n_layer: int = 4, block_size: int = 128
) -> int:
    """Closed-form count of :class:`TransformerHost` parameters; the tied head adds nothing."""
    d = n_embd
    return vocab_size * d + block_size * d + n_layer * (12 * d * d + 13 * d) + 2 * d


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, d)))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TransformerHost(SegmentedHost):
    """Token ids ``(B, T)`` -> logits ``(B, T, vocab_size)``; slots ``r0c{i}`` see ``(B, T, n_embd)``.

    The ``n_layer`` blocks are split into ``num_segments`` equal segments and slot ``r0c{i}``
    sits after segment ``i`` (the last one before the final LayerNorm). The output head
    shares its weight with the token embedding.
    """

    topology_name = "transformer"

    def __init__(
        self,
        vocab_size: int = 256,
        *,
        n_embd: int = 128,
        n_head: int = 4,
        n_layer: int = 4,
        block_size: int = 128,
        dropout: float = 0.0,
        num_segments: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("n_embd", n_embd),
            ("n_head", n_head),
            ("n_layer", n_layer),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HostError(f"{name} must be a positive int, got {value!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise HostError(f"block_size must be a positive int, got {block_size!r}")
        if n_embd % n_head:
            raise HostError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        num_segments = n_layer if num_segments is None else num_segments
        if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 1:
            raise HostError(f"num_segments must be a positive int, got {num_segments!r}")
        if n_layer % num_segments:
            raise HostError(f"n_layer ({n_layer}) must be divisible by num_segments ({num_segments})")
        if not 0.0 <= dropout < 1.0:
            raise HostError(f"dropout must be in [0, 1), got {dropout!r}")
        self.config = {
            "vocab_size": vocab_size,
            "n_embd": n_embd,
            "n_layer": n_layer,
            "block_size": block_size,
        }
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("pos_indices", torch.arange(block_size), persistent=False)
        self.layers = nn.ModuleList(TransformerBlock(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(_gpt_init)
        self.head.weight = self.tok_emb.weight
        per = n_layer // num_segments
        self._ops.extend(self.layers)
        self._set_points(
            [
                (InjectionPoint(f"r0c{i}", "transformer", n_embd, i, "post_block"), (i + 1) * per - 1)
                for i in range(num_segments)
            ]
        )

    def _enter(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.is_floating_point() or x.is_complex():
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise HostError(f"TransformerHost expects integer token ids (B, T); got {got}")
        t = x.shape[-1]
        if t > self.block_size:
            raise HostError(f"sequence length {t} exceeds block_size {self.block_size}")
        return self.drop(self.tok_emb(x) + self.pos_emb(self.pos_indices[:t]))

    def _exit(self, h: Tensor) -> Tensor:
        return self.head(self.ln_f(h))


def _gpt_init(module: nn.Module) -> None:
    # Small normal weights keep the residual stream well scaled at init (GPT-2 recipe).
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
