"""``esper demo --events / --events-csv / --tensorboard`` through the real ``esper`` command.

One small run (tiny size, one seed, four epochs, two strategies) writes all three sinks;
the checks read them back: every line and row carries the run (``seed``, ``model``) and the
epoch, numbered as the printed event lines and ``report.json`` number them; the CSV holds
the same events as the JSON Lines file; TensorBoard has one run per strategy whose stage
scalars step by epoch; ``report.json`` records the paths. Bad paths fail before training in
one line with exit status 2.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from esper_core.stages import SeedStage

ESPER = shutil.which("esper", path=str(Path(sys.executable).parent)) or "esper"
SMALL = ["--size", "tiny", "--epochs", "4", "--seeds", "1", "--seed", "2", "--gates", "permissive"]
STRATEGIES = ("gain_per_param", "cheapest")


def esper(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([ESPER, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("demo-sinks")
    (where / "events.jsonl").write_text('{"stale": true}\n')  # replaced, not appended to
    args = ["demo", *SMALL, "--strategy", ",".join(STRATEGIES), "--out", "out"]
    args += ["--events", "events.jsonl", "--events-csv", "events.csv", "--tensorboard", "tb"]
    result = esper(*args, cwd=where)
    assert result.returncode == 0, result.stderr
    assert "events.jsonl, events.csv, tb" in result.stdout
    return where


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_report_records_the_sinks(run: Path) -> None:
    report = json.loads((run / "out" / "report.json").read_text())
    assert report["settings"]["event_sinks"] == {
        "jsonl": "events.jsonl",
        "csv": "events.csv",
        "tensorboard": "tb",
    }
    assert "--events events.jsonl" in report["command"]


def test_every_event_carries_its_run_and_the_epoch_the_report_gives_it(run: Path) -> None:
    lines = _lines(run)
    assert all(list(line)[:5] == ["time", "seed", "model", "epoch", "event"] for line in lines)
    assert {line["model"] for line in lines} == {f"grown:{s}" for s in STRATEGIES}
    assert {line["seed"] for line in lines} == {2}
    report = json.loads((run / "out" / "report.json").read_text())
    (seed_run,) = report["runs"]
    for model in (f"grown:{s}" for s in STRATEGIES):
        printed = [
            (e["epoch"], e["event"], e["slot_id"], e["seed_id"]) for e in seed_run["models"][model]["events"]
        ]
        assert printed, f"{model} had no lifecycle event: the run is too short to test anything"
        kinds = {e[1] for e in printed}
        sunk = [
            (line["epoch"], line["event"], line["slot_id"], line["seed_id"])
            for line in lines
            if line["model"] == model and line["event"] in kinds
        ]
        assert sunk == printed  # same events, same epochs, same order
        assert any(line["event"] == "GateEvaluated" for line in lines if line["model"] == model)  # and more


def test_csv_holds_the_same_events(run: Path) -> None:
    with open(run / "events.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lines = _lines(run)
    assert list(rows[0])[:5] == ["time", "seed", "model", "epoch", "event"]
    assert [(r["model"], int(r["epoch"]), r["event"], r["slot_id"]) for r in rows] == [
        (line["model"], line["epoch"], line["event"], line["slot_id"]) for line in lines
    ]


def test_tensorboard_has_one_run_per_strategy_stepped_by_epoch(run: Path) -> None:
    lines = _lines(run)
    assert sorted(p.name for p in (run / "tb").iterdir()) == sorted(f"seed2-{s}" for s in STRATEGIES)
    for strategy in STRATEGIES:
        changes = [
            line for line in lines if line["model"] == f"grown:{strategy}" and line["event"] == "StageChanged"
        ]
        slot = changes[0]["slot_id"]
        board = EventAccumulator(str(run / "tb" / f"seed2-{strategy}"))
        board.Reload()
        scalars = board.Scalars(f"esper/{slot}/StageChanged/to_stage")
        expected = [(c["epoch"], c["to_stage"]) for c in changes if c["slot_id"] == slot]
        assert [(s.step, SeedStage(int(s.value)).name) for s in scalars] == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--events", "missing/events.jsonl"],
            "cannot write --events 'missing/events.jsonl': No such file or directory",
        ),
        (["--events-csv", "a-file/x.csv"], "cannot write --events-csv 'a-file/x.csv': Not a directory"),
        (["--tensorboard", "a-file"], "cannot write --tensorboard 'a-file'"),
        (["--events", "same", "--events-csv", "same"], "--events and --events-csv must be different files"),
        (["--events", ""], "--events must be a non-empty path"),
    ],
)
def test_a_sink_path_that_cannot_be_written_is_one_line_and_exit_2(
    flags: list[str], message: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("in the way")
    result = esper("demo", *SMALL, "--out", "out", *flags, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out" / "report.json").exists()  # stopped before any training
