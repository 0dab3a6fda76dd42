"""Slot ids of injected slots: what a valid one is, and the default made from a target's path.

A slot id names its slot in ``model.esper_slots``, in ``state_dict`` keys, in checkpoints
and in telemetry, so it must be an identifier. A submodule path need not be one
(``nn.Sequential`` names its children ``"0"``, ``"1"``, ...), so the default id is the path
made one by :func:`default_slot_id`, which is valid for every path.
"""

from __future__ import annotations

import re

from esper_core._checks import MAX_TEXT
from esper_core.errors import HostError

__all__ = ["MAX_SLOT_ID", "SLOT_ID_RE", "check_slot_id", "default_slot_id"]

SLOT_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Longest slot id (``SlotConfig`` holds ids of at most ``MAX_TEXT // 2`` characters).
MAX_SLOT_ID = MAX_TEXT // 2
_RULE = (
    f"letters, digits and '_', not starting with a digit, at most {MAX_SLOT_ID} characters "
    f"({SLOT_ID_RE.pattern})"
)


def default_slot_id(path: str) -> str:
    """The slot id of a target whose ``slot_id`` is not given: ``path`` made an identifier.

    Every character other than an ASCII letter, digit or ``_`` becomes ``_`` (``"layers.0.mlp"``
    gives ``"layers_0_mlp"``); an id that would start with a digit gets a leading ``_``
    (``"0"`` gives ``"_0"``, as ``nn.Sequential`` names its children); the model itself
    (path ``""``) is ``"_root"``; an id longer than :data:`MAX_SLOT_ID` characters keeps its
    last characters (the most specific names) after a leading ``_``. Pure.
    """
    ident = re.sub(r"[^A-Za-z0-9_]", "_", path) or "_root"
    if ident[0].isdigit():
        ident = f"_{ident}"
    if len(ident) > MAX_SLOT_ID:
        ident = f"_{ident[len(ident) - MAX_SLOT_ID + 1 :]}"
    return ident


def check_slot_id(slot_id: str, *, path: str, topology: str) -> None:
    """Raise :class:`HostError` if ``slot_id`` (of the target at ``path``) is not a valid id;
    the message says what is valid and suggests ``slot_id=default_slot_id(slot_id)``."""
    if not SLOT_ID_RE.match(slot_id) or len(slot_id) > MAX_SLOT_ID:
        raise HostError(
            f"slot id {slot_id!r} (for path {path!r}) must be {_RULE}: pass "
            f"InjectionTarget({path!r}, {topology!r}, slot_id={default_slot_id(slot_id)!r}), for example"
        )
