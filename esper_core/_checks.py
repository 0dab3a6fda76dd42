"""Argument checks shared by every public entry point.

One place decides what a valid integer, number, name or choice is, so every entry point
rejects bad input the same way: with the library's own error (the caller passes the class),
naming the argument, the value and what is accepted, and before anything changes.

Integers that end up in lifecycle state are bounded (:data:`INT32_MAX` unless a smaller
bound is documented) so that nothing accepted can overflow later: in a checkpoint, in the
command channel or in the float64 state checksum. A number that Python can hold but a float
cannot (``10**400``) is an error here, never an ``OverflowError`` further down.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from enum import Enum
from typing import Any, TypeVar

from esper_core.errors import EsperError, LifecycleError

__all__ = [
    "INT32_MAX",
    "MAX_TEXT",
    "check_bool",
    "check_enum",
    "check_float",
    "check_int",
    "check_mapping",
    "check_members",
    "check_text",
    "is_unicode",
    "shown",
]

#: Upper bound of every integer kept in lifecycle state (a signed 32-bit int).
INT32_MAX = 2**31 - 1
#: Longest accepted free text (ids, reasons, initiators), in characters.
MAX_TEXT = 256
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode: no lone surrogate (``"\\ud800"`` from a JSON escape
    or ``surrogateescape``), which cannot be written as UTF-8 by a sink, a log or a file."""
    return text.isascii() or _SURROGATE.search(text) is None


E = TypeVar("E", bound=Enum)


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a huge value must not flood a message).

    Never raises: an int too long for ``repr`` (Python refuses more than 4300 digits) is
    described by its size, and an object whose ``repr`` raises by its type, so reporting a
    bad value can never fail in its turn.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        digits = int(value.bit_length() * math.log10(2)) + 1
        # str() of an int over 4300 digits raises; the leading digits are shown when it can work.
        if value.bit_length() < 14_000:
            return f"{str(value)[:12]}... (an int of {len(str(abs(value)))} digits)"
        return f"{'a negative' if value < 0 else 'an'} int of about {digits} digits"
    try:
        text = repr(value)
    except Exception:  # a value's own __repr__ may fail in any way
        text = f"<{type(value).__name__} object whose repr() fails>"
    if type(text) is not str:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def check_int(
    what: str,
    value: object,
    *,
    minimum: int = 0,
    maximum: int = INT32_MAX,
    error: type[EsperError] = LifecycleError,
) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise error(f"{what} must be an int in [{minimum}, {maximum}], got {shown(value)}")
    return int(value)


def _scalar(value: object) -> object:
    """A one-element 0-dim tensor or a numpy scalar as a Python number; anything else unchanged."""
    item = getattr(value, "item", None)
    if item is None or isinstance(value, int | float) or not callable(item):
        return value
    size = getattr(value, "numel", None)
    count = size() if callable(size) else getattr(value, "size", None)
    ndim = getattr(value, "ndim", None)
    if count != 1 or ndim not in (0, None):
        return value  # rejected below as "not a number", with its shape in the message
    return item()


def check_float(
    what: str,
    value: object,
    *,
    minimum: float = -math.inf,
    maximum: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    unit: str = "",
    error: type[EsperError] = LifecycleError,
) -> float:
    """``value`` as a finite ``float`` in ``[minimum, maximum]`` (an end excluded if ``*_open``).

    Ints are accepted (``1`` means ``1.0``), as are 0-dim tensors and numpy scalars; a
    ``bool``, a string, a tensor with more than one element, NaN, infinity and numbers too
    large for a float are rejected.
    """
    common = type(value) is float and minimum <= value <= maximum and abs(value) != math.inf
    if common and not ((low_open and value == minimum) or (high_open and value == maximum)):
        return value  # the common case (NaN fails the comparisons), without the general path below
    number = _scalar(value)
    ok = not isinstance(number, bool) and isinstance(number, int | float)
    result = math.nan
    if ok:
        try:
            result = float(number)
        except OverflowError:
            ok = False
    accepted = (
        f"a finite number in {'(' if low_open else '['}{minimum}, {maximum}{')' if high_open else ']'}{unit}"
    )
    if not ok or not math.isfinite(result):
        detail = f" of shape {tuple(value.shape)}" if hasattr(value, "shape") else ""
        raise error(f"{what} must be {accepted}, got {shown(value)}{detail}")
    if (
        result < minimum
        or result > maximum
        or (low_open and result == minimum)
        or (high_open and result == maximum)
    ):
        raise error(f"{what} must be {accepted}, got {shown(value)}")
    return result


def check_bool(what: str, value: object, *, error: type[EsperError] = LifecycleError) -> bool:
    """``value`` if it is exactly ``True`` or ``False`` (``1``, ``"no"`` and ``None`` are rejected)."""
    if type(value) is not bool:
        raise error(f"{what} must be True or False, got {shown(value)}")
    return value


def check_enum(what: str, value: object, kind: type[E], *, error: type[EsperError] = LifecycleError) -> E:
    """``value`` if it is a member of ``kind`` (names of the members are listed otherwise)."""
    if not isinstance(value, kind):
        accepted = ", ".join(f"{kind.__name__}.{m.name}" for m in kind)
        raise error(f"{what} must be one of {accepted}; got {shown(value)}")
    return value


def check_text(
    what: str, value: object, *, max_length: int = MAX_TEXT, error: type[EsperError] = LifecycleError
) -> str:
    """``value`` if it is a ``str`` with a non-blank character and at most ``max_length`` characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_length or not is_unicode(value):
        raise error(
            f"{what} must be a non-empty string of at most {max_length} characters of valid Unicode, "
            f"got {shown(value)}"
        )
    return value


def check_members(
    what: str,
    value: object,
    kind: type | tuple[type, ...],
    *,
    accepted: str = "",
    error: type[EsperError] = LifecycleError,
) -> tuple[Any, ...]:
    """``value``'s members as a tuple, if it is a collection (list, tuple, set, ...) whose every
    member is an instance of ``kind``. A single ``str`` (it would be read as its letters), a
    mapping (its keys) and an object that only claims to be iterable are rejected.
    ``accepted`` describes the members in the message (default: ``kind``'s name).
    """
    members: tuple[Any, ...] | None = None
    if isinstance(value, Collection) and not isinstance(value, str | bytes | Mapping):
        try:
            members = tuple(value)
        except TypeError:  # e.g. a 0-dim array: it has __iter__ but cannot be iterated
            members = None
    if members is None or not all(isinstance(m, kind) for m in members):
        names = accepted or (
            kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        )
        raise error(f"{what} must be a collection (list, tuple or set) of {names}, got {shown(value)}")
    return members


def check_mapping(what: str, value: object, *, error: type[EsperError] = LifecycleError) -> dict[str, Any]:
    """``value`` as a plain dict if it is a mapping with ``str`` keys (``None`` means empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise error(f"{what} must be a mapping of str names to values, got {shown(value)}")
    return dict(value)
