"""Issue 16 item 4: numbers. Every input of the issue gets the library's own error, naming the
value and what is accepted, and changes nothing (slot state, modules, tensors, global RNG).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from esper_core.alpha import AlphaCurve
from esper_core.errors import EsperError, LifecycleError
from esper_core.gates import GateLevel, GateThresholds, QualityGates
from esper_core.slot import SeedSlot
from esper_core.slot_state import MAX_DIM
from esper_core.stages import SeedStage

from .conftest import example, slot_snapshot, stage_slot
from .fuzzing import differences, same

HUGE = 10**400
HUGE_SHOWN = "100000000000... (an int of 401 digits)"

# (id, stage the slot is in, call, texts the message must contain)
CALLS: list[tuple[str, str, Callable[[SeedSlot], object], tuple[str, ...]]] = [
    ("record_accuracy(10**400)", "training", lambda s: s.record_accuracy(HUGE),
     ("accuracy", HUGE_SHOWN, "[0.0, 100.0] percentage points")),
    ("record_counterfactual(10**400)", "holding", lambda s: s.record_counterfactual(HUGE),
     ("contribution", HUGE_SHOWN, "[-100.0, 100.0] percentage points")),
    ("germinate(alpha_target=10**400)", "dormant", lambda s: s.germinate("conv_light", alpha_target=HUGE),
     ("alpha_target", HUGE_SHOWN, "(0.0, 1.0]")),
    ("germinate(ramp_epochs=10**400)", "dormant", lambda s: s.germinate("conv_light", ramp_epochs=HUGE),
     ("ramp_epochs", HUGE_SHOWN, "[1, 2147483647]")),
    ("germinate(tempo=10**400)", "dormant", lambda s: s.germinate("conv_light", tempo=HUGE),
     ("tempo", "options={")),
    ("set_alpha_target(10**400, 1)", "holding", lambda s: s.set_alpha_target(HUGE, 1),
     ("alpha_target", HUGE_SHOWN, "(0.0, 1.0]")),
    ("set_alpha_target(0.5, 10**400)", "holding", lambda s: s.set_alpha_target(0.5, HUGE),
     ("epochs", HUGE_SHOWN, "[0, 2147483647]")),
    ("schedule_prune(10**400)", "holding", lambda s: s.schedule_prune(HUGE, reason="r", initiator="i"),
     ("epochs", HUGE_SHOWN, "[0, 2147483647]")),
    ("schedule_prune(curve='linear')", "holding", lambda s: s.schedule_prune(2, "linear", reason="r", initiator="i"),
     ("curve", "AlphaCurve.LINEAR")),
    ("record_accuracy(tensor of 2)", "training", lambda s: s.record_accuracy(torch.tensor([50.0, 60.0])),
     ("accuracy", "shape (2,)", "percentage points")),
    ("record_accuracy(numpy array of 2)", "training", lambda s: s.record_accuracy(np.array([50.0, 60.0])),
     ("accuracy", "shape (2,)", "percentage points")),
    ("record_counterfactual(numpy array of 2)", "holding",
     lambda s: s.record_counterfactual(np.array([1.0, 2.0])), ("contribution", "shape (2,)")),
    ("record_accuracy(nan)", "training", lambda s: s.record_accuracy(float("nan")), ("accuracy", "nan")),
    ("record_accuracy(True)", "training", lambda s: s.record_accuracy(True), ("accuracy", "True")),
    ("record_accuracy('93')", "training", lambda s: s.record_accuracy("93"), ("accuracy", "'93'")),
]  # fmt: skip


def _unchanged(slot: SeedSlot, call: Callable[[], object]) -> EsperError:
    before = (slot_snapshot(slot), torch.get_rng_state())
    with pytest.raises(EsperError) as info:
        call()
    after = (slot_snapshot(slot), torch.get_rng_state())
    assert same(before, after), differences(before, after)
    return info.value


@pytest.mark.parametrize(("stage", "call", "texts"), [c[1:] for c in CALLS], ids=[c[0] for c in CALLS])
def test_a_bad_number_is_refused_naming_value_and_range_and_nothing_changes(stage, call, texts) -> None:
    slot = stage_slot(stage)
    error = _unchanged(slot, lambda: call(slot))
    assert isinstance(error, LifecycleError)
    for text in texts:
        assert text in str(error), str(error)


@pytest.mark.parametrize(
    ("value", "expected"), [(np.float64(93.5), 93.5), (np.int64(93), 93.0), (torch.tensor(93.5), 93.5)]
)
def test_a_numpy_or_tensor_scalar_accuracy_is_accepted_as_a_float(value, expected) -> None:
    slot = stage_slot("training")
    slot.record_accuracy(value)
    assert slot.metrics.current_accuracy == expected and type(slot.metrics.current_accuracy) is float


# ---- forward with an alpha override while the seed ramps down ----------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        torch.ones(2, 1),  # wrong number of dims
        torch.ones(3, 1, 1, 1),  # wrong batch
        torch.ones(2, 8, 3, 3, 1),  # too many dims
        torch.ones((2, 1, 1, 1), dtype=torch.int64),  # not floating
        torch.ones((), dtype=torch.bool),
        torch.ones((2, 1, 1, 1), dtype=torch.complex64),
        torch.empty(2, 1, 1, 1, device="meta"),  # another device
        torch.ones(2, 1).to_sparse(),
        0.5,  # not a tensor
        np.ones((2, 1, 1, 1)),
    ],
    ids=["2-d", "batch-3", "5-d", "int64", "bool", "complex", "meta", "sparse", "float", "numpy"],
)
def test_a_bad_alpha_override_is_refused_while_ramping_down_and_nothing_is_recorded(override) -> None:
    slot = stage_slot("blending_down")
    assert slot.schedule.mode.name == "DOWN"
    x = example(slot)
    error = _unchanged(slot, lambda: slot(x, alpha_override=override))
    assert "alpha_override" in str(error)
    # nothing recorded: the next activity reading sees no seed output from the rejected call
    slot.record_accuracy(50.0)
    assert slot.state.seed is not None and slot.state.seed.health_issues == ()


def test_a_good_alpha_override_while_ramping_down_is_used() -> None:
    slot = stage_slot("blending_down")
    x = example(slot)
    assert torch.equal(slot(x, alpha_override=torch.zeros(())), x)


# ---- constructor arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "texts"),
    [
        ({"activity_decay": "0.5"}, ("activity_decay", "'0.5'", "[0.0, 1.0)")),
        ({"activity_decay": HUGE}, ("activity_decay", HUGE_SHOWN)),
        ({"auto_advance": 5}, ("auto_advance", "5", "GateLevel")),
        ({"auto_advance": [1, 2]}, ("auto_advance", "[1, 2]", "GateLevel")),
        ({"auto_advance": "G1"}, ("auto_advance", "'G1'")),
        ({"auto_advance": (GateLevel.G5,)}, ("auto_advance", "G5")),
        ({"isolate_blending": "no"}, ("isolate_blending", "'no'", "True or False")),
        ({"isolate_blending": 0}, ("isolate_blending", "0", "True or False")),
        ({"dim": MAX_DIM + 1}, ("dim", str(MAX_DIM + 1), str(MAX_DIM))),
        ({"dim": HUGE}, ("dim", HUGE_SHOWN)),
        ({"embargo_epochs": HUGE}, ("embargo_epochs", HUGE_SHOWN)),
        ({"max_seed_params": HUGE}, ("max_seed_params", HUGE_SHOWN)),
        ({"gates": "strict"}, ("gates", "'strict'", "QualityGates")),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_a_bad_slot_argument_is_refused_naming_it(arguments: dict[str, Any], texts) -> None:
    base: dict[str, Any] = {"topology": "cnn", "dim": 8}
    rng = torch.get_rng_state()
    with pytest.raises(LifecycleError) as info:
        SeedSlot("s", **{**base, **arguments})
    assert torch.equal(rng, torch.get_rng_state())
    for text in texts:
        assert text in str(info.value), str(info.value)


def test_the_widest_slot_reloads_its_own_checkpoint() -> None:
    wide = SeedSlot("w", topology="cnn", dim=MAX_DIM)
    state = wide.state_dict()
    fresh = SeedSlot("w", topology="cnn", dim=MAX_DIM)
    fresh.load_state_dict(state)
    assert fresh.lifecycle_text() == wide.lifecycle_text()


@pytest.mark.parametrize(
    ("overrides", "texts"),
    [
        ({"min_activity": HUGE}, ("min_activity", HUGE_SHOWN)),
        ({"min_activity": float("nan")}, ("min_activity", "nan")),
        ({"min_activity": -1e-3}, ("min_activity", "-0.001")),
        ({"min_training_improvement": HUGE}, ("min_training_improvement", HUGE_SHOWN, "percentage points")),
        ({"min_fossilize_contribution": 1e9}, ("min_fossilize_contribution", "percentage points")),
        ({"min_training_evaluations": HUGE}, ("min_training_evaluations", HUGE_SHOWN)),
        ({"min_training_evaluations": 2.0}, ("min_training_evaluations", "2.0")),
        ({"alpha_tolerance": np.array([0.1, 0.2])}, ("alpha_tolerance", "shape (2,)")),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_a_bad_gate_threshold_is_refused_naming_it(overrides, texts) -> None:
    with pytest.raises(LifecycleError) as info:
        QualityGates("strict", **overrides)
    for text in texts:
        assert text in str(info.value), str(info.value)
    with pytest.raises(LifecycleError):
        GateThresholds(**overrides)


def test_numpy_thresholds_are_stored_as_python_numbers() -> None:
    gates = QualityGates("strict", min_activity=np.float32(0.25), min_training_evaluations=4)
    assert type(gates.thresholds.min_activity) is float and gates.thresholds.min_activity == 0.25
    with pytest.raises(LifecycleError, match="unknown gate policy"):
        QualityGates(np.array(["strict"]))  # type: ignore[arg-type]


def test_a_refused_germination_leaves_the_slot_and_rng_alone() -> None:
    slot = stage_slot("dormant")
    error = _unchanged(slot, lambda: slot.germinate("conv_light", curve="cosine"))  # type: ignore[arg-type]
    assert "AlphaCurve.COSINE" in str(error)
    assert slot.stage is SeedStage.DORMANT
    slot.germinate("conv_light", curve=AlphaCurve.COSINE)
    assert slot.stage is SeedStage.GERMINATED
