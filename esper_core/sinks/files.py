"""Opening the text files the file sinks write (shared by the JSON Lines and CSV sinks)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

__all__ = ["MODES", "events_path", "open_events_file"]

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
