"""What :func:`~esper_core.inject.inject_slots` attaches to a model, and finding it again.

:class:`InjectionTarget` (where one slot goes) and :class:`Injection` (what was attached)
are defined here, below :mod:`esper_core.inject`, and re-exported there as public names:
the lookups need the value and the value needs nothing of ``inject_slots``. The
:class:`Injection` sits in the ``__dict__`` of the module the slots
were injected into, under :data:`STATE_KEY`; a ``torch.compile``/DDP/``DataParallel``
wrapper around that module is seen through (:mod:`esper_core._wrappers`). :func:`attached`
also checks that every target is still the module its slot is attached to.
"""

from __future__ import annotations

from typing import Any

import attrs
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from esper_core._checks import MAX_TEXT, check_int, check_text, shown
from esper_core._outputs import OutputKey, check_output_key
from esper_core._slot_ids import default_slot_id
from esper_core._wrappers import unwrap
from esper_core.attachment import SlotAttachment
from esper_core.errors import HostError

__all__ = ["STATE_KEY", "Injection", "InjectionTarget", "attached", "get_injection"]


def _text(what: str) -> Any:
    return lambda value: check_text(what, value, error=HostError)


def _path(value: object) -> str:
    # "" is the model itself (its forward gets the slot), so it is accepted.
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise HostError(
            f"InjectionTarget path must be a submodule path (str, '' for the model itself) of at most "
            f"{MAX_TEXT} characters, got {shown(value)}"
        )
    return value


def _optional_text(what: str) -> Any:
    return lambda value: None if value is None else check_text(what, value, error=HostError)


@attrs.frozen
class InjectionTarget:
    """Where to put one slot: the submodule ``path`` whose output it sees, in ``topology``.

    ``dim`` is the feature width at that output; when ``None`` it is found by a probe
    forward. ``slot_id`` defaults to :attr:`resolved_id`: the path made an identifier (dots become
    underscores, ``"layers.0"`` gives ``"layers_0"``; a path starting with a digit gets a
    leading ``_``, ``"0"`` gives ``"_0"``). ``output``
    says which tensor of the module's output the slot sees when the module returns more
    than one tensor: ``None`` (default: it returns one tensor), an index (``0`` for the
    hidden states of a Hugging Face attention layer's ``(hidden, weights)`` tuple) or a key
    (``"last_hidden_state"`` of a ``ModelOutput``). Each field is checked on construction
    (:class:`HostError` naming it).
    """

    path: str = attrs.field(converter=_path)
    topology: str = attrs.field(converter=_text("InjectionTarget topology"))
    dim: int | None = attrs.field(
        default=None,
        converter=lambda v: (
            None if v is None else check_int("InjectionTarget dim", v, minimum=1, error=HostError)
        ),
    )
    slot_id: str | None = attrs.field(default=None, converter=_optional_text("InjectionTarget slot_id"))
    output: OutputKey = attrs.field(default=None, converter=check_output_key)

    @property
    def resolved_id(self) -> str:
        """``slot_id``, or ``path`` made an identifier when it is not given.

        ``"layers.0.mlp"`` gives ``"layers_0_mlp"``, ``"0"`` gives ``"_0"``, the root ``"_root"``.
        """
        return self.slot_id if self.slot_id is not None else default_slot_id(self.path)


@attrs.define(eq=False, slots=False)
class Injection:
    """What :func:`inject_slots` attached to a model: the slots, one attachment per target,
    the per-sample alpha overrides shared by the attachments, and the cached-decoding guards
    (:mod:`esper_core._decoding`) on modules that take a KV cache."""

    slots: nn.ModuleDict
    targets: tuple[InjectionTarget, ...]
    attachments: tuple[SlotAttachment, ...]
    overrides: dict[str, Tensor] = attrs.field(factory=dict)
    guards: tuple[RemovableHandle, ...] = ()

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A deep copy or an unpickled model: this value sits in the model's __dict__ after
        # its children, so the copied slots and attachments are complete here. Reconnect
        # each attachment to its slot's events (a slot may drop observers when copied).
        self.__dict__.update(state)
        for attachment in self.attachments:
            attachment.connect()


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
