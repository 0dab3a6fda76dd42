"""Lifecycle events as plain JSON-able values, for sinks that write them anywhere.

The conversion is generic: it reads an event's fields from its attrs definition, so a
field added to an event class tomorrow is written without a change here. The rules, applied
recursively:

==========================  ============================================================
value                       becomes
==========================  ============================================================
``None``                    ``None`` (JSON ``null``)
``bool``, ``str``           itself
``int``, ``float``          itself (any ``numbers.Integral`` / ``numbers.Real`` too);
                            NaN and infinities stay floats (Python's ``json`` writes
                            them as ``NaN`` / ``Infinity``)
an ``enum.Enum`` member     its name, e.g. ``"TRAINING"``, ``"G1"``, ``"ADD"``
tuple, list                 a list
set, frozenset              a list, sorted by the converted values' JSON text
a mapping                   a dict; keys must be ``str`` (or enum members: their names)
an attrs instance           a dict of its fields, in declaration order
``pathlib`` path            ``str(path)``
``datetime``/``date``       ISO 8601 text
anything else               :class:`TypeError` naming the field and the type
==========================  ============================================================

Nothing is dropped or stringified silently: a value of a type not in the table is an error
(which a sink reports through :func:`esper_core.telemetry.emit`'s usual warning), so a new
kind of field is noticed and added to the table rather than written as an opaque ``repr``.
"""

from __future__ import annotations

import datetime
import enum
import json
import numbers
import pathlib
from collections.abc import Mapping
from typing import Any

import attrs

from esper_core.telemetry import SeedEvent

__all__ = ["EVENT_KEY", "TIME_KEY", "event_fields", "event_record", "to_jsonable"]

EVENT_KEY = "event"
"""Key of the event's class name in a record (``"SeedGerminated"``)."""

TIME_KEY = "time"
"""Key the file sinks add for the wall-clock time of writing, in seconds since the Unix epoch."""


def to_jsonable(value: Any, *, where: str = "value") -> Any:
    """Convert ``value`` to ``None``/``bool``/``int``/``float``/``str``/``list``/``dict`` by the table above.

    ``where`` names the value in an error message (``"SeedGerminated.options[0][1]"``).
    Raises :class:`TypeError` for a type the table does not cover, and for a mapping key
    that is not a string or an enum member.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):  # before int: IntEnum members are ints
        return value.name
    if isinstance(value, int | float):
        return value
    if isinstance(value, numbers.Integral):  # numpy and torch integer scalars
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, tuple | list):
        return [to_jsonable(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [to_jsonable(item, where=f"{where}{{...}}") for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(value, Mapping):
        return {_key(k, where): to_jsonable(v, where=f"{where}[{k!r}]") for k, v in value.items()}
    if attrs.has(type(value)):
        return {
            field.name: to_jsonable(getattr(value, field.name), where=f"{where}.{field.name}")
            for field in attrs.fields(type(value))
        }
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, datetime.date):  # datetime.datetime is a date too
        return value.isoformat()
    raise TypeError(
        f"{where}: cannot convert a {type(value).__module__}.{type(value).__qualname__} to JSON; "
        "accepted: None, bool, numbers, str, enum members, tuples, lists, sets, mappings with "
        "string keys, attrs instances, paths, dates"
    )


def _key(key: Any, where: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, enum.Enum):
        return key.name
    raise TypeError(
        f"{where}: mapping key {key!r} is a {type(key).__name__}; JSON object keys must be strings"
    )


def event_fields(event_type: type[SeedEvent]) -> tuple[str, ...]:
    """The field names of an event class in declaration order (``slot_id``, ``seed_id`` first).

    Raises :class:`TypeError` if ``event_type`` is not an attrs subclass of
    :class:`~esper_core.telemetry.SeedEvent`, and :class:`ValueError` if one of its fields
    is named like a key the sinks add (:data:`EVENT_KEY`, :data:`TIME_KEY`).
    """
    if not (isinstance(event_type, type) and issubclass(event_type, SeedEvent) and attrs.has(event_type)):
        raise TypeError(f"expected an attrs subclass of SeedEvent, got {event_type!r}")
    names = tuple(field.name for field in attrs.fields(event_type))
    clash = sorted({EVENT_KEY, TIME_KEY} & set(names))
    if clash:
        raise ValueError(
            f"{event_type.__name__} has field(s) {clash}, which the sinks reserve for their own keys"
        )
    return names


def event_record(event: SeedEvent) -> dict[str, Any]:
    """One event as a flat dict: ``{"event": class name, "slot_id": ..., "seed_id": ..., <fields>}``.

    Every field of the event's class is present, converted by :func:`to_jsonable`, in
    declaration order. Raises :class:`TypeError` for a non-event or an unconvertible field
    (the message names ``Class.field``).
    """
    if not isinstance(event, SeedEvent):
        raise TypeError(f"expected a SeedEvent from esper_core.telemetry, got {type(event).__name__}")
    name = type(event).__name__
    record: dict[str, Any] = {EVENT_KEY: name}
    for field in event_fields(type(event)):
        record[field] = to_jsonable(getattr(event, field), where=f"{name}.{field}")
    return record
