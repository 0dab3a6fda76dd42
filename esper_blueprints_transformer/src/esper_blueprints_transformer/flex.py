"""The ``flex_attention`` blueprint: causal self-attention through FlexAttention.

It is the ``attention`` blueprint with a different attention kernel: same parameters, same
``state_dict`` keys, same zero-initialised ``proj``, so checkpoints move freely between the
two and between machines whatever kernel each one can run.

Which kernel runs is decided per call by :func:`uses_flex_attention`, from the query
tensor alone:

* on CUDA, FlexAttention always runs (forward and backward);
* on CPU, FlexAttention runs only when autograd will not need its backward, i.e. when the
  query does not require grad (``no_grad``/``inference_mode``, or frozen weights and a
  plain input). torch 2.13 has no FlexAttention backward on CPU and raises already in the
  forward pass, so CPU training takes causal SDPA instead. Eager CPU FlexAttention also
  cannot run under a Python dispatch mode such as ``FlopCounterMode`` (it raises, and
  leaves Dynamo refusing later eager calls), so an active mode selects SDPA too;
* on any other device, causal SDPA.

Both kernels compute the same function (causal softmax attention, scale ``1/sqrt(head_dim)``),
so switching between them changes results only by floating-point rounding.

Eagerly, the block mask comes from a bounded per-module :class:`BlockMaskCache`, which is
emptied whenever the module is moved or cast (``_apply``) and whenever the compute device or
dtype changes, autocast included. Under ``torch.compile`` the mask is built inside the graph
instead, so no cache mutation has to be traced and ``fullgraph=True`` holds on both paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import flex_attention
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from esper_blueprints_transformer.attention import CausalSelfAttentionSeed
from esper_blueprints_transformer.mask_cache import (
    DEFAULT_MASK_CACHE_SIZE,
    BlockMaskCache,
    build_causal_block_mask,
)

__all__ = ["FlexAttentionSeed", "build_flex_attention", "uses_flex_attention"]


def uses_flex_attention(q: Tensor) -> bool:
    """Whether :class:`FlexAttentionSeed` runs FlexAttention (True) or causal SDPA (False) for ``q``."""
    if q.device.type == "cuda":
        return True
    if q.device.type != "cpu" or q.requires_grad:
        return False
    # Compiled code traces FlexAttention itself; only eager calls are blocked by a dispatch mode.
    return torch.compiler.is_compiling() or not is_in_torch_dispatch_mode()


class FlexAttentionSeed(CausalSelfAttentionSeed):
    """Causal self-attention seed whose kernel is FlexAttention wherever it can run."""

    def __init__(self, dim: int, n_head: int, *, mask_cache_size: int = DEFAULT_MASK_CACHE_SIZE) -> None:
        block_masks = BlockMaskCache(mask_cache_size)  # validates the size before any layer is built
        super().__init__(dim, n_head)
        self.block_masks = block_masks

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if not uses_flex_attention(q):
            return super().attend(q, k, v)
        seq_len = q.shape[-2]
        if torch.compiler.is_compiling():
            mask = build_causal_block_mask(seq_len, q.device)
        else:
            mask = self.block_masks.get(seq_len, q.device, q.dtype)
        # Without return_lse/return_aux FlexAttention returns one tensor (B3-TFM-03); the
        # cast only narrows the declared union for type checkers and costs nothing at run time.
        return cast(Tensor, flex_attention(q, k, v, block_mask=mask))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> FlexAttentionSeed:
        # Every .to()/.cuda()/.float()/.half(), including one made on a parent module,
        # passes through here: drop masks built for the old device or dtype.
        self.block_masks.clear()
        return super()._apply(fn, recurse)


def build_flex_attention(dim: int, *, n_head: int) -> FlexAttentionSeed:
    """Factory of the ``flex_attention`` blueprint; the constructor rejects a bad head count first."""
    return FlexAttentionSeed(dim, n_head)
