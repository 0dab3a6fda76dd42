"""The generic conversion of events to JSON-able values."""

from __future__ import annotations

import datetime
import enum
import json
import math
import pathlib

import attrs
import numpy as np
import pytest
import torch

from esper_core import telemetry
from esper_core.alpha import AlphaCurve
from esper_core.blend import BlendAlgorithm
from esper_core.gates import GateLevel
from esper_core.sinks import EVENT_KEY, TIME_KEY, event_fields, event_record, to_jsonable
from esper_core.stages import SeedStage
from esper_core.telemetry import SeedEvent, SeedWarning


class Color(enum.Enum):
    RED = "r"


@attrs.frozen
class Point:
    x: int
    y: tuple[float, ...]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (3, 3),
        (0.25, 0.25),
        ("text", "text"),
        (SeedStage.TRAINING, "TRAINING"),  # an IntEnum by name, not by its int value
        (GateLevel.G5, "G5"),
        (BlendAlgorithm.GATE, "GATE"),
        (Color.RED, "RED"),
        ((1, (2, "a")), [1, [2, "a"]]),
        ([None, 1.5], [None, 1.5]),
        (frozenset({"b", "a"}), ["a", "b"]),
        ({"k": (1, 2), SeedStage.HOLDING: None}, {"k": [1, 2], "HOLDING": None}),
        (Point(1, (0.5,)), {"x": 1, "y": [0.5]}),
        (pathlib.Path("runs") / "a.jsonl", "runs/a.jsonl"),
        (datetime.date(2026, 1, 2), "2026-01-02"),
        (np.int64(7), 7),
        (np.float32(0.5), 0.5),
        (torch.tensor(3).numpy()[()], 3),
    ],
)
def test_conversion_table(value: object, expected: object) -> None:
    converted = to_jsonable(value)
    assert converted == expected
    assert type(converted) is type(expected)
    assert json.loads(json.dumps(converted)) == expected


def test_non_finite_floats_stay_floats() -> None:
    assert math.isnan(to_jsonable(float("nan")))
    assert to_jsonable(float("inf")) == math.inf


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (object(), "value"),
        ((1, {"a": b"raw"}), "value[1]['a']"),
        (torch.zeros(2), "value"),
        ({1: "int key"}, "value"),
    ],
)
def test_unconvertible_values_are_errors_that_name_where(value: object, where: str) -> None:
    with pytest.raises(TypeError) as info:
        to_jsonable(value)
    assert str(info.value).startswith(f"{where}:")


def test_every_event_class_converts_completely(event_classes, sample_event) -> None:  # type: ignore[no-untyped-def]
    # Generic over the classes telemetry defines, so an event class or field added later is covered.
    assert len(event_classes) >= 8
    for cls in event_classes:
        _check_complete(cls, sample_event(cls))


def _check_complete(cls: type[SeedEvent], event: SeedEvent) -> None:
    record = event_record(event)
    assert list(record) == [EVENT_KEY, *(f.name for f in attrs.fields(cls))]
    assert json.loads(json.dumps(record)) == record
    for name, value in record.items():
        assert value is None or isinstance(value, bool | int | float | str | list), (name, value)


def test_every_event_of_a_real_lifecycle_converts_completely(lifecycle) -> None:  # type: ignore[no-untyped-def]
    events = lifecycle()
    expected = {
        telemetry.SeedGerminated, telemetry.GateEvaluated, telemetry.StageChanged, telemetry.AlphaTargetSet,
        telemetry.PruneScheduled, telemetry.SeedFossilized, telemetry.SeedPruned,
    }  # fmt: skip
    assert expected <= {type(e) for e in events}
    events.append(SeedWarning(slot_id="features", seed_id="s1", code="slow", message="a warning"))
    for event in events:
        record = event_record(event)
        assert record[EVENT_KEY] == type(event).__name__
        assert list(record)[1:] == [f.name for f in attrs.fields(type(event))]  # every field, in order
        assert json.loads(json.dumps(record)) == record
        for field in attrs.fields(type(event)):
            assert record[field.name] == to_jsonable(getattr(event, field.name))


def test_a_germination_record_reads_naturally(lifecycle) -> None:  # type: ignore[no-untyped-def]
    germinated = next(e for e in lifecycle() if isinstance(e, telemetry.SeedGerminated))
    record = event_record(germinated)
    assert record["algorithm"] == "ADD" and record["curve"] == AlphaCurve.LINEAR.name
    assert record["options"] == [] and record["dim"] == 4 and record["param_count"] == 4 * 4 * 9 + 4


def test_a_new_field_is_written_without_a_change_to_the_sinks() -> None:
    @attrs.frozen(kw_only=True)
    class Extended(telemetry.SeedGerminated):
        epoch: int
        history: tuple[SeedStage, ...]

    event = Extended(
        slot_id="s", seed_id=None, blueprint="b", topology="cnn", dim=4, options=(("rank", 2),),
        algorithm=BlendAlgorithm.ADD, curve=AlphaCurve.COSINE, ramp_epochs=3, alpha_target=1.0, param_count=9,
        epoch=12, history=(SeedStage.GERMINATED, SeedStage.TRAINING),
    )  # fmt: skip
    record = event_record(event)
    assert record["epoch"] == 12 and record["history"] == ["GERMINATED", "TRAINING"]
    assert record["options"] == [["rank", 2]] and record["seed_id"] is None


def test_reserved_keys_and_non_events_are_refused(event_classes) -> None:  # type: ignore[no-untyped-def]
    @attrs.frozen(kw_only=True)
    class Clashing(SeedEvent):
        time: float

    with pytest.raises(ValueError, match=r"\['time'\]"):
        event_record(Clashing(slot_id="s", seed_id=None, time=1.0))
    with pytest.raises(TypeError, match="expected a SeedEvent"):
        event_record({"slot_id": "s"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="attrs subclass of SeedEvent"):
        event_fields(dict)  # type: ignore[arg-type]
    assert TIME_KEY not in {f for cls in event_classes for f in event_fields(cls)}
