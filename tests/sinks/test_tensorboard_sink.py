"""TensorBoard sink: event files written by a real lifecycle, read back with TensorBoard itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from esper_core.errors import MissingExtraError
from esper_core.sinks import TensorBoardSink, event_record, event_scalars
from esper_core.stages import SeedStage
from esper_core.telemetry import GateEvaluated, SeedEvent, StageChanged


def load(log_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def texts(accumulator: EventAccumulator, tag: str) -> list[tuple[int, dict]]:
    return [
        (e.step, json.loads(e.tensor_proto.string_val[0].decode()))
        for e in accumulator.Tensors(f"{tag}/text_summary")
    ]


def test_scalars_and_text_of_a_real_lifecycle(lifecycle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with TensorBoardSink(tmp_path / "run"):
        events = lifecycle()
    run = load(tmp_path / "run")

    # default step: the n-th event this sink wrote
    changes = [
        (i, e) for i, e in enumerate(events) if isinstance(e, StageChanged) and e.slot_id == "features"
    ]
    stages = run.Scalars("esper/features/StageChanged/to_stage")
    assert [(s.step, s.value) for s in stages] == [(i, float(e.to_stage)) for i, e in changes]
    assert [SeedStage(int(s.value)).name for s in stages] == ["TRAINING", "BLENDING", "HOLDING", "FOSSILIZED"]

    gates = [(i, e) for i, e in enumerate(events) if isinstance(e, GateEvaluated) and e.slot_id == "mid"]
    scores = run.Scalars("esper/mid/GateEvaluated/score")
    assert [(s.step, s.value) for s in scores] == [(i, pytest.approx(e.score)) for i, e in gates]
    assert {s.value for s in run.Scalars("esper/mid/GateEvaluated/passed")} == {1.0}
    assert run.Scalars("esper/features/SeedFossilized/counterfactual")[0].value == 2.0

    for slot in ("features", "mid"):
        written = texts(run, f"esper/{slot}")
        expected = [(i, event_record(e)) for i, e in enumerate(events) if e.slot_id == slot]
        assert written == expected
    tags = run.Tags()["scalars"]
    assert all(t.startswith(("esper/features/", "esper/mid/")) for t in tags)
    assert "esper/features/SeedGerminated/param_count" in tags


def test_own_writer_and_step_function(lifecycle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    writer = SummaryWriter(str(tmp_path))
    epoch = {"value": 100}

    def step() -> int:
        epoch["value"] += 1
        return epoch["value"]

    with TensorBoardSink(writer=writer, step=step, prefix="growth"):
        events = lifecycle()
    writer.add_scalar("user/loss", 0.5, 1)  # the user's writer is still open
    writer.close()
    run = load(tmp_path)
    steps = [s.step for s in run.Scalars("growth/features/StageChanged/to_stage")]
    changes = [i for i, e in enumerate(events) if isinstance(e, StageChanged) and e.slot_id == "features"]
    assert steps == [101 + i for i in changes]
    assert run.Scalars("user/loss")[0].value == 0.5


def test_event_scalars_are_generic_over_fields() -> None:
    event = StageChanged(
        slot_id="s", seed_id="x", from_stage=SeedStage.TRAINING, to_stage=SeedStage.BLENDING,
        alpha=0.25, epochs_in_stage=3,
    )  # fmt: skip
    assert event_scalars(event) == {
        "from_stage": 3.0,
        "to_stage": 4.0,
        "alpha": 0.25,
        "epochs_in_stage": 3.0,
    }
    assert event_scalars(SeedEvent(slot_id="s", seed_id=None)) == {}


def test_bad_arguments_and_missing_tensorboard(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    writer = SummaryWriter(str(tmp_path / "w"))
    with pytest.raises(ValueError, match="log_dir or writer, not both"):
        TensorBoardSink(tmp_path, writer=writer)
    writer.close()
    with pytest.raises(TypeError, match="step must be a callable"):
        TensorBoardSink(tmp_path, step=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix must be"):
        TensorBoardSink(tmp_path, prefix="esper/")
    sink = TensorBoardSink(tmp_path / "bad-step", step=lambda: 1.5)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match=r"step\(\) must return an int, got 1\.5"):
        sink.esper_seed_event(SeedEvent(slot_id="s", seed_id=None))
    sink.close()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(MissingExtraError, match=r'pip install "esper-core\[tensorboard\]"'):
        TensorBoardSink(tmp_path / "missing")
