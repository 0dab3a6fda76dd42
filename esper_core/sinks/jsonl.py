"""A telemetry sink that writes each lifecycle event as one line of JSON (JSON Lines)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from esper_core.hookspecs import hookimpl
from esper_core.sinks.csv_file import csv_columns
from esper_core.sinks.files import Context, check_context, context_values, events_path, open_events_file
from esper_core.sinks.record import TIME_KEY, event_record
from esper_core.sinks.registration import EventSink
from esper_core.telemetry import SeedEvent

__all__ = ["JsonlSink"]


class JsonlSink(EventSink):
    """Append every lifecycle event to ``path`` as one JSON object per line.

    Each line is ``{"time": <seconds since the Unix epoch, float>, "event": "<class name>",
    "slot_id": ..., "seed_id": ..., <every field of the event>}`` with values converted by
    :func:`esper_core.sinks.event_record` (enums by name, tuples as lists, ``None`` as
    ``null``). Each line is flushed when written, so a crash loses nothing already emitted.

    Enable it for a block, or for the rest of the process::

        with JsonlSink("events.jsonl"):
            train()

        sink = JsonlSink("events.jsonl").register()  # until sink.close()

    ``mode`` is ``"a"`` (append; default), ``"w"`` (truncate) or ``"x"`` (the file must not
    exist). ``context`` adds fields of your own to every line, right after ``time``, each
    computed when the event is written: ``context={"epoch": lambda: epoch}``. Raises
    :class:`ValueError` for a bad mode or a context field named like a record field,
    :class:`TypeError` for a path that is not a ``str`` or ``os.PathLike`` or a context value
    that is not callable, and :class:`OSError` when the file cannot be opened. Writing is
    thread-safe; in multi-process training give each rank its own path (or enable the sink
    on rank 0 only).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, mode: str = "a", context: Context | None = None
    ) -> None:
        self.path: Path = events_path(path, mode, sink="JsonlSink")
        self.context = check_context(context, sink="JsonlSink", taken=csv_columns())
        self._file = open_events_file(self.path, mode)
        super().__init__(f"JsonlSink({str(self.path)!r})")

    @hookimpl
    def esper_seed_event(self, event: SeedEvent) -> None:
        record = event_record(event)
        extra = context_values(self.context, record) if self.context else {}
        line = json.dumps({TIME_KEY: time.time(), **extra, **record}, ensure_ascii=False)
        with self.lock:
            self._check_open()
            self._file.write(line + "\n")
            self._file.flush()

    def _release(self) -> None:
        self._file.close()
