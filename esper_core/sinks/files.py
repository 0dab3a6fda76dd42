"""Opening the text files the file sinks write (shared by the JSON Lines and CSV sinks)."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import IO, Any

from esper_core.sinks.record import EVENT_KEY, TIME_KEY, to_jsonable

__all__ = ["MODES", "Context", "check_context", "context_values", "events_path", "open_events_file"]

#: Extra fields of every record: name -> a callable giving the value when an event is written.
Context = Mapping[str, Callable[[], Any]]

MODES = {
    "a": "append to the file, creating it if missing (the default: earlier events are kept)",
    "w": "truncate the file, or create it",
    "x": "create the file; an existing file is an error",
}


def events_path(path: str | os.PathLike[str], mode: str, *, sink: str) -> Path:
    """Check ``path`` and ``mode`` (one of :data:`MODES`) before anything is opened.

    Raises :class:`ValueError` for an unknown mode or an empty path and :class:`TypeError`
    for a path that is not a ``str`` or ``os.PathLike``; ``sink`` names the caller.
    """
    if mode not in MODES:
        accepted = "; ".join(f"{m!r}: {what}" for m, what in MODES.items())
        raise ValueError(f"{sink}: mode must be one of {accepted}; got {mode!r}")
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{sink}: path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    if not os.fspath(path):
        raise ValueError(f"{sink}: path must not be empty")
    return Path(path)


def open_events_file(path: Path, mode: str) -> IO[str]:
    """Open a path checked by :func:`events_path` for writing, as UTF-8 text.

    Raises :class:`OSError` (the path and the reason in its message) when the file cannot be
    opened: a missing folder, a folder in its place, no permission, an existing file in
    mode ``"x"``.
    """
    # newline="" lets the csv module write its own line endings; JSON Lines uses "\n" only.
    # The sink owns the file and closes it in its close().
    return open(path, mode, encoding="utf-8", newline="")


def check_context(
    context: Context | None, *, sink: str, taken: Collection[str]
) -> dict[str, Callable[[], Any]]:
    """``context`` as a dict, checked before anything is opened (``None`` means none).

    Each key must be a non-empty ``str`` that no record already uses (``time``, ``event`` and
    ``taken``: the fields of Esper's event classes); each value a callable with no argument.
    Raises :class:`TypeError` or :class:`ValueError` naming the key; ``sink`` names the caller.
    """
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise TypeError(
            f"{sink}: context must be a mapping of field name -> callable, e.g. "
            f"{{'epoch': lambda: epoch}}; got {type(context).__name__}"
        )
    checked: dict[str, Callable[[], Any]] = {}
    reserved = {TIME_KEY, EVENT_KEY, *taken}
    for key, value in context.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{sink}: context keys must be non-empty strings, got {key!r}")
        if key in reserved:
            raise ValueError(
                f"{sink}: context field {key!r} is already a field of the records (time, event and "
                "the events' own fields); choose another name"
            )
        if not callable(value):
            raise TypeError(
                f"{sink}: context[{key!r}] must be a callable returning the value (lambda: ...), got {value!r}"
            )
        checked[key] = value
    return checked


def context_values(context: Mapping[str, Callable[[], Any]], fields: Collection[str]) -> dict[str, Any]:
    """The context's values now, as JSON-able values; :class:`ValueError` if an event field has a
    context field's name (an event class Esper does not define), so neither hides the other."""
    clash = sorted(set(context) & set(fields))
    if clash:
        raise ValueError(f"the event has field(s) {clash}, which are also context fields of this sink")
    return {key: to_jsonable(value(), where=f"context[{key!r}]") for key, value in context.items()}
