"""Field kinds: how each field of a frozen value is written as JSON data and checked when read.

The lifecycle values (:mod:`esper_core.slot_state`, :mod:`esper_core.commands`,
:mod:`esper_core.alpha`, :mod:`esper_core.metrics`) declare every attrs field with
:func:`entry`, which attaches a *kind*. :mod:`esper_core.codec` then writes and reads any such
value generically: one codec for checkpoints and for the distributed command channel.

Data read back comes from outside the process (a truncated, hand-edited, older or hostile
file; a peer rank), so reading is strict: the key set must match exactly, every value must
have exactly the declared JSON type (``bool`` is not an ``int``, an ``int`` is not a
``float``), numbers must be finite and in range. Only ``int``, ``float``, ``str``, ``bool``,
``None``, ``list`` and ``dict`` ever appear, so the data survives
``torch.load(weights_only=True)`` and never needs pickle. After the kinds, the value's own
validators run (its invariants); a failure anywhere raises :class:`FieldError` with the
dotted path (``seed.alpha.epochs_done``), which the codec turns into the library's error.
"""

from __future__ import annotations

import functools
import math
import re
from enum import Enum
from typing import Any, Protocol, TypeVar

import attrs

from esper_core._checks import INT32_MAX, MAX_TEXT, is_unicode, shown
from esper_core.errors import EsperError, LifecycleError

__all__ = [
    "BOOL",
    "Bool",
    "EnumOf",
    "FieldError",
    "Float",
    "Int",
    "InvalidState",
    "Kind",
    "ListOf",
    "Nullable",
    "Record",
    "ScalarMap",
    "Str",
    "decode_record",
    "encode_record",
    "entry",
    "field_names",
    "layout",
    "members",
    "pattern_of",
]

_KIND = "esper_kind"
T = TypeVar("T")


class FieldError(Exception):
    """A field that cannot be read: ``path`` is dotted, ``message`` says what was found and accepted."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path!r}: {message}")
        self.path = path
        self.message = message

    def describe(self, what: str) -> str:
        """``"<what> 'a.b' is missing ..."`` or ``"<what> 'a.b': got ..."``."""
        joiner = " " if self.message.startswith("is ") else ": "
        return f"{what} {self.path!r}{joiner}{self.message}"


class InvalidState(LifecycleError):
    """A value would break one of its invariants; ``field`` names the field (dotted within the value)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field {field!r}: {message}")
        self.field = field
        self.detail = message


def _bad(path: str, value: object, accepted: str) -> FieldError:
    return FieldError(path, f"got {shown(value)} ({type(value).__name__}); accepted: {accepted}")


class Kind(Protocol):
    """How one field is checked on read and written on save."""

    def decode(self, value: object, path: str) -> Any: ...

    def encode(self, value: Any) -> Any: ...

    def describe(self) -> str: ...


@attrs.frozen
class Int:
    """An ``int`` (never a ``bool``) in ``[minimum, maximum]`` or one of ``choices``."""

    minimum: int = 0
    maximum: int = INT32_MAX
    choices: tuple[int, ...] | None = None

    def decode(self, value: object, path: str) -> int:
        if type(value) is not int or not self.minimum <= value <= self.maximum:
            raise _bad(path, value, self.describe())
        if self.choices is not None and value not in self.choices:
            raise _bad(path, value, self.describe())
        return value

    def encode(self, value: Any) -> int:
        return int(value)

    def describe(self) -> str:
        if self.choices is not None:
            return f"an int, one of {list(self.choices)}"
        return f"an int in [{self.minimum}, {self.maximum}]"


@attrs.frozen
class Float:
    """A finite ``float`` in ``[minimum, maximum]``, or ``(minimum, maximum]`` when ``low_open``
    (an ``int`` is rejected: writers write floats)."""

    minimum: float = -math.inf
    maximum: float = math.inf
    low_open: bool = False

    def decode(self, value: object, path: str) -> float:
        if type(value) is not float or not math.isfinite(value) or not self.minimum <= value <= self.maximum:
            raise _bad(path, value, self.describe())
        if self.low_open and value == self.minimum:
            raise _bad(path, value, self.describe())
        return value

    def encode(self, value: Any) -> float:
        return float(value)

    def describe(self) -> str:
        return f"a finite float in {'(' if self.low_open else '['}{self.minimum}, {self.maximum}]"


