"""``esper demo`` end to end on a tiny configuration: outputs exist and the report is valid."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from esper_core.demo import main, run_demo

_STAGES = {"GERMINATED", "TRAINING", "BLENDING", "HOLDING", "FOSSILIZED", "PRUNED"}


def _check_report(saved: dict, out: Path, topology: str, epochs: int) -> None:
    assert saved["topology"] == topology and saved["epochs"] == epochs and saved["seed"] == 3
    assert (out / saved["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(saved["runs"]) == {"grown", "host_alone", "static"}
    for run in saved["runs"].values():
        assert len(run["history"]) == epochs
        assert 0.0 <= run["final"]["accuracy"] <= 100.0
        if topology == "transformer":
            assert run["final"]["bits_per_char"] > 0
    runs = saved["runs"]
    assert runs["host_alone"]["params"] == saved["host_params"]
    added = sum(s["params_added"] for s in saved["seeds"])
    assert runs["grown"]["params"] == runs["static"]["params"] == saved["host_params"] + added
    assert saved["seeds"], "the tiny configuration germinates at the first plateau"
    for seed in saved["seeds"]:
        assert seed["final_stage"] in _STAGES and seed["param_count"] > 0
        assert seed["params_added"] == (0 if seed["final_stage"] == "PRUNED" else seed["param_count"])
    assert all(len(v) == epochs for v in saved["alpha"].values())
    assert any(e["event"] == "SeedGerminated" for e in saved["events"])
    assert saved["wall_time_s"] > 0


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_tiny_demo_end_to_end(topology: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    argv = ["--size", "tiny", "--epochs", "4", "--seed", "3", "--topology", topology, "--out", str(tmp_path)]
    assert main(argv) == 0
    assert torch.get_num_threads() == threads  # the demo's --threads setting is undone
    report = json.loads((tmp_path / "report.json").read_text())
    _check_report(report, tmp_path, topology, 4)
    text = capsys.readouterr().out
    assert "germinated" in text and "validation (final epoch)" in text and "host alone" in text


def test_run_demo_returns_what_it_writes(tmp_path: Path) -> None:
    stream = io.StringIO()
    report = run_demo(
        topology="cnn", epochs=2, seed=3, out=tmp_path, size="tiny", console=Console(file=stream)
    )
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    assert "seeds" in stream.getvalue()


def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--epochs", "0"])
    assert info.value.code == 2
    assert "--epochs must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--topology", "graph"])
    assert "invalid choice: 'graph'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--threads", "0"])
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
