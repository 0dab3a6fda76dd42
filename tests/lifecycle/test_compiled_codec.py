"""The compiled readers and writers (esper_core._compiled) agree with the generic ones
(esper_core._fields) on every record class: the same value for data both accept, a refusal
from both otherwise. Data comes from the kinds themselves (valid values, their boundaries),
then is mutated (a value replaced by junk, a key dropped or added), so a kind that is looser
than its field's converter, or a generated check that differs from its kind, shows up as a
disagreement."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esper_core import codec
from esper_core._compiled import FAIL, reader, writer
from esper_core._fields import (
    Bool,
    EnumOf,
    FieldError,
    Float,
    Int,
    ListOf,
    Nullable,
    Record,
    ScalarMap,
    Str,
    decode_record,
    encode_record,
    layout,
    members,
)
from esper_core.commands import COMMANDS, Germinate, SetAlphaTarget
from esper_core.errors import CheckpointError, DistributedError, LifecycleError
from esper_core.slot_state import SlotState


def _records(cls: type, seen: dict[str, type]) -> dict[str, type]:
    seen[cls.__name__] = cls
    for _, kind in layout(cls):
        while isinstance(kind, Nullable | ListOf):
            kind = kind.inner
        if isinstance(kind, Record) and kind.cls.__name__ not in seen:
            _records(kind.cls, seen)
    return seen


#: Every record class the codec reads: the state and everything in it, and every command.
RECORDS: dict[str, type] = {}
for _cls in (SlotState, *COMMANDS.values()):
    _records(_cls, RECORDS)

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([-1, 0, 1, 2**31, 2**31 - 1, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 100.0, math.inf, math.nan]),
    st.text(max_size=8),
    st.sampled_from(["", " ", "a", "Z", "gate", "hold", "linear", "TRAINING", "\ud800", "a\udfffb"]),
    st.lists(st.integers(0, 12), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _valid(kind: Any) -> st.SearchStrategy[Any]:
    """Values ``kind`` accepts, boundaries favoured (the JSON form, as a file holds it)."""
    if isinstance(kind, Int):
        if kind.choices is not None:
            return st.sampled_from(kind.choices)
        return st.one_of(
            st.sampled_from([kind.minimum, kind.maximum]), st.integers(kind.minimum, kind.maximum)
        )
    if isinstance(kind, Float):
        ends = [x for x in (kind.minimum, kind.maximum) if math.isfinite(x)]
        inner = st.floats(kind.minimum, kind.maximum, allow_nan=False, allow_infinity=False)
        return st.one_of(st.sampled_from(ends), inner) if ends else inner
    if isinstance(kind, Str):
        if kind.choices is not None:
            return st.sampled_from(kind.choices)
        if kind.pattern is not None:
            return st.from_regex(kind.pattern, fullmatch=True).filter(lambda s: len(s) <= kind.max_length)
        return st.text(max_size=kind.max_length)
    if isinstance(kind, Bool):
        return st.booleans()
    if isinstance(kind, EnumOf):
        return st.sampled_from([value for (_, value) in members(kind.enum, kind.exclude)])
    if isinstance(kind, Nullable):
        return st.one_of(st.none(), _valid(kind.inner))
    if isinstance(kind, ListOf):
        return st.lists(_valid(kind.inner), max_size=min(kind.max_length, 6))
    if isinstance(kind, ScalarMap):
        scalar = st.one_of(st.integers(-5, 5), st.floats(-2, 2), st.text(max_size=4), st.booleans())
        return st.dictionaries(st.text(max_size=6), scalar, max_size=3)
    if isinstance(kind, Record):
        return _data(kind.cls)
    raise AssertionError(f"no strategy for {kind!r}")


def _data(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: _valid(kind) for name, kind in layout(cls)})


@st.composite
def _mutated(draw: st.DrawFn, cls: type) -> Any:
    data = draw(_data(cls))
    for _ in range(draw(st.integers(0, 2))):
        data = _mutate(draw, data)
    return data


def _mutate(draw: st.DrawFn, data: Any) -> Any:
    """``data`` with one change somewhere inside it."""
    if isinstance(data, dict) and data and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(data, key=str)))
        data = dict(data)
        action = draw(st.sampled_from(["descend", "replace", "drop", "add"]))
        if action == "descend":
            data[key] = _mutate(draw, data[key])
        elif action == "replace":
            data[key] = draw(JUNK)
        elif action == "drop":
            del data[key]
        else:
            data[draw(st.text(min_size=1, max_size=4))] = draw(JUNK)
        return data
    if isinstance(data, list) and data and draw(st.booleans()):
        data = list(data)
        i = draw(st.integers(0, len(data) - 1))
        data[i] = _mutate(draw, data[i]) if draw(st.booleans()) else draw(JUNK)
        return data
    return draw(JUNK)


def _generic(cls: type, data: Any) -> Any:
    try:
        return decode_record(cls, data, "")
    except FieldError:
        return FAIL


def _agree(cls: type, data: Any) -> None:
    snapshot = copy.deepcopy(data)
    fast, slow = reader(cls)(data), _generic(cls, data)
    assert data == snapshot or (data != data), "a reader changed its input"
    if slow is FAIL:
        assert fast is FAIL, (
            f"{cls.__name__}: the compiled reader accepted what the generic one refuses: {data!r}"
        )
        return
    assert fast is not FAIL, f"{cls.__name__}: the compiled reader refused valid data {data!r}"
    assert fast == slow and type(fast) is type(slow)
    assert writer(cls)(fast) == encode_record(slow)
    assert json.dumps(writer(cls)(fast)) == json.dumps(encode_record(slow))


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("source", [_data, _mutated], ids=["kind-valid", "mutated"])
@pytest.mark.parametrize("name", sorted(RECORDS))
@_SETTINGS
@given(data=st.data())
def test_readers_agree(name: str, source: Any, data: st.DataObject) -> None:
    cls = RECORDS[name]
    _agree(cls, data.draw(source(cls)))


def test_every_record_class_is_covered() -> None:
    # The state's nested values and every command: a new record class is picked up by itself.
    assert {"SlotState", "SeedState", "AlphaSchedule", "SeedMetrics", "ActivityState"} <= set(RECORDS)
    assert set(COMMANDS.values()) <= set(RECORDS.values())
    for cls in RECORDS.values():
        assert attrs.has(cls)


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [(Germinate, "alpha_target", 0.0), (SetAlphaTarget, "target", 0.0)],
)
def test_alpha_target_zero_is_refused_by_both_readers(cls: type, field: str, value: float) -> None:
    # The regression that made the kinds as strict as the converters: (0, 1], not [0, 1].
    data = encode_record(cls(**{field: 0.5, **_required(cls)}))
    data[field] = value
    assert reader(cls)(data) is FAIL
    with pytest.raises(FieldError, match=rf"'{field}'.*\(0\.0, 1\.0\]"):
        decode_record(cls, data, "")


def _required(cls: type) -> dict[str, Any]:
    return {"blueprint": "conv_light"} if cls is Germinate else {"epochs": 1}


def test_codec_errors_still_name_the_field() -> None:
    # The codec answers with the generic reader's message when the compiled reader refuses.
    text = codec.encode_command(Germinate(blueprint="conv_light", ramp_epochs=3))
    bad = text.replace(b'"ramp_epochs":3', b'"ramp_epochs":true')
    with pytest.raises(DistributedError, match=r"'args\.ramp_epochs'.*got True"):
        codec.decode_command(bad)
    envelope = json.loads(_envelope_text())
    envelope["state"]["seed"]["schedule"]["epochs_done"] = -1
    with pytest.raises(CheckpointError, match=r"'state\.seed\.schedule\.epochs_done'.*got -1"):
        codec.decode_envelope(envelope)


def _envelope_text() -> str:
    from esper_core.gates import QualityGates
    from esper_core.slot import SeedSlot

    slot = SeedSlot("s", topology="cnn", dim=8, gates=QualityGates("permissive"))
    slot.germinate("conv_light")
    return slot.lifecycle_text()


_JSONISH = st.one_of(
    st.text(alphabet=' \t\n{}[]":,.-+0123456789eEtruefalsnNIaiy\\', max_size=24),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
        max_leaves=8,
    ).map(lambda v: json.dumps(v)),
)


@settings(max_examples=400, deadline=None)
@given(text=_JSONISH, pad=st.sampled_from(["", " ", "\n", " x"]))
def test_parse_json_reads_exactly_what_json_loads_reads(text: str, pad: str) -> None:
    # parse_json scans without json.loads's wrapper (the command channel's critical path);
    # whatever it returns, or refuses, json.loads must agree.
    for candidate in (text, pad + text, text + pad):
        try:
            expected = json.loads(candidate)
        except ValueError:
            with pytest.raises(DistributedError, match="is not valid JSON"):
                codec.parse_json(candidate, "command", DistributedError)
            continue
        got = codec.parse_json(candidate, "command", DistributedError)
        assert json.dumps(got) == json.dumps(expected)


@pytest.mark.parametrize(
    "options",
    [{"a": "x" * 300}, {"a": 10**20}, {"a": "v\ud800"}, {"k\ud800": 1}, {"a": [1]}, {"a": math.nan}],
)
def test_a_germination_refuses_options_its_checkpoint_could_not_hold(options: dict[str, Any]) -> None:
    # The kind: whatever a command accepts, the codec must read back (a checkpoint, a peer).
    # Free-form options of 300 characters or 10**20 were accepted, then refused on load.
    with pytest.raises(LifecycleError, match=r"germinate 'options\."):
        Germinate(blueprint="conv_light", options=options)


@settings(max_examples=200, deadline=None)
@given(
    options=st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.integers(-(2**60), 2**60), st.floats(), st.text(max_size=300), st.booleans()),
        max_size=4,
    )
)
def test_every_accepted_germinate_reads_back(options: dict[str, Any]) -> None:
    try:
        command = Germinate(blueprint="conv_light", options=options)
    except LifecycleError:
        return
    assert codec.decode_command(codec.encode_command(command)) == command
