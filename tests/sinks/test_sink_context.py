"""``context=``: fields of the caller's own (epoch, run) in every JSON Lines line and CSV row.

The values are computed when each event is written, so a counter the training loop moves
shows up as it was at that event. A context field can never hide an event field or be
hidden by one: names the records already use are refused up front, and a pack's event with
a field of that name is reported (not written half-wrong).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import attrs
import pytest

from esper_core.sinks import CsvSink, JsonlSink, csv_columns
from esper_core.stages import SeedStage
from esper_core.telemetry import (
    SeedEvent,
    SeedFossilized,
    TelemetrySinkWarning,
    emit,
    reset_reported_failures,
)


@pytest.fixture(autouse=True)
def no_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESPER_STRICT_PLUGINS", raising=False)
    reset_reported_failures()


def _event(slot_id: str = "s") -> SeedFossilized:
    return SeedFossilized(
        slot_id=slot_id, seed_id="x", blueprint="b", param_count=1, counterfactual=0.5,
        total_improvement=None, evaluations_total=3,
    )  # fmt: skip


def test_context_fields_are_computed_per_event(lifecycle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    epoch = [0]
    context = {"epoch": lambda: epoch[0], "stage_seen": lambda: SeedStage.TRAINING, "run": lambda: "a"}
    with JsonlSink(tmp_path / "e.jsonl", context=context), CsvSink(tmp_path / "e.csv", context=context):
        for epoch[0] in range(3):
            emit(_event(f"s{epoch[0]}"))
        events = lifecycle()  # a real lifecycle at epoch 2: every event class it emits
    lines = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines[:3]] == [0, 1, 2] and lines[3]["epoch"] == 2
    assert list(lines[0])[:5] == ["time", "epoch", "stage_seen", "run", "event"]
    assert lines[0]["stage_seen"] == "TRAINING"  # converted like any field
    assert len(lines) == 3 + len(events)
    with open(tmp_path / "e.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[:5] == ["time", "epoch", "stage_seen", "run", "event"]
    assert tuple(header) == csv_columns(("epoch", "stage_seen", "run"))
    assert [row["epoch"] for row in rows[:3]] == ["0", "1", "2"] and rows[0]["run"] == "a"
    assert [row["event"] for row in rows] == [line["event"] for line in lines]


def test_appending_with_other_context_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    with CsvSink(path, context={"epoch": lambda: 1}):
        emit(_event())
    with pytest.raises(ValueError, match=r"different header.*lacks: \['seed'\]"):
        CsvSink(path, context={"epoch": lambda: 1, "seed": lambda: 3})
    with CsvSink(path, context={"epoch": lambda: 2}):  # the same columns append
        emit(_event())
    assert len(path.read_text().splitlines()) == 3


@pytest.mark.parametrize("sink_type", [JsonlSink, CsvSink])
@pytest.mark.parametrize(
    ("context", "error", "message"),
    [
        ([("epoch", 1)], TypeError, "context must be a mapping"),
        ({"epoch": 3}, TypeError, r"context\['epoch'\] must be a callable"),
        ({"": lambda: 1}, TypeError, "context keys must be non-empty strings"),
        ({"event": lambda: 1}, ValueError, "'event' is already a field"),
        ({"time": lambda: 1}, ValueError, "'time' is already a field"),
        ({"slot_id": lambda: 1}, ValueError, "'slot_id' is already a field"),
        ({"reason": lambda: 1}, ValueError, "'reason' is already a field"),
    ],
)
def test_bad_context_is_refused_before_any_file_exists(
    sink_type: type, context: object, error: type[Exception], message: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=message):
        sink_type(tmp_path / "e", context=context)
    assert list(tmp_path.iterdir()) == []


def test_a_pack_event_with_a_context_fields_name_is_reported_not_written(tmp_path: Path) -> None:
    @attrs.frozen(kw_only=True)
    class PackEvent(SeedEvent):
        epoch: int

    path = tmp_path / "e.jsonl"
    with JsonlSink(path, context={"epoch": lambda: 7}):
        with pytest.warns(TelemetrySinkWarning, match=r"field\(s\) \['epoch'\].*context fields"):
            emit(PackEvent(slot_id="s", seed_id=None, epoch=1))
        emit(_event())
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == ["SeedFossilized"]
