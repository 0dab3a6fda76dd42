"""Finding what :func:`~esper_core.inject.inject_slots` attached to a model, through its wrappers.

The :class:`~esper_core.inject.Injection` sits in the ``__dict__`` of the module the slots
were injected into, under :data:`STATE_KEY`; a ``torch.compile``/DDP/``DataParallel``
wrapper around that module is seen through (:mod:`esper_core._wrappers`). :func:`attached`
also checks that every target is still the module its slot is attached to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from esper_core._checks import shown
from esper_core._wrappers import unwrap
from esper_core.errors import HostError

if TYPE_CHECKING:
    from esper_core.inject import Injection

__all__ = ["STATE_KEY", "attached", "get_injection"]

#: The key of a model's ``__dict__`` that holds its injection.
STATE_KEY = "_esper_injection"


def get_injection(model: nn.Module) -> Injection | None:
    """The injection attached to ``model`` (seen through ``torch.compile``/DDP/``DataParallel``
    wrappers), or ``None``; :class:`HostError` if ``model`` is no module."""
    if not isinstance(model, nn.Module):
        raise HostError(f"expected an nn.Module with injected slots, got {shown(model)}")
    return unwrap(model).module.__dict__.get(STATE_KEY)


def attached(model: nn.Module, caller: str) -> tuple[nn.Module, Injection]:
    """The module with the injection (``model`` seen through its wrappers) and the injection.

    Raises :class:`HostError` when ``model`` is no module, has no injected slots, or a
    target's module was replaced after ``inject_slots``
    (:meth:`~esper_core.attachment.SlotAttachment.check_in_place`).
    """
    if not isinstance(model, nn.Module):
        raise HostError(f"{caller} needs an nn.Module with injected slots, got {shown(model)}")
    seen = unwrap(model)
    state = seen.module.__dict__.get(STATE_KEY)
    if state is None:
        raise HostError(f"{caller}: {seen.describe()} has no injected slots")
    for attachment in state.attachments:
        attachment.check_in_place(seen.module)
    return seen.module, state
