"""A telemetry sink that writes lifecycle events as rows of one CSV table."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from esper_core import telemetry
from esper_core.hookspecs import hookimpl
from esper_core.sinks.files import Context, check_context, context_values, events_path, open_events_file
from esper_core.sinks.record import EVENT_KEY, TIME_KEY, event_fields, event_record
from esper_core.sinks.registration import EventSink
from esper_core.telemetry import SeedEvent

__all__ = ["EXTRA_COLUMN", "CsvSink", "csv_columns"]

EXTRA_COLUMN = "extra"
"""Column holding, as a JSON object, the fields of an event that have no column of their own."""


def _event_classes() -> list[type[SeedEvent]]:
    """Every event class of :mod:`esper_core.telemetry`, in definition order."""
    found: list[type[SeedEvent]] = []
    pending = [SeedEvent]
    while pending:
        cls = pending.pop(0)
        if cls.__module__ == telemetry.__name__ and cls not in found:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def csv_columns(context: Sequence[str] = ()) -> tuple[str, ...]:
    """The header :class:`CsvSink` writes for this version of Esper.

    ``time``, the ``context`` fields (if any), ``event``, then every field of every event
    class of :mod:`esper_core.telemetry` (first appearance wins the position, so ``slot_id``
    and ``seed_id`` come next), then :data:`EXTRA_COLUMN`. Computed from the classes, so a
    field added to an event gets a column without a change here.
    """
    columns = [TIME_KEY, *context, EVENT_KEY]
    for cls in _event_classes():
        columns.extend(name for name in event_fields(cls) if name not in columns)
    return (*columns, EXTRA_COLUMN)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class CsvSink(EventSink):
    """Write every lifecycle event as one row of a CSV file with a fixed header.

    The header is :func:`csv_columns`: one column per field of any event class, so each row
    fills the columns its event has and leaves the others empty. Cells hold strings as they
    are and every other value as JSON text (``true``, ``3``, ``0.25``, ``["TRAINING", ...]``);
    an empty cell is a missing field or ``None`` (or an empty string). Fields of an event
    class Esper does not define (a pack's own event) go, as a JSON object, into
    :data:`EXTRA_COLUMN`, so nothing is lost. ``time`` is seconds since the Unix epoch.
    Rows are flushed as written.

    ``mode`` is ``"a"`` (append; default), ``"w"`` (truncate) or ``"x"`` (the file must not
    exist). ``context`` adds columns of your own, right after ``time``, each computed when an
    event is written: ``context={"epoch": lambda: epoch}``. Appending to a file whose header
    differs (written by another Esper version) raises :class:`ValueError` naming both
    headers' differences, rather than mixing two layouts in one table. Also raises :class:`ValueError` for a bad mode or a context field
    named like a column, :class:`TypeError` for a path that is not a ``str`` or
    ``os.PathLike`` or a context value that is not callable, and :class:`OSError` when the
    file cannot be opened.

    Enable it for a block (``with CsvSink("events.csv"): ...``) or for the rest of the
    process (``sink = CsvSink("events.csv").register()``, until ``sink.close()``).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, mode: str = "a", context: Context | None = None
    ) -> None:
        self.path: Path = events_path(path, mode, sink="CsvSink")
        self.context = check_context(context, sink="CsvSink", taken=csv_columns())
        self.columns: tuple[str, ...] = csv_columns(tuple(self.context))
        if mode == "a":
            _check_existing_header(self.path, self.columns)
        self._file = open_events_file(self.path, mode)
        self._writer = csv.writer(self._file)
        self._index = {name: i for i, name in enumerate(self.columns)}
        super().__init__(f"CsvSink({str(self.path)!r})")
        if self._file.tell() == 0:
            self._writer.writerow(self.columns)
            self._file.flush()

    @hookimpl
    def esper_seed_event(self, event: SeedEvent) -> None:
        fields = event_record(event)
        extra_fields = context_values(self.context, fields) if self.context else {}
        record = {TIME_KEY: time.time(), **extra_fields, **fields}
        row = [""] * len(self.columns)
        extra = {}
        for key, value in record.items():
            index = self._index.get(key)
            if index is None:
                extra[key] = value
            else:
                row[index] = _cell(value)
        if extra:
            row[self._index[EXTRA_COLUMN]] = json.dumps(extra, ensure_ascii=False)
        with self.lock:
            self._check_open()
            self._writer.writerow(row)
            self._file.flush()

    def _release(self) -> None:
        self._file.close()


def _check_existing_header(path: Path, columns: tuple[str, ...]) -> None:
    try:
        with open(path, encoding="utf-8", newline="") as existing:
            header = next(csv.reader(existing), None)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return  # nothing to append to, or a path open() will reject with its own message
    if header is None or tuple(header) == columns:
        return
    missing = [c for c in columns if c not in header]
    unknown = [c for c in header if c not in columns]
    raise ValueError(
        f"CsvSink: {str(path)!r} has a different header (columns this version writes but the file "
        f"lacks: {missing}; columns in the file this version does not write: {unknown}"
        f"{'; same columns, other order' if not missing and not unknown else ''}); "
        "append to a new file, or pass mode='w' to replace it"
    )
