"""A small, bounded cache of causal FlexAttention block masks.

Building a :class:`~torch.nn.attention.flex_attention.BlockMask` costs far more than using
one, and a model sees only a handful of sequence lengths, so the masks are kept, keyed by
sequence length, in least-recently-used order up to a fixed capacity: a long run over
varying lengths holds at most ``capacity`` masks (B3-TFM-01).

The cache also remembers the device and compute dtype it was filled under and empties
itself when either changes. The mask depends on neither dtype nor anything but the device,
but a change of either marks a new regime (the module moved, was cast, or entered or left
autocast, which changes the compute dtype without touching the parameters), and dropping
the old masks then frees their memory on the old device instead of keeping them until
they age out.

The mask function is one module-level function (B3-TFM-02): every mask the cache builds
refers to the same function object, nothing is captured, and nothing is re-created per miss.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from esper_core.errors import OptionError

__all__ = ["DEFAULT_MASK_CACHE_SIZE", "BlockMaskCache", "build_causal_block_mask", "causal_mask_mod"]

DEFAULT_MASK_CACHE_SIZE = 8


def causal_mask_mod(batch: Tensor, head: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    """FlexAttention mask function: query ``q_idx`` may attend to key ``kv_idx`` iff ``kv_idx ≤ q_idx``."""
    return q_idx >= kv_idx


def build_causal_block_mask(seq_len: int, device: torch.device) -> BlockMask:
    """The causal block mask for a ``seq_len x seq_len`` attention, shared by all batches and heads."""
    return create_block_mask(causal_mask_mod, None, None, seq_len, seq_len, device=device)


class BlockMaskCache:
    """Least-recently-used causal block masks, keyed by sequence length.

    Not an ``nn.Module`` and not part of any ``state_dict``: masks are derived data and are
    rebuilt on demand. :meth:`get` runs outside ``torch.compile`` graphs because mutating an
    ``OrderedDict`` cannot be traced; compiled callers build their mask in the graph instead.
    """

    def __init__(self, capacity: int = DEFAULT_MASK_CACHE_SIZE) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise OptionError(f"block-mask cache capacity must be an int >= 1; got {capacity!r}")
        self._capacity = capacity
        self._masks: OrderedDict[int, BlockMask] = OrderedDict()
        self._context: tuple[torch.device, torch.dtype] | None = None

    @property
    def capacity(self) -> int:
        """The most masks the cache ever holds."""
        return self._capacity

    @property
    def context(self) -> tuple[torch.device, torch.dtype] | None:
        """The (device, compute dtype) the cached masks were built under; ``None`` when empty."""
        return self._context

    def __len__(self) -> int:
        return len(self._masks)

    def lengths(self) -> tuple[int, ...]:
        """Cached sequence lengths, least recently used first."""
        return tuple(self._masks)

    def clear(self) -> None:
        """Drop every mask and forget the context."""
        self._masks.clear()
        self._context = None

    @torch.compiler.disable
    def get(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> BlockMask:
        """The causal mask for ``seq_len``, built on a miss; evicts the stalest mask when full."""
        context = (torch.device(device), dtype)
        if context != self._context:
            self.clear()
            self._context = context
        mask = self._masks.get(seq_len)
        if mask is not None:
            self._masks.move_to_end(seq_len)
            return mask
        mask = build_causal_block_mask(seq_len, context[0])
        if len(self._masks) >= self._capacity:
            self._masks.popitem(last=False)
        self._masks[seq_len] = mask
        return mask
