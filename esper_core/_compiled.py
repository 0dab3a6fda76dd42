"""Compiled readers and writers for the codec's records: the fast path of one strict format.

:mod:`esper_core._fields` declares every field once (its kind) and reads data generically,
one method call and one error path per field. That reader is the reference. But a
checkpoint load reads ~60 fields per slot, and every distributed command is read on the
critical path of a collective, where the generic walk costs more than the message. So,
once per record class, this module generates (with ``exec``, as attrs generates
``__init__``) a reader that makes the same checks inline and builds the value the way
unpickling does (``object.__setattr__`` per field, then ``__attrs_post_init__``: the
invariants), and a writer that builds the same JSON data in one expression.

A reader answers either the value or :data:`FAIL`. On FAIL the caller runs the generic
reader, which raises the precise error (dotted path, value found, what is accepted): the
messages have one source, and the fast path is never the one that decides what is wrong.
The converters of a record's fields are not run by the compiled reader: each converter is
the identity on every value its kind accepts (the kind is at least as strict). The tests
hold both readers to the same answer on valid, boundary and mutated data for every record
class (``tests/lifecycle/test_compiled_codec.py``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import attrs

from esper_core._checks import is_unicode
from esper_core._fields import (
    Bool,
    EnumOf,
    FieldError,
    Float,
    Int,
    Kind,
    ListOf,
    Nullable,
    Record,
    Str,
    layout,
    members,
    pattern_of,
)
from esper_core.errors import EsperError

__all__ = ["FAIL", "reader", "writer"]

#: What a compiled reader returns for data it does not accept (run the generic reader for the error).
FAIL: Any = object()


class _Source:
    """The text and the namespace of one generated function."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "FAIL": FAIL,
            "NEW": object.__new__,
            "EsperError": EsperError,
            "FieldError": FieldError,
            "HASHABLE": frozenset((int, str, float, bool)),
            "isfinite": math.isfinite,
            "UNICODE": is_unicode,
        }
        self._count = 0

    def const(self, value: Any) -> str:
        name = f"k{len(self.names)}"
        self.names[name] = value
        return name

    def var(self) -> str:
        self._count += 1
        return f"v{self._count}"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def build(self, name: str) -> Callable[..., Any]:
        namespace = dict(self.names)
        exec("\n".join(self.lines), namespace)  # the text is generated above from the kinds, never from data
        return namespace[name]


def _number(src: _Source, number: float) -> str:
    """A float bound as a literal (a named constant for the infinities, which have none)."""
    return repr(number) if math.isfinite(number) else src.const(number)


def _read(src: _Source, kind: Kind, value: str, out: str, depth: int) -> None:
    """Emit code that checks ``value`` against ``kind`` and binds the decoded value to ``out``,
    or returns FAIL: exactly what ``kind.decode`` accepts and returns."""
    emit = functools.partial(src.emit, depth)
    kind_type = type(kind)
    if kind_type is Int:
        assert isinstance(kind, Int)
        test = f"type({value}) is not int or not {kind.minimum!r} <= {value} <= {kind.maximum!r}"
        if kind.choices is not None:
            test += f" or {value} not in {src.const(frozenset(kind.choices))}"
        emit(f"if {test}: return FAIL")
    elif kind_type is Float:
        assert isinstance(kind, Float)
        low, high = _number(src, kind.minimum), _number(src, kind.maximum)
        finite = (
            ""
            if math.isfinite(kind.minimum) and math.isfinite(kind.maximum)
            else f" or not isfinite({value})"
        )
        # With both bounds finite the comparison itself refuses NaN and the infinities.
        test = f"type({value}) is not float{finite} or not {low} <= {value} <= {high}"
        if kind.low_open:
            test += f" or {value} == {low}"
        emit(f"if {test}: return FAIL")
    elif kind_type is Str:
        assert isinstance(kind, Str)
        test = f"type({value}) is not str or len({value}) > {kind.max_length!r} or not UNICODE({value})"
        if kind.choices is not None:
            test += f" or {value} not in {src.const(frozenset(kind.choices))}"
        if kind.pattern is not None:
            test += f" or {src.const(pattern_of(kind.pattern).fullmatch)}({value}) is None"
        emit(f"if {test}: return FAIL")
    elif kind_type is Bool:
        emit(f"if type({value}) is not bool: return FAIL")
    elif kind_type is EnumOf:
        assert isinstance(kind, EnumOf)
        table = src.const(members(kind.enum, kind.exclude))
        emit(f"if type({value}) not in HASHABLE: return FAIL")
        emit(f"{out} = {table}.get((type({value}), {value}))")
        emit(f"if {out} is None: return FAIL")
        return
    elif kind_type is Nullable:
        assert isinstance(kind, Nullable)
        emit(f"if {value} is None: {out} = None")
        emit("else:")
        _read(src, kind.inner, value, out, depth + 1)
        return
    elif kind_type is ListOf:
        assert isinstance(kind, ListOf)
        items, item, decoded = src.var(), src.var(), src.var()
        emit(f"if type({value}) is not list or len({value}) > {kind.max_length!r}: return FAIL")
        emit(f"{items} = []")
        emit(f"for {item} in {value}:")
        _read(src, kind.inner, item, decoded, depth + 1)
        src.emit(depth + 1, f"{items}.append({decoded})")
        emit(f"{out} = tuple({items})")
        return
    elif kind_type is Record:
        assert isinstance(kind, Record)
        emit(f"{out} = {src.const(reader(kind.cls))}({value})")
        emit(f"if {out} is FAIL: return FAIL")
        return
    else:  # a kind without an inline form (blueprint options): its own decode
        emit(f"try: {out} = {src.const(kind.decode)}({value}, '')")
        emit("except FieldError: return FAIL")
        return
    emit(f"{out} = {value}")


