"""The ``**slot_options`` that :class:`~esper_core.model.MorphogeneticModel` and
:func:`~esper_core.inject.inject_slots` pass to every :class:`~esper_core.slot.SeedSlot`.

Both check the option names before anything is built, so a misspelt option is the library's
error listing the accepted names, never Python's "unexpected keyword argument". The accepted
names are read from ``SeedSlot.__init__`` itself: one source, so a new slot setting is
accepted here the day it is added there.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from esper_core.errors import HostError
from esper_core.slot import SeedSlot

__all__ = ["IDENTITY", "check_slot_options", "slot_option_names"]

#: SeedSlot arguments that say which slot it is; a caller sets them per slot, never as options.
IDENTITY = frozenset({"slot_id", "topology", "dim"})


def slot_option_names() -> tuple[str, ...]:
    """``SeedSlot``'s keyword parameters other than its identity, in signature order."""
    parameters = inspect.signature(SeedSlot.__init__).parameters.values()
    return tuple(
        p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in IDENTITY
    )


def check_slot_options(options: Mapping[str, object], *, caller: str, identity: str) -> None:
    """Raise :class:`HostError` if ``options`` has a key that is not a slot option.

    ``caller`` names the entry point in the message; ``identity`` ends the message for an
    identity argument (``slot_id``, ``topology``, ``dim``) passed as an option: where it comes
    from instead. The values are checked by the slot's own constructor.
    """
    fixed = sorted(IDENTITY & options.keys())
    if fixed:
        raise HostError(f"{caller}: slot options {fixed} {identity}")
    accepted = slot_option_names()
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise HostError(
            f"{caller}: unknown slot option(s) {unknown}; accepted (passed to every SeedSlot): {list(accepted)}"
        )
