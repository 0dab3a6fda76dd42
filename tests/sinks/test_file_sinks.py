"""JSON Lines and CSV sinks: real files written by a real lifecycle, read back and checked."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import attrs
import pytest

from esper_core.errors import RegistryError
from esper_core.registry import get_plugin_manager
from esper_core.sinks import EXTRA_COLUMN, CsvSink, JsonlSink, csv_columns, event_record
from esper_core.stages import SeedStage
from esper_core.telemetry import (
    SeedEvent,
    SeedFossilized,
    TelemetrySinkWarning,
    emit,
    reset_reported_failures,
)

STAGES = ["TRAINING", "BLENDING", "HOLDING", "FOSSILIZED"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


@pytest.fixture(autouse=True)
def no_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESPER_STRICT_PLUGINS", raising=False)
    reset_reported_failures()


def test_jsonl_holds_every_event_of_the_lifecycle_in_order(lifecycle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "events.jsonl"
    before = time.time()
    with JsonlSink(path) as sink:
        assert sink.registered
        events = lifecycle()
    assert not sink.registered
    lines = read_jsonl(path)
    assert len(lines) == len(events) > 15
    for line, event in zip(lines, events, strict=True):
        written_at = line.pop("time")
        assert before <= written_at <= time.time()
        assert line == event_record(event)
    grown = [
        line["to_stage"]
        for line in lines
        if line["event"] == "StageChanged" and line["slot_id"] == "features"
    ]
    assert grown == STAGES
    (fossilized,) = [line for line in lines if line["event"] == "SeedFossilized"]
    assert fossilized["blueprint"] == "sink_conv" and fossilized["counterfactual"] == 2.0
    (pruned,) = [line for line in lines if line["event"] == "SeedPruned"]
    assert pruned["slot_id"] == "mid" and pruned["reason"] == "no measurable gain"
    assert pruned["total_improvement"] is None or isinstance(pruned["total_improvement"], float)


def test_csv_holds_every_event_with_typed_cells(lifecycle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "events.csv"
    with CsvSink(path):
        events = lifecycle()
    header, rows = read_csv(path)
    assert tuple(header) == csv_columns()
    assert len(rows) == len(events)
    for row, event in zip(rows, events, strict=True):
        float(row["time"])
        for key, value in event_record(event).items():
            cell = row[key]
            if value is None:
                assert cell == ""
            elif isinstance(value, str):
                assert cell == value
            else:
                assert json.loads(cell) == value  # numbers, booleans, lists: JSON text
        assert row[EXTRA_COLUMN] == ""
        unused = set(header) - set(event_record(event)) - {"time", EXTRA_COLUMN}
        assert all(row[c] == "" for c in unused)
    grown = [r["to_stage"] for r in rows if r["event"] == "StageChanged" and r["slot_id"] == "features"]
    assert grown == STAGES
    gates = [r for r in rows if r["event"] == "GateEvaluated"]
    assert all(r["passed"] == "true" and 0.0 <= float(r["score"]) <= 1.0 for r in gates)


def test_both_file_sinks_and_a_register_call_in_one_line_each(lifecycle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    jsonl = JsonlSink(tmp_path / "a.jsonl").register()
    table = CsvSink(tmp_path / "a.csv").register(name="my-csv")
    try:
        assert get_plugin_manager().get_plugin("my-csv") is table
        events = lifecycle()
    finally:
        jsonl.close()
        table.close()
    assert len(read_jsonl(tmp_path / "a.jsonl")) == len(read_csv(tmp_path / "a.csv")[1]) == len(events)
    emit(SeedFossilized(slot_id="x", seed_id=None, blueprint="b", param_count=1, counterfactual=None,
                        total_improvement=None, evaluations_total=1))  # fmt: skip
    assert len(read_jsonl(tmp_path / "a.jsonl")) == len(events)  # closed sinks receive nothing


def test_every_event_class_fills_its_own_columns(event_classes, sample_event, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Generic over telemetry's classes: an event class added later gets columns, not "extra".
    events = [sample_event(cls) for cls in event_classes]
    with JsonlSink(tmp_path / "e.jsonl"), CsvSink(tmp_path / "e.csv"):
        for event in events:
            emit(event)
    lines = read_jsonl(tmp_path / "e.jsonl")
    rows = read_csv(tmp_path / "e.csv")[1]
    for event, line, row in zip(events, lines, rows, strict=True):
        line.pop("time")
        assert line == event_record(event)
        assert row[EXTRA_COLUMN] == "", (type(event).__name__, row[EXTRA_COLUMN])
        assert all(row[key] != "" for key, value in line.items() if value not in (None, ""))


def _fossilized(slot_id: str = "s") -> SeedFossilized:
    return SeedFossilized(
        slot_id=slot_id, seed_id="x", blueprint="b", param_count=1, counterfactual=0.5,
        total_improvement=None, evaluations_total=3,
    )  # fmt: skip


@pytest.mark.parametrize("sink_type", [JsonlSink, CsvSink])
def test_modes_append_truncate_and_exclusive(sink_type, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "log"
    count = (lambda: len(read_jsonl(path))) if sink_type is JsonlSink else (lambda: len(read_csv(path)[1]))
    for _ in range(2):
        with sink_type(path):
            emit(_fossilized())
    assert count() == 2  # append is the default: the first run is kept, one header only
    with sink_type(path, mode="w"):
        emit(_fossilized())
    assert count() == 1
    with pytest.raises(FileExistsError, match="log"):
        sink_type(path, mode="x")
    assert count() == 1


@pytest.mark.parametrize("sink_type", [JsonlSink, CsvSink])
def test_bad_arguments_are_clear_errors(sink_type, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"mode must be one of 'a'.*got 'r'"):
        sink_type(tmp_path / "log", mode="r")
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        sink_type(tmp_path / "no-such-folder" / "log")
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike, got int 42"):
        sink_type(42)
    with pytest.raises(ValueError, match="path must not be empty"):
        sink_type("")
    assert list(tmp_path.iterdir()) == []  # nothing created by a refused sink


def test_csv_refuses_to_append_to_a_table_with_another_header(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("time,event,slot_id,old_column\n1,X,s,v\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"different header.*\['old_column'\].*mode='w'") as info:
        CsvSink(path)
    assert "seed_id" in str(info.value)
    assert path.read_text(encoding="utf-8").endswith("1,X,s,v\n")  # untouched


def test_events_esper_does_not_define_are_kept(tmp_path: Path) -> None:
    @attrs.frozen(kw_only=True)
    class PackEvent(SeedEvent):  # a pack's own event type, unknown to the CSV header
        pack_budget: float
        pack_stage: SeedStage
        blueprint: str

    event = PackEvent(slot_id="s", seed_id=None, pack_budget=0.5, pack_stage=SeedStage.HOLDING, blueprint="b")
    with JsonlSink(tmp_path / "e.jsonl"), CsvSink(tmp_path / "e.csv"):
        emit(event)
    (line,) = read_jsonl(tmp_path / "e.jsonl")
    assert line["event"] == "PackEvent" and line["pack_budget"] == 0.5 and line["pack_stage"] == "HOLDING"
    (row,) = read_csv(tmp_path / "e.csv")[1]
    assert row["blueprint"] == "b"  # a known column is used
    assert json.loads(row[EXTRA_COLUMN]) == {"pack_budget": 0.5, "pack_stage": "HOLDING"}


def test_a_field_that_cannot_be_written_is_reported_and_training_goes_on(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    @attrs.frozen(kw_only=True)
    class Odd(SeedEvent):
        payload: object

    path = tmp_path / "e.jsonl"
    with JsonlSink(path) as sink:
        with pytest.warns(TelemetrySinkWarning, match=r"JsonlSink@.*Odd\.payload: cannot convert"):
            emit(Odd(slot_id="s", seed_id=None, payload=object()))
        emit(_fossilized())  # the sink keeps working for the next event
        monkeypatch.setenv("ESPER_STRICT_PLUGINS", "1")
        with pytest.raises(TypeError, match=r"Odd\.payload"):
            emit(Odd(slot_id="s", seed_id=None, payload=object()))
    assert [line["event"] for line in read_jsonl(path)] == ["SeedFossilized"]
    assert "registered" not in repr(sink) and "closed" in repr(sink)


def test_concurrent_emitters_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"

    def emit_many(slot: str) -> None:
        for _ in range(150):
            emit(_fossilized(slot))

    with JsonlSink(path), CsvSink(tmp_path / "e.csv"):
        threads = [threading.Thread(target=emit_many, args=(f"s{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    lines = read_jsonl(path)
    assert len(lines) == 600 and {line["slot_id"] for line in lines} == {"s0", "s1", "s2", "s3"}
    assert len(read_csv(tmp_path / "e.csv")[1]) == 600


def test_registration_mistakes_are_refused(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "e.jsonl").register(name="twice")
    try:
        with pytest.raises(RegistryError, match="already registered"):
            sink.register()
        with pytest.raises(RegistryError, match="'twice' is already registered"):
            CsvSink(tmp_path / "e.csv").register(name="twice")
    finally:
        sink.close()
    sink.close()  # closing twice is harmless
    with pytest.raises(ValueError, match="is closed; create a new sink"):
        sink.register()