@functools.cache
def reader(cls: type) -> Callable[[object], Any]:
    """The compiled reader of ``cls``: its value from JSON data, or :data:`FAIL`."""
    fields = layout(cls)
    src = _Source()
    keys = src.const(frozenset(name for name, _ in fields))
    src.emit(0, "def read(data):")
    src.emit(1, f"if type(data) is not dict or data.keys() != {keys}: return FAIL")
    outs = []
    for name, kind in fields:
        value, out = src.var(), src.var()
        src.emit(1, f"{value} = data[{name!r}]")
        _read(src, kind, value, out, 1)
        outs.append((name, out))
    target = src.const(cls)
    if len(fields) == len(attrs.fields(cls)):  # every field is in the data: build as unpickling does
        src.emit(1, f"made = NEW({target})")
        for name, out in outs:  # each slot's own descriptor: object.__setattr__ would look it up first
            src.emit(1, f"{src.const(_slot_setter(cls, name))}(made, {out})")
        post = getattr(cls, "__attrs_post_init__", None)
        if post is not None:
            src.emit(1, f"try: {src.const(post)}(made)")
            src.emit(1, "except EsperError: return FAIL")
    else:  # fields the data does not carry take their defaults from the constructor
        arguments = ", ".join(f"{name}={out}" for name, out in outs)
        src.emit(1, f"try: made = {target}({arguments})")
        src.emit(1, "except EsperError: return FAIL")
    src.emit(1, "return made")
    return src.build("read")


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The setter of field ``name`` of ``cls``: its slot descriptor's, else ``object.__setattr__``."""
    for klass in cls.__mro__:
        descriptor = vars(klass).get(name)
        if descriptor is not None and hasattr(descriptor, "__set__"):
            return descriptor.__set__
    return lambda made, value: object.__setattr__(made, name, value)  # a dict-based class (slots=False)


def _write(src: _Source, kind: Kind, value: str) -> str:
    """An expression for ``kind.encode(value)`` (``value`` is a name or an attribute access)."""
    kind_type = type(kind)
    simple = {Int: "int", Float: "float", Str: "str", Bool: "bool"}.get(kind_type)
    if simple is not None:
        return f"{simple}({value})"
    if kind_type is EnumOf:
        return f"{value}.value"
    if kind_type is Nullable:
        assert isinstance(kind, Nullable)
        return f"(None if {value} is None else {_write(src, kind.inner, value)})"
    if kind_type is ListOf:
        assert isinstance(kind, ListOf)
        item = src.var()
        return f"[{_write(src, kind.inner, item)} for {item} in {value}]"
    if kind_type is Record:
        assert isinstance(kind, Record)
        return f"{src.const(writer(kind.cls))}({value})"
    return f"{src.const(kind.encode)}({value})"


@functools.cache
def writer(cls: type) -> Callable[[Any], dict[str, Any]]:
    """The compiled writer of ``cls``: ``encode_record(value)`` in one dict display."""
    src = _Source()
    items = ", ".join(f"{name!r}: {_write(src, kind, f'value.{name}')}" for name, kind in layout(cls))
    src.emit(0, "def write(value):")
    src.emit(1, f"return {{{items}}}")
    return src.build("write")
