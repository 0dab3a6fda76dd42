"""Strict field kinds for checkpoint records.

A checkpoint is data from outside the process: it may be truncated, hand-edited, written
by an older version, or hostile. Every record of the slot envelope is therefore an attrs
frozen class whose fields each carry a *kind* (see :func:`entry`), and
:func:`decode_record` checks a plain dict against it: the key set must match exactly,
every value must have exactly the declared primitive type (``bool`` is not an ``int``, an
``int`` is not a ``float``), numbers must be finite and in range where declared. Only
``int``, ``float``, ``str``, ``bool``, ``None``, ``list`` and ``dict`` ever appear, so an
envelope survives ``torch.load(weights_only=True)`` and never needs pickle.

Errors are :class:`~esper_core.errors.CheckpointError` and name the dotted field path
(``seed.alpha.steps_done``), the value found and what is accepted.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Protocol, TypeVar

import attrs

from esper_core.errors import CheckpointError

__all__ = [
    "BOOL",
    "Bool",
    "Float",
    "Int",
    "Kind",
    "ListOf",
    "Nullable",
    "Record",
    "ScalarMap",
    "Str",
    "decode_record",
    "encode_record",
    "entry",
    "fail",
]

_KIND = "envelope_kind"
T = TypeVar("T")


def fail(path: str, value: object, accepted: str) -> CheckpointError:
    """Build the error for a bad value at ``path`` (returned, so callers write ``raise fail(...)``)."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return CheckpointError(
        f"checkpoint field {path!r}: got {shown} ({type(value).__name__}); accepted: {accepted}"
    )


class Kind(Protocol):
    """How one field is checked on load and written on save."""

    def decode(self, value: object, path: str) -> Any: ...

    def encode(self, value: Any) -> Any: ...

    def describe(self) -> str: ...


@attrs.frozen
class Int:
    """An ``int`` (never a ``bool``) within optional inclusive bounds."""

    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[int, ...] | None = None

    def decode(self, value: object, path: str) -> int:
        if type(value) is not int:
            raise fail(path, value, self.describe())
        if self.choices is not None and value not in self.choices:
            raise fail(path, value, self.describe())
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise fail(path, value, self.describe())
        return value

    def encode(self, value: Any) -> int:
        return int(value)

    def describe(self) -> str:
        if self.choices is not None:
            return f"an int, one of {list(self.choices)}"
        return _bounded("an int", self.minimum, self.maximum)


@attrs.frozen
class Float:
    """A finite ``float`` (an ``int`` is rejected: the writer always writes floats)."""

    minimum: float | None = None
    maximum: float | None = None

    def decode(self, value: object, path: str) -> float:
        if type(value) is not float or not math.isfinite(value):
            raise fail(path, value, self.describe())
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise fail(path, value, self.describe())
        return value

    def encode(self, value: Any) -> float:
        return float(value)

    def describe(self) -> str:
        return _bounded("a finite float", self.minimum, self.maximum)


