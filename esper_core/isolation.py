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
backward when its input is channels_last and does not require grad, which is exactly
``h.detach()`` of a channels_last host activation. Reproduction (exit code 139)::

    import torch
    from torch import nn
    gn = nn.GroupNorm(4, 16)
    x = torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last).detach()
    gn(x).sum().backward()

The crash does not happen when the input requires grad. So for seeds in which a GroupNorm
reads the (detached) seed input directly (decided once per seed by
:func:`needs_groupnorm_workaround`), a channels_last input that requires grad is isolated with a gradient stop that
keeps ``requires_grad`` (:class:`_StopGradient`: forward is a view, backward returns
nothing to the host) instead of ``detach()``: **no copy** of the activation is made. The
price is that autograd computes the gradient with respect to the seed input and then
drops it (a transient tensor of the input's size during backward). Only when the input
does not require grad at all (a slot in front of every trainable host layer) is a
contiguous copy made. The whole workaround is :func:`_workaround_input`; delete it and
the ``groupnorm_workaround`` flag once torch is fixed. ``tests/lifecycle`` runs the
reproduction in a child process and ``bench/bench_lifecycle.py`` measures the memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from esper_core.stages import SeedStage

__all__ = [
    "GROUPNORM_REPRODUCTION",
    "isolated_in",
    "needs_groupnorm_workaround",
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


def isolated_in(stage: SeedStage, *, isolate_blending: bool) -> bool:
    """Whether the seed input is gradient-isolated from the host in ``stage``."""
    if stage is SeedStage.TRAINING:
        return True
    if stage is SeedStage.BLENDING:
        return isolate_blending
    return False


def needs_groupnorm_workaround(seed: nn.Module, probe: Tensor) -> bool:
    """True when some GroupNorm of ``seed`` would receive an input that does not require grad
    when the seed reads a detached tensor (the crashing case, see module doc).

    Decided once per seed module, by running ``seed`` on a detached ``probe`` with hooks on
    its GroupNorms: a GroupNorm behind a trainable conv (``x + gn(conv(x))``) sees a
    grad-requiring input and needs nothing, so such seeds keep the cheaper plain
    ``detach()``. The probe runs in eval mode (restoring every submodule's own mode after),
    so it leaves no trace such as updated BatchNorm running statistics; eval mode does not
    change which tensors require grad.
    """
    norms = [m for m in seed.modules() if isinstance(m, nn.GroupNorm)]
    if not norms:
        return False
    seen: list[bool] = []
    modes = [(m, m.training) for m in seed.modules()]
    handles = [
        m.register_forward_pre_hook(lambda _m, args: seen.append(bool(args[0].requires_grad))) for m in norms
    ]
    try:
        seed.eval()
        with torch.enable_grad():
            seed(probe.detach())
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode
    return not all(seen)


class _StopGradient(torch.autograd.Function):
    """Identity in forward; sends no gradient back. Keeps ``requires_grad`` on the output."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> None:
        return None


def _workaround_input(h: Tensor) -> Tensor:
    """Isolated seed input for a GroupNorm seed on a channels_last tensor (see module doc)."""
    if h.requires_grad:
        return _StopGradient.apply(h)
    return h.contiguous()


def seed_input(h: Tensor, *, isolate: bool, groupnorm_workaround: bool = False) -> Tensor:
    """The tensor the seed (and gate) read: ``h`` itself, or ``h`` behind a gradient stop."""
    if not isolate:
        return h
    if (
        groupnorm_workaround
        and torch.is_grad_enabled()
        and h.dim() == 4
        and not h.is_contiguous()
        and h.is_contiguous(memory_format=torch.channels_last)
    ):
        return _workaround_input(h)
    return h.detach()


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
