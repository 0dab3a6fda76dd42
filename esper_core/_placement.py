"""Where new slots live: on the host's device, in the host's floating dtype.

A slot is created before any seed exists, and every seed (and blend gate) it builds later
takes the slot's device and dtype (its ``_anchor`` buffer, which ``.to()``, ``.half()`` and
``.double()`` move like any buffer). So slots created for a bf16 host must start in bf16,
exactly as they start on the host's GPU: then the seed is built in bf16, G0's probe runs in
bf16, and a later ``model.to(torch.float64)`` carries the slots (and their seeds) along.

:func:`host_placement` decides from the module's own tensors, as ``nn.Module.to`` would
have placed them: the device of its first parameter (or buffer), and the dtype of its
first *floating* parameter (or floating buffer); integer or quantized tensors say nothing
about the dtype. :func:`place_slots` applies it.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import torch
from torch import Tensor, nn

__all__ = ["Placement", "host_placement", "place_slots"]


@attrs.frozen
class Placement:
    """A device and a floating dtype; ``None`` means "no evidence: leave as created"."""

    device: torch.device | None = None
    dtype: torch.dtype | None = None


def _tensors(module: nn.Module) -> Iterable[Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def host_placement(*modules: nn.Module) -> Placement:
    """The device and floating dtype of the first of ``modules`` that has tensors of each kind.

    Give the most specific module first (an injection target, then the whole model): a
    target kept in float32 inside a bf16 model gets a float32 slot, a parameter-free target
    (an activation) gets the model's dtype.
    """
    device: torch.device | None = None
    dtype: torch.dtype | None = None
    for module in modules:
        for tensor in _tensors(module):
            if device is None:
                device = tensor.device
            if dtype is None and tensor.is_floating_point():
                dtype = tensor.dtype
            if device is not None and dtype is not None:
                return Placement(device, dtype)
    return Placement(device, dtype)


def place_slots(slots: nn.Module, placement: Placement) -> nn.Module:
    """Move ``slots`` (fresh, without seeds) to ``placement``; returns ``slots``."""
    if placement.device is not None or placement.dtype is not None:
        slots.to(device=placement.device, dtype=placement.dtype)
    return slots
