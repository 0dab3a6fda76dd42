"""Where new slots live: on the host's device, in the host's floating dtype and memory format.

A slot is created before any seed exists, and every seed (and blend gate) it builds later
takes the slot's device and dtype (its ``_anchor`` buffer, which ``.to()``, ``.half()`` and
``.double()`` move like any buffer). So slots created for a bf16 host must start in bf16,
exactly as they start on the host's GPU: then the seed is built in bf16, G0's probe runs in
bf16, and a later ``model.to(torch.float64)`` carries the slots (and their seeds) along.

:func:`host_placement` decides from the module's own tensors, as ``nn.Module.to`` would
have placed them: the device of its first parameter (or buffer), and the dtype of its
first *floating* parameter (or floating buffer); integer or quantized tensors say nothing
about the dtype. :func:`place_slots` applies it.

**Memory format.** A conv's weight gradient is laid out like its input, so a contiguous seed
weight inside a channels_last host gets channels_last gradients. For a weight with a size-1
dimension (depthwise ``(C, 1, k, k)``, 1x1 ``(C, C, 1, 1)``) autograd keeps such a gradient
as it is (same memory, other nominal strides), and ``DistributedDataParallel``'s reducer,
which compares strides literally, warns "Grad strides do not match bucket view strides" and
copies it on every step (pytorch#47163). So slots, and the seeds they build, are laid out
like their host (:func:`memory_format_of`).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import torch
from torch import Tensor, nn

__all__ = [
    "Placement",
    "channels_last",
    "channels_last_strides",
    "host_placement",
    "memory_format_of",
    "place_slots",
]


@attrs.frozen
class Placement:
    """A device, a floating dtype and a memory format; ``None`` means "no evidence: leave as created"."""

    device: torch.device | None = None
    dtype: torch.dtype | None = None
    memory_format: torch.memory_format | None = None


def channels_last_strides(shape: torch.Size) -> tuple[int, ...]:
    """The strides torch gives a 4-d ``(N, C, H, W)`` tensor laid out channels_last."""
    _, c, h, w = (max(size, 1) for size in shape)
    return (h * w * c, 1, w * c, c)


def channels_last(t: Tensor) -> bool:
    """Whether ``t`` is 4-d with exactly channels_last strides (and those differ from contiguous ones).

    Strides are compared as written, not by ``is_contiguous``, which ignores size-1
    dimensions: a depthwise weight ``(C, 1, k, k)`` is "contiguous" in both formats, but its
    nominal strides, which ``DistributedDataParallel`` compares, differ.
    """
    if t.dim() != 4:
        return False
    strides = channels_last_strides(t.shape)
    return t.stride() == strides and t.contiguous().stride() != strides


def memory_format_of(*modules: nn.Module) -> torch.memory_format:
    """``torch.channels_last`` when a 4-d parameter of any of ``modules`` is laid out
    channels_last (as ``module.to(memory_format=torch.channels_last)`` leaves conv weights),
    else ``torch.contiguous_format``.
    """
    for module in modules:
        if any(channels_last(p) for p in module.parameters()):
            return torch.channels_last
    return torch.contiguous_format


def _tensors(module: nn.Module) -> Iterable[Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def host_placement(*modules: nn.Module) -> Placement:
    """The device and floating dtype of the first of ``modules`` that has tensors of each kind.

    Give the most specific module first (an injection target, then the whole model): a
    target kept in float32 inside a bf16 model gets a float32 slot, a parameter-free target
    (an activation) gets the model's dtype. The memory format is channels_last when any of
    ``modules`` holds a channels_last 4-d parameter.
    """
    layout = memory_format_of(*modules)
    device: torch.device | None = None
    dtype: torch.dtype | None = None
    for module in modules:
        for tensor in _tensors(module):
            if device is None:
                device = tensor.device
            if dtype is None and tensor.is_floating_point():
                dtype = tensor.dtype
            if device is not None and dtype is not None:
                return Placement(device, dtype, layout)
    return Placement(device, dtype, layout)


def place_slots(slots: nn.Module, placement: Placement) -> nn.Module:
    """Move ``slots`` (fresh, without seeds) to ``placement``; returns ``slots``."""
    if placement.device is not None or placement.dtype is not None:
        slots.to(device=placement.device, dtype=placement.dtype)
    if placement.memory_format is not None:
        slots.to(memory_format=placement.memory_format)
    return slots
