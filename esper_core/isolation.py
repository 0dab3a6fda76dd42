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
backward when its input is laid out channels_last (4-d ``channels_last`` or 5-d
``channels_last_3d``, also a slice of one, also ``(B, C, 1, 1)``) and does not require
grad - whatever its parameters, dtype (fp32, fp64, bf16) or group count. Reproduction
(exit code 139)::

    import torch
    from torch import nn
    gn = nn.GroupNorm(4, 16)
    x = torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last).detach()
    gn(x).sum().backward()

The crash does not happen when the input requires grad, and backward only runs GroupNorm's
kernel when one of its parameters does. The whole workaround is :func:`groupnorm_input`:
for such an input it returns a view that requires grad (:class:`_AttachGrad`, whose
backward sends nothing anywhere), so GroupNorm's backward takes the path that works. **No
copy** of the activation is made; the price is that backward computes the gradient with
respect to the input and drops it (a transient tensor of the input's size).
``bench/bench_groupnorm.py`` measures what autograd keeps. It reaches every GroupNorm through:

* :class:`GroupNorm`, a drop-in ``nn.GroupNorm`` that applies it itself. **Pack authors use
  this instead of** ``nn.GroupNorm`` (``docs/writing-a-blueprint-pack.md``); the CNN pack's
  ``SeedGroupNorm`` builds on it. A seed then survives backward on a frozen or detached
  channels_last host, in every stage and used on its own.
* :func:`protect_groupnorms`, which puts it in front of every other ``nn.GroupNorm`` of a
  module as a forward pre-hook (for seeds from packs that do not use :class:`GroupNorm`).
* :func:`seed_input` with ``groupnorm_workaround=True``, the slot's older path for a
  GroupNorm reading the isolated seed input directly (decided once per seed by
  :func:`needs_groupnorm_workaround`). Where the input requires grad the stop is
  :class:`_StopGradient` (a view that keeps ``requires_grad``) instead of ``detach()``;
  only an input that does not require grad at all is copied to the contiguous format.

Remove all of it (and the ``groupnorm_workaround`` flag) once torch is fixed:
``tests/lifecycle`` runs the reproduction in a child process and fails when it stops
crashing; the conformance kit runs every blueprint's backward on such an input in a child
process.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from esper_core.stages import SeedStage

__all__ = [
    "GROUPNORM_REPRODUCTION",
    "GroupNorm",
    "groupnorm_input",
    "isolated_in",
    "needs_groupnorm_workaround",
    "protect_groupnorms",
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
    # A GroupNorm (this module's class) protects itself; only plain ones need the input stop.
    norms = [m for m in seed.modules() if isinstance(m, nn.GroupNorm) and not isinstance(m, GroupNorm)]
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


def _channels_last_like(x: Tensor) -> bool:
    """Whether GroupNorm's CPU kernel may treat ``x`` as channels_last: a 4-d or 5-d tensor
    whose channel stride is no larger than any spatial stride. (A superset of torch's own
    test: ``(B, C, 1, 1)`` tensors qualify either way, and the workaround is harmless there.)"""
    if x.dim() not in (4, 5):
        return False
    return x.stride(1) <= min(x.stride(d) for d in range(2, x.dim()))


class _AttachGrad(torch.autograd.Function):
    """Identity on ``x`` whose output requires grad because ``anchor`` does; backward
    returns nothing to either (``anchor`` receives no gradient from it)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, anchor: Tensor) -> Tensor:
        # x[...] keeps every stride; view_as would renormalise those of size-1 dims and
        # so change which GroupNorm kernel runs.
        return x[...]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None]:
        return None, None


def groupnorm_input(x: Tensor, *params: Tensor | None) -> Tensor:
    """``x`` made safe as the input of a GroupNorm with parameters ``params`` (module doc).

    Returns ``x`` itself unless grad mode is on, ``x`` is laid out channels_last (4-d or
    5-d), does not require grad, and some parameter requires grad - the crashing case. Then
    it returns a view of ``x`` (same values, strides, dtype and device; no copy) that
    requires grad and passes no gradient on. Shapes: any; ``params`` may include ``None``.
    """
    if not torch.is_grad_enabled() or x.requires_grad or not _channels_last_like(x):
        return x
    anchor = next((p for p in params if p is not None and p.requires_grad), None)
    return x if anchor is None else _AttachGrad.apply(x, anchor)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose backward survives channels_last inputs that do not require
    grad (torch 2.13 segfaults there; module doc). Same constructor, parameters,
    ``state_dict`` keys and outputs as ``nn.GroupNorm``; input ``(B, C, *)``, output the
    same shape, dtype and memory format. Use it in seeds instead of ``nn.GroupNorm``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(
            groupnorm_input(x, self.weight, self.bias), self.num_groups, self.weight, self.bias, self.eps
        )


def _groupnorm_pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    if not args or not isinstance(args[0], Tensor):
        return None
    return (groupnorm_input(args[0], module.weight, module.bias), *args[1:])


def protect_groupnorms(module: nn.Module) -> int:
    """Apply :func:`groupnorm_input` to the input of every ``nn.GroupNorm`` in ``module``
    that is not already a :class:`GroupNorm`, through a forward pre-hook (a module-level
    function, so the module still pickles and deep-copies). Idempotent; returns how many
    GroupNorms received the hook now. Meant for seeds built from any pack."""
    added = 0
    for sub in module.modules():
        if not isinstance(sub, nn.GroupNorm) or isinstance(sub, GroupNorm):
            continue
        if _groupnorm_pre_hook in sub._forward_pre_hooks.values():
            continue
        sub.register_forward_pre_hook(_groupnorm_pre_hook)
        added += 1
    return added


def _workaround_input(h: Tensor) -> Tensor:
    """Isolated seed input for a GroupNorm seed on a channels_last tensor (see module doc)."""
    if h.requires_grad:
        return _StopGradient.apply(h)
    # clone, not .contiguous(): a (B, C, 1, 1) channels_last tensor already counts as
    # contiguous and .contiguous() would return it with its channels_last strides.
    return h.clone(memory_format=torch.contiguous_format)


def seed_input(h: Tensor, *, isolate: bool, groupnorm_workaround: bool = False) -> Tensor:
    """The tensor the seed (and gate) read: ``h`` itself, or ``h`` behind a gradient stop."""
    if not isolate:
        return h
    if groupnorm_workaround and torch.is_grad_enabled() and _channels_last_like(h):
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
