"""The demo's seed records: two contributions with two names, and outcomes tied to their seeds.

Real slots emit the events (toy blueprints, permissive gates); the tracker and
``outcome_records`` turn them into what ``report.json`` holds. The reported instance: a seed
fossilized at +7.35 pp whose leave-one-out contribution on the final model was 18.93 pp was
reported as ``contribution`` twice, with the two different values.
"""

from __future__ import annotations

import torch

from esper_core.control import Outcome
from esper_core.demo.report import SeedTracker, outcome_records, seed_counts
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import MorphogeneticModel
from esper_core.stages import SeedStage

from .conftest import drive


def _tracked_model() -> tuple[MorphogeneticModel, SeedTracker, list[int]]:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(3, in_channels=1, base_channels=4), gates=QualityGates("permissive"))
    tracker, epoch = SeedTracker(), [1]
    for slot in model.slots.values():
        slot.add_observer(lambda event: tracker.on_event(epoch[0], event))
    return model, tracker, epoch


def test_contribution_at_decision_and_at_end_are_recorded_apart() -> None:
    model, tracker, epoch = _tracked_model()
    kept, dropped, pending = model.slots["r0c0"], model.slots["r1c0"], model.slots["r0c1"]
    kept.germinate("toy_scale", seed_id="kept")
    drive(kept, SeedStage.FOSSILIZED, contribution=7.35)
    epoch[0] = 5
    dropped.germinate("toy_scale", seed_id="dropped")
    drive(dropped, SeedStage.TRAINING)
    dropped.prune("never blended in", "controller")
    pending.germinate("toy_scale", seed_id="pending")
    drive(pending, SeedStage.BLENDING)

    line = next(e["detail"] for e in tracker.events if e["event"] == "SeedFossilized")
    assert line == "r0c0: fossilized toy_scale (contribution +7.35 pp)"
    records = {
        r["seed_id"]: r
        for r in tracker.records({"r0c0": 18.93, "r0c1": -0.5}, {"r0c0": 1.0, "r1c0": 0.0, "r0c1": 0.25})
    }
    assert "contribution" not in records["kept"]
    assert (records["kept"]["contribution_at_decision"], records["kept"]["contribution_at_end"]) == (
        7.35,
        18.93,
    )
    assert records["kept"]["alpha_at_end"] == 1.0 and records["kept"]["params_added"] == 4
    assert records["dropped"]["contribution_at_decision"] is None  # pruned before it was ever measured
    assert records["dropped"]["contribution_at_end"] is None and records["dropped"]["alpha_at_end"] is None
    assert records["dropped"]["params_added"] == 0 and records["dropped"]["reason"] == "never blended in"
    assert records["pending"]["final_stage"] == "BLENDING"
    assert records["pending"]["contribution_at_decision"] is None  # no decision yet
    assert (records["pending"]["contribution_at_end"], records["pending"]["alpha_at_end"]) == (-0.5, 0.25)
    assert seed_counts(list(records.values())) == {"germinated": 3, "kept": 1, "on_probation": 1, "pruned": 1}

    # The controller's outcomes, in the order the seeds finished; it counts "never measured" as 0.0.
    outcomes = [
        Outcome("r0c0", "toy_scale", 4, 7.35, "fossilized", 4),
        Outcome("r1c0", "toy_scale", 4, 0.0, "pruned", 6),
    ]
    assert outcome_records(outcomes, list(records.values())) == [
        {
            "seed_id": "kept",
            "slot_id": "r0c0",
            "blueprint": "toy_scale",
            "params": 4,
            "fate": "fossilized",
            "epoch": 4,
            "contribution_at_decision": 7.35,
            "gain_per_param": 7.35 / 4,
        },
        {
            "seed_id": "dropped",
            "slot_id": "r1c0",
            "blueprint": "toy_scale",
            "params": 4,
            "fate": "pruned",
            "epoch": 6,
            "contribution_at_decision": None,
            "gain_per_param": 0.0,
        },
    ]


def test_a_slots_outcomes_follow_its_seeds_in_order() -> None:
    seeds = [
        {"seed_id": "a", "slot_id": "r0c0", "final_stage": "PRUNED", "contribution_at_decision": -1.0},
        {"seed_id": "b", "slot_id": "r0c0", "final_stage": "FOSSILIZED", "contribution_at_decision": 2.0},
        {"seed_id": "c", "slot_id": "r1c0", "final_stage": "TRAINING", "contribution_at_decision": None},
    ]
    outcomes = [
        Outcome("r0c0", "x", 2, -1.0, "pruned", 3),
        Outcome("r0c0", "y", 2, 2.0, "fossilized", 9),
    ]
    assert [r["seed_id"] for r in outcome_records(outcomes, seeds)] == ["a", "b"]
