"""GroupNorm that survives backward on channels_last inputs that do not require grad.

**The torch bug (2.13, CPU).** ``nn.GroupNorm`` kills the process (SIGSEGV) in backward
when its input is laid out channels_last - 4-d ``channels_last`` or 5-d
``channels_last_3d``, also a slice of one, a one-channel tensor or a ``(B, C, 1, 1)`` map -
and does not require grad, whatever its dtype (fp32, fp64, bf16) or group count.
Reproduction (exit code 139)::

    import torch
    from torch import nn
    gn = nn.GroupNorm(4, 16)
    x = torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last).detach()
    gn(x).sum().backward()

A seed's input is exactly that whenever it is isolated (``h.detach()``), whenever the host
in front of it is frozen (every stage), and whenever a blueprint module is used on its own.

**The workaround, in one place: :func:`groupnorm_input`.** The crash does not happen when
the input requires grad, and backward runs GroupNorm's kernel only when one of its
parameters requires grad. So for that case the input becomes a view that requires grad
(:class:`_AttachGrad`, tied to a parameter that does; its backward sends nothing anywhere)
and GroupNorm takes its working path. **No copy** of the activation is made, and a norm
whose parameters are all frozen is left alone (its output does not start to require grad).
The price is one transient tensor of the input's size in backward: the input gradient
GroupNorm computes and the view drops. ``bench/bench_groupnorm.py`` measures what autograd
keeps. Every GroupNorm gets it through one of:

* :class:`GroupNorm`, a drop-in ``nn.GroupNorm`` that applies it itself. Pack authors use it
  instead of ``nn.GroupNorm`` (``docs/writing-a-blueprint-pack.md``); the CNN pack's
  ``SeedGroupNorm`` is one.
* :func:`guard_groupnorms`, which puts it in front of every ``nn.GroupNorm`` of a module as
  a forward pre-hook (for seeds from packs that use ``nn.GroupNorm``; a slot can guard every
  seed it builds).

Delete this module (and its uses) once torch is fixed: ``tests/lifecycle`` runs the
reproduction in a child process and fails when it stops crashing, and the conformance kit
runs every blueprint's backward on such an input in a child process.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["GROUPNORM_REPRODUCTION", "GroupNorm", "groupnorm_input", "guard_groupnorms"]

#: The crash reproduction from the module docstring, runnable with ``python -c``.
GROUPNORM_REPRODUCTION = (
    "import torch\n"
    "from torch import nn\n"
    "gn = nn.GroupNorm(4, 16)\n"
    "x = torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last).detach()\n"
    "gn(x).sum().backward()\n"
)


def _channels_last_like(x: Tensor) -> bool:
    """Whether GroupNorm's CPU kernel may treat ``x`` as channels_last: a 4-d or 5-d tensor
    whose channel stride is no larger than any spatial stride. A superset of torch's own
    test (``(B, C, 1, 1)`` tensors qualify either way; the workaround is harmless there)."""
    if x.dim() not in (4, 5):
        return False
    return x.stride(1) <= min(x.stride(d) for d in range(2, x.dim()))


class _AttachGrad(torch.autograd.Function):
    """Identity on ``x`` whose output requires grad because ``anchor`` does; backward
    returns nothing to either (``anchor`` gets no gradient through it)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, anchor: Tensor) -> Tensor:
        # x[...] keeps every stride; view_as would renormalise those of size-1 dims and so
        # change which GroupNorm kernel runs.
        return x[...]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None]:
        return None, None


def groupnorm_input(x: Tensor, *params: Tensor | None) -> Tensor:
    """``x`` made safe as the input of a GroupNorm with parameters ``params`` (module doc).

    Returns ``x`` itself unless grad mode is on, ``x`` is laid out channels_last (4-d or
    5-d), does not require grad, and one of ``params`` requires grad - the crashing case.
    Then returns a view of ``x`` (same values, strides, dtype and device; no copy) that
    requires grad and passes no gradient on. ``params`` may include ``None``.
    """
    if not torch.is_grad_enabled() or x.requires_grad or not _channels_last_like(x):
        return x
    anchor = next((p for p in params if p is not None and p.requires_grad), None)
    return x if anchor is None else _AttachGrad.apply(x, anchor)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose backward survives channels_last inputs that do not require
    grad (module doc). Same constructor, parameters, ``state_dict`` keys and outputs as
    ``nn.GroupNorm``; input ``(B, C, *)``, output of the same shape, dtype and memory
    format. Use it in seeds instead of ``nn.GroupNorm``."""

    def forward(self, x: Tensor) -> Tensor:
        x = groupnorm_input(x, self.weight, self.bias)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def _groupnorm_pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """:func:`groupnorm_input` as a forward pre-hook of an ``nn.GroupNorm``."""
    if not args or not isinstance(args[0], Tensor):
        return None
    x = groupnorm_input(args[0], module.weight, module.bias)
    return None if x is args[0] else (x, *args[1:])


def guard_groupnorms(module: nn.Module) -> nn.Module:
    """Put :func:`groupnorm_input` in front of every ``nn.GroupNorm`` of ``module`` (a forward
    pre-hook that is a module-level function, so the module still pickles and deep-copies).
    Idempotent; returns ``module``. Values, shapes and dtypes are unchanged."""
    for sub in module.modules():
        # torch keeps a module's pre-hooks in _forward_pre_hooks; reading it is the only way
        # to see whether this hook is already there.
        if isinstance(sub, nn.GroupNorm) and _groupnorm_pre_hook not in sub._forward_pre_hooks.values():
            sub.register_forward_pre_hook(_groupnorm_pre_hook)
    return module
