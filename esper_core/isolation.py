"""Gradient isolation between host and seed, and the straight-through incubator.

**Structural isolation.** While a seed is young, the host must not be trained through it:
the seed sees the host features through a gradient stop (:func:`seed_input`), so no
gradient flows from the seed back into the host. Which stages isolate
(:func:`~esper_core.stages.isolated_in`):

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

from esper_core.errors import LifecycleError

__all__ = [
    "seed_input",
    "straight_through",
]


def seed_input(h: Tensor, *, isolate: bool) -> Tensor:
    """The tensor the seed (and blend gate) read: ``h`` itself, or ``h`` behind a gradient stop."""
    return h.detach() if isolate else h


def host_version(h: Tensor) -> int | None:
    """``h``'s version counter, or ``None`` where it cannot be read (under ``torch.compile``,
    and for inference tensors, which keep none)."""
    if torch.compiler.is_compiling() or h.is_inference():
        return None
    return h._version


def check_host_untouched(h: Tensor, version: int | None, slot_id: str, blueprint: str | None) -> None:
    """Raise :class:`LifecycleError` when the seed wrote into ``h`` since ``version`` was read.

    The seed's input shares storage (and the version counter) with the host's tensor ``h``,
    also behind the gradient stop, so any in-place write by the seed (``relu_``,
    ``nn.ReLU(inplace=True)``, ``nn.Dropout(inplace=True)``) changes the host's features.
    G0 refuses seeds that do this on its probe input; this catches the rest (a write on some
    inputs only) before the changed features go any further. One integer comparison.
    """
    if version is not None and h._version != version:
        raise LifecycleError(
            f"the seed {blueprint!r} in slot {slot_id!r} wrote into its input in place, which is the "
            "host's own tensor: the host's features were changed. A seed must not modify its input; "
            "use out-of-place operations (torch.relu(x), not x.relu_() or nn.ReLU(inplace=True)). "
            "Prune this seed (slot.prune(...)) to go on training."
        )


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