@attrs.frozen
class Str:
    """A ``str`` of at most ``max_length`` characters, optionally one of ``choices`` or matching ``pattern``."""

    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    max_length: int = MAX_TEXT

    def decode(self, value: object, path: str) -> str:
        if type(value) is not str or len(value) > self.max_length or not is_unicode(value):
            raise _bad(path, value, self.describe())
        if self.choices is not None and value not in self.choices:
            raise _bad(path, value, self.describe())
        if self.pattern is not None and pattern_of(self.pattern).fullmatch(value) is None:
            raise _bad(path, value, self.describe())
        return value

    def encode(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        if self.pattern is not None:
            return f"a str matching {self.pattern!r} of at most {self.max_length} characters of valid Unicode"
        return f"a str of at most {self.max_length} characters of valid Unicode"


@functools.cache
def pattern_of(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled (once)."""
    return re.compile(pattern)


@attrs.frozen
class Bool:
    """A ``bool`` (``0``/``1`` are rejected)."""

    def decode(self, value: object, path: str) -> bool:
        if type(value) is not bool:
            raise _bad(path, value, self.describe())
        return value

    def encode(self, value: Any) -> bool:
        return bool(value)

    def describe(self) -> str:
        return "true or false"


BOOL = Bool()


@attrs.frozen
class EnumOf:
    """A member of ``enum``, written as its ``value``; members in ``exclude`` are refused."""

    enum: type[Enum]
    exclude: tuple[Any, ...] = ()

    def decode(self, value: object, path: str) -> Any:
        hashable = type(value) in (int, str, float, bool)
        member = members(self.enum, self.exclude).get((type(value), value)) if hashable else None
        if member is None:
            raise _bad(path, value, self.describe())
        return member

    def encode(self, value: Any) -> Any:
        return value.value

    def describe(self) -> str:
        return f"one of {[v for (_, v) in members(self.enum, self.exclude)]}"


@functools.cache
def members(enum: type[Enum], exclude: tuple[Any, ...]) -> dict[tuple[type, Any], Enum]:
    """``enum``'s members but ``exclude``, by ``(type(value), value)`` of their JSON value."""
    # Keyed by (type, value) so that True never stands for 1 and 1.0 never for 1.
    return {(type(m.value), m.value): m for m in enum if m.value not in exclude}


@attrs.frozen
class Nullable:
    """Either ``None`` (written explicitly, e.g. "not measured") or a value of ``inner``."""

    inner: Kind

    def decode(self, value: object, path: str) -> Any:
        return None if value is None else self.inner.decode(value, path)

    def encode(self, value: Any) -> Any:
        return None if value is None else self.inner.encode(value)

    def describe(self) -> str:
        return f"null or {self.inner.describe()}"


@attrs.frozen
class ListOf:
    """A ``list`` of ``inner`` values with at most ``max_length`` items; read as a tuple."""

    inner: Kind
    max_length: int = 1024

    def decode(self, value: object, path: str) -> tuple[Any, ...]:
        if type(value) is not list or len(value) > self.max_length:
            raise _bad(path, value, self.describe())
        decode, items = self.inner.decode, []
        for i, item in enumerate(value):
            try:  # each item's own path is written only for the message (loads read long lists)
                items.append(decode(item, path))
            except FieldError:
                decode(item, f"{path}[{i}]")
                raise
        return tuple(items)

    def encode(self, value: Any) -> list[Any]:
        return [self.inner.encode(item) for item in value]

    def describe(self) -> str:
        return f"a list of at most {self.max_length} items, each {self.inner.describe()}"


@attrs.frozen
class ScalarMap:
    """A ``dict`` of str keys to int / finite float / str / bool (blueprint options); read sorted."""

    max_items: int = 64

    def decode(self, value: object, path: str) -> tuple[tuple[str, Any], ...]:
        if type(value) is not dict or len(value) > self.max_items:
            raise _bad(path, value, self.describe())
        items = []
        for key, item in value.items():
            if type(key) is not str or len(key) > MAX_TEXT or not is_unicode(key):
                raise _bad(f"{path}.<key>", key, f"a str of at most {MAX_TEXT} characters of valid Unicode")
            if type(item) not in (int, float, str, bool) or (type(item) is float and not math.isfinite(item)):
                raise _bad(f"{path}.{key}", item, "an int, finite float, str or bool")
            if type(item) is str and (len(item) > MAX_TEXT or not is_unicode(item)):
                raise _bad(f"{path}.{key}", item, f"a str of at most {MAX_TEXT} characters of valid Unicode")
            if type(item) is int and abs(item) > 2**53:
                raise _bad(f"{path}.{key}", item, "an int of magnitude at most 2**53")
            items.append((key, item))
        return tuple(sorted(items))

    def encode(self, value: Any) -> dict[str, Any]:
        return dict(value)

    def describe(self) -> str:
        return f"an object of at most {self.max_items} str keys to int/float/str/bool"


@attrs.frozen
class Record:
    """A nested value: a dict checked against the attrs class ``cls``."""

    cls: type

    def decode(self, value: object, path: str) -> Any:
        return decode_record(self.cls, value, path)

    def encode(self, value: Any) -> dict[str, Any]:
        return encode_record(value)

    def describe(self) -> str:
        return f"an object with exactly the keys {field_names(self.cls)}"


def entry(kind: Kind, **kwargs: Any) -> Any:
    """Declare an attrs field together with the kind it is written and read as."""
    return attrs.field(metadata={_KIND: kind}, **kwargs)


@functools.cache
def layout(cls: type) -> tuple[tuple[str, Kind], ...]:
    """``(name, kind)`` of every field of ``cls`` declared with :func:`entry`, in order."""
    return tuple((f.name, f.metadata[_KIND]) for f in attrs.fields(cls) if _KIND in f.metadata)


def field_names(cls: type) -> list[str]:
    """The keys a record of ``cls`` is written with, in declaration order."""
    return [name for name, _ in layout(cls)]


@functools.cache
def _plan(cls: type, path: str) -> tuple[frozenset[str], tuple[tuple[str, Kind, str], ...]]:
    """The key set of ``cls`` and (name, kind, dotted path) per field, built once per place."""
    prefix = f"{path}." if path else ""
    fields = layout(cls)
    return frozenset(name for name, _ in fields), tuple((name, kind, prefix + name) for name, kind in fields)


def decode_record(cls: type[T], data: object, path: str) -> T:
    """Check ``data`` against ``cls`` and build the value (its validators included).

    Missing keys are reported before extra ones and fields are checked in declaration order,
    so the same bad data always yields the same message.
    """
    where = path or "<root>"
    if type(data) is not dict:
        raise _bad(where, data, f"an object with exactly the keys {field_names(cls)}")
    keys, fields = _plan(cls, path)
    if data.keys() != keys:
        _raise_key_mismatch(cls, data, path)
    values = {name: kind.decode(data[name], at) for name, kind, at in fields}
    try:
        return cls(**values)
    except EsperError as exc:  # an invariant of the value itself; ``field`` narrows the path
        field = getattr(exc, "field", None)
        detail = getattr(exc, "detail", str(exc))
        raise FieldError(_join(path, field) if field else where, detail) from None


def _raise_key_mismatch(cls: type, data: dict, path: str) -> None:
    where = path or "<root>"
    names = field_names(cls)
    for name in names:
        if name not in data:
            raise FieldError(_join(path, name), f"is missing; {where} needs exactly the keys {names}")
    for key in data:
        if key not in names:
            raise FieldError(
                _join(path, str(key)),
                f"is an unexpected key, not part of this format; {where} accepts exactly the keys {names}",
            )


def encode_record(value: Any) -> dict[str, Any]:
    """The plain-data form of ``value`` (JSON types only), fields in declaration order."""
    return {name: kind.encode(getattr(value, name)) for name, kind in layout(type(value))}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
