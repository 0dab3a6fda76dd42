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

**GroupNorm + channels_last workaround (torch 2.13, CPU).** ``nn.GroupNorm`` segfaults in
backward when its input is channels_last and does not require grad. That is the case for
``h.detach()`` of a channels_last host activation (an isolated seed input), and for any
activation of a frozen host (``requires_grad_(False)``) in every stage. Reproduction
(exit code 139)::

    import torch
    from torch import nn
    gn = nn.GroupNorm(4, 16)
    x = torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last).detach()
    gn(x).sum().backward()

The crash does not happen when the input requires grad. :func:`guard_groupnorms` therefore
puts a forward pre-hook on every ``nn.GroupNorm`` of a module: when grad mode is on and the
norm's input is a channels_last tensor that does not require grad, the norm reads a fresh
leaf of the same storage that does (``detach().requires_grad_()``): **no copy** of the
activation is made; autograd computes the input gradient and drops it (a transient tensor
of the input's size during backward). The slot guards every seed it builds, whatever pack
it comes from; packs guard their own blocks for use outside a slot. The whole workaround is
:func:`_groupnorm_pre_hook`: delete it (and the calls of :func:`guard_groupnorms`) once torch
is fixed. ``tests/lifecycle`` runs the reproduction in a child process and
``bench/bench_lifecycle.py`` measures the memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from esper_core.stages import isolated_in

__all__ = [
    "GROUPNORM_REPRODUCTION",
    "guard_groupnorms",
    "isolated_in",
    "seed_input",
    "straight_through",
]

#: The crash reproduction from the module docstring, runnable with ``python -c``.
GROUPNORM_REPRODUCTION = (
    "import torch\n"
    "from torch import nn\n"
    "gn = nn.GroupNorm(4, 16)\n"
    "x = torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last).detach()\n"
    "gn(x).sum().backward()\n"
)


def _groupnorm_pre_hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The workaround (see module doc): a grad-requiring view for a crash-prone GroupNorm input."""
    x = args[0] if args else None
    if (
        isinstance(x, Tensor)
        and not x.requires_grad
        and x.dim() == 4
        and torch.is_grad_enabled()
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return (x.detach().requires_grad_(True), *args[1:])
    return None


def guard_groupnorms(module: nn.Module) -> nn.Module:
    """Protect every ``nn.GroupNorm`` in ``module`` against the channels_last backward crash.

    Idempotent (a norm is guarded once) and survives ``copy.deepcopy`` and pickling (the
    hook is a module-level function). Returns ``module``. Shapes, dtypes and values are
    unchanged; only inputs that would crash are affected.
    """
    for m in module.modules():
        if isinstance(m, nn.GroupNorm) and _groupnorm_pre_hook not in m._forward_pre_hooks.values():
            m.register_forward_pre_hook(_groupnorm_pre_hook)
    return module


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