@attrs.frozen
class Str:
    """A ``str``, optionally restricted to ``choices`` or to a full-match ``pattern``."""

    choices: tuple[str, ...] | None = None
    pattern: str | None = None

    def decode(self, value: object, path: str) -> str:
        if type(value) is not str:
            raise fail(path, value, self.describe())
        if self.choices is not None and value not in self.choices:
            raise fail(path, value, self.describe())
        if self.pattern is not None and _compiled(self.pattern).fullmatch(value) is None:
            raise fail(path, value, self.describe())
        return value

    def encode(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        if self.pattern is not None:
            return f"a str matching {self.pattern!r}"
        return "a str"


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@attrs.frozen
class Bool:
    """A ``bool`` (``0``/``1`` are rejected)."""

    def decode(self, value: object, path: str) -> bool:
        if type(value) is not bool:
            raise fail(path, value, self.describe())
        return value

    def encode(self, value: Any) -> bool:
        return bool(value)

    def describe(self) -> str:
        return "True or False"


BOOL = Bool()


@attrs.frozen
class Nullable:
    """Either ``None`` (written explicitly, e.g. "not measured") or a value of ``inner``."""

    inner: Kind

    def decode(self, value: object, path: str) -> Any:
        return None if value is None else self.inner.decode(value, path)

    def encode(self, value: Any) -> Any:
        return None if value is None else self.inner.encode(value)

    def describe(self) -> str:
        return f"None or {self.inner.describe()}"


@attrs.frozen
class ListOf:
    """A ``list`` of ``inner`` values with at most ``max_length`` entries; decodes to a tuple."""

    inner: Kind
    max_length: int | None = None

    def decode(self, value: object, path: str) -> tuple[Any, ...]:
        if type(value) is not list or (self.max_length is not None and len(value) > self.max_length):
            raise fail(path, value, self.describe())
        return tuple(self.inner.decode(item, f"{path}[{i}]") for i, item in enumerate(value))

    def encode(self, value: Any) -> list[Any]:
        return [self.inner.encode(item) for item in value]

    def describe(self) -> str:
        size = "" if self.max_length is None else f" of at most {self.max_length} items"
        return f"a list{size}, each item {self.inner.describe()}"


@attrs.frozen
class ScalarMap:
    """A ``dict`` from str keys to int/float/str/bool (blueprint options); decodes sorted."""

    def decode(self, value: object, path: str) -> tuple[tuple[str, Any], ...]:
        if type(value) is not dict:
            raise fail(path, value, self.describe())
        items = []
        for key, item in value.items():
            if type(key) is not str:
                raise fail(f"{path}.<key>", key, "str keys")
            if type(item) not in (int, float, str, bool) or (type(item) is float and not math.isfinite(item)):
                raise fail(f"{path}.{key}", item, "an int, finite float, str or bool")
            items.append((key, item))
        return tuple(sorted(items))

    def encode(self, value: Any) -> dict[str, Any]:
        return dict(value)

    def describe(self) -> str:
        return "a dict of str -> int/float/str/bool"


@attrs.frozen
class Record:
    """A nested record: a dict checked against the attrs class ``cls``."""

    cls: type

    def decode(self, value: object, path: str) -> Any:
        return decode_record(self.cls, value, path)

    def encode(self, value: Any) -> dict[str, Any]:
        return encode_record(value)

    def describe(self) -> str:
        return f"a dict with exactly the keys {field_names(self.cls)}"


def entry(kind: Kind, **kwargs: Any) -> Any:
    """Declare an attrs field of a checkpoint record with its kind."""
    return attrs.field(metadata={_KIND: kind}, **kwargs)


@functools.cache
def _layout(cls: type) -> tuple[tuple[str, Kind], ...]:
    return tuple((f.name, f.metadata[_KIND]) for f in attrs.fields(cls))


def field_names(cls: type) -> list[str]:
    """The keys a record of ``cls`` must have, in declaration order."""
    return [name for name, _ in _layout(cls)]


@functools.cache
def _decode_plan(cls: type, path: str) -> tuple[frozenset[str], tuple[tuple[str, Kind, str], ...]]:
    """The key set of ``cls`` and (name, kind, dotted path) per field, built once per place."""
    prefix = f"{path}." if path else ""
    layout = _layout(cls)
    return frozenset(name for name, _ in layout), tuple((name, kind, prefix + name) for name, kind in layout)


def decode_record(cls: type[T], data: object, path: str) -> T:
    """Check ``data`` against ``cls`` and build the record; raise naming the first bad field.

    Missing keys are reported before extra ones, and fields are checked in declaration
    order, so the same bad file always yields the same message.
    """
    if type(data) is not dict:
        raise fail(path or "<envelope>", data, f"a dict with exactly the keys {field_names(cls)}")
    keys, fields = _decode_plan(cls, path)
    if data.keys() != keys:
        _raise_key_mismatch(cls, data, path)
    return cls(**{name: kind.decode(data[name], where) for name, kind, where in fields})


def _raise_key_mismatch(cls: type, data: dict, path: str) -> None:
    where = path or "<envelope>"
    names = field_names(cls)
    for name in names:
        if name not in data:
            raise CheckpointError(
                f"checkpoint field {_join(path, name)!r} is missing; {where} needs exactly the keys {names}"
            )
    for key in data:
        if key not in names:
            raise CheckpointError(
                f"checkpoint field {_join(path, str(key))!r} is not part of this format; "
                f"{where} accepts exactly the keys {names}"
            )


def encode_record(record: Any) -> dict[str, Any]:
    """The plain-dict form of ``record`` (primitive types only)."""
    return {name: kind.encode(getattr(record, name)) for name, kind in _layout(type(record))}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _bounded(text: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{text} in [{lo}, {hi}]"
    if lo is not None:
        return f"{text} >= {lo}"
    if hi is not None:
        return f"{text} <= {hi}"
    return text
