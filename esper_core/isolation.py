"""Gradient isolation between host and seed, and the straight-through incubator.

**Structural isolation.** While a seed is young, the host must not be trained through it:
the seed sees the host features through a gradient stop (:func:`seed_input`), so no
gradient flows from the seed back into the host. Which stages isolate
(:func:`isolated_in`):

* TRAINING: always (the incubator, below).
* BLENDING: by default only for topologies without a sequence axis (convolutional hosts);
  sequence models let host and seed co-adapt. A slot may override this.
* HOLDING and FOSSILIZED: never. **Decision:** under isolation an ADD blend at amplitude 1
  has ``d out / d h == 0`` and the seed input is detached, so *no* gradient would reach any
  host layer upstream of the slot: every earlier block would stop learning the moment a
  seed is fully blended in. Once the seed holds full amplitude it is part of the network
  (blueprints are residual, ``x + delta(x)``), so the host is trained through it.

**Incubator (straight-through).** In TRAINING the slot returns the host features
unchanged while the seed learns as if its output had been added: :func:`straight_through`
returns a copy of ``host`` in forward and, in backward, passes the output gradient
unchanged to the host and, cast to the seed's dtype, to the seed. Host output and host
gradients are bit-identical to a slot without a seed, even if the seed's output is not
finite.

**GroupNorm + channels_last (torch 2.13, CPU).** An isolated seed input (``h.detach()``)
of a channels_last host activation is exactly what makes ``nn.GroupNorm``'s backward crash;
the workaround lives in :mod:`esper_core.groupnorm`, and the slot guards every GroupNorm of
every seed it builds (``guard_groupnorms``), whatever pack the seed comes from.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = [
    "seed_input",
    "straight_through",
]


def seed_input(h: Tensor, *, isolate: bool) -> Tensor:
    """The tensor the seed (and blend gate) read: ``h`` itself, or ``h`` behind a gradient stop."""
    return h.detach() if isolate else h


class _StraightThrough(torch.autograd.Function):
    """Forward: a copy of the host features. Backward: the same gradient to host and seed."""

    @staticmethod
    def forward(ctx: Any, host: Tensor, seed: Tensor) -> Tensor:
        ctx.seed_dtype = seed.dtype
        # A copy rather than a view, so the host may modify the result in place (ReLU(inplace)).
        return host.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        host_grad = grad if ctx.needs_input_grad[0] else None
        seed_grad = None
        if ctx.needs_input_grad[1]:
            seed_grad = grad if grad.dtype == ctx.seed_dtype else grad.to(ctx.seed_dtype)
        return host_grad, seed_grad


def straight_through(host: Tensor, seed: Tensor) -> Tensor:
    """``host`` in value; in backward the seed receives ``d loss / d out`` as if added."""
    return _StraightThrough.apply(host, seed)
