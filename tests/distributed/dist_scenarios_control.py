"""Scenarios: the heuristic controller on every rank, its decisions going through rank 0.

Each rank validates on its own shard, so each rank's evaluation differs. Averaged over
ranks with ``reduce_evaluation``, every rank's controller makes the same calls and the
model stays identical everywhere; left per rank, the controllers disagree and the
lifecycle stops both ranks with an error naming each rank's call (never a hang).
"""

from __future__ import annotations

import torch

from esper_core.control import ControllerConfig, HeuristicController
from esper_core.distributed import DistributedLifecycle, reduce_evaluation
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import Evaluation, MorphogeneticModel

# Rank r's validation score at each epoch: rank 0 plateaus from epoch 2, rank 1 keeps improving.
SCORES = {
    0: [50.0, 60.0, 60.0, 60.0, 60.0, 60.0, 60.0, 60.0],
    1: [40.0, 45.0, 51.0, 55.0, 61.0, 65.0, 71.0, 75.0],
}
SAMPLES = {0: 390, 1: 10}  # rank 0's plateau dominates the weighted mean


def _setup(group) -> tuple[MorphogeneticModel, DistributedLifecycle, HeuristicController]:
    torch.manual_seed(0)  # the same host on every rank
    model = MorphogeneticModel(
        CNNHost(3, in_channels=1, n_blocks=2, base_channels=4), gates=QualityGates("permissive")
    )
    lifecycle = DistributedLifecycle(model, group=group, timeout=10)
    config = ControllerConfig(
        param_budget=100, plateau_window=2, warmup_epochs=2, ramp_epochs=2, include=("dist_probe",)
    )
    return model, lifecycle, HeuristicController(model.slots, config, lifecycle=lifecycle)


def _local(model: MorphogeneticModel, rank: int, epoch: int) -> Evaluation:
    live = {s: 1.0 + rank for s, slot in model.slots.items() if slot.alpha > 0}
    return Evaluation(SCORES[rank][epoch], live, samples=SAMPLES[rank])


def controller_agrees(rank: int, group) -> dict:
    model, lifecycle, controller = _setup(group)
    seen = []
    for epoch in range(len(SCORES[0])):
        local = _local(model, rank, epoch)
        shared = reduce_evaluation(local, group=group)
        seen.append(
            {
                "local": [local.score, dict(local.contributions)],
                "shared": [shared.score, dict(shared.contributions), shared.samples],
            }
        )
        controller.step(shared, epoch)
    lifecycle.close()
    return {
        "seen": seen,
        "decisions": [[d.epoch, d.slot_id, d.action, d.detail] for d in controller.decisions],
        "stages": {s: slot.stage.name for s, slot in model.slots.items()},
        "seed_values": [float(p.sum()) for slot in model.slots.values() for p in slot.seed_parameters()],
        "overruled": lifecycle.overruled,
    }


def controller_disagrees(rank: int, group) -> dict:
    model, lifecycle, controller = _setup(group)
    error = None
    for epoch in range(len(SCORES[0])):
        try:
            controller.step(_local(model, rank, epoch), epoch)  # per-rank numbers: not reduced
        except Exception as exc:  # the fact under test is the error itself
            error = {"type": type(exc).__name__, "message": str(exc), "epoch": epoch}
            break
    lifecycle.close()
    return {"error": error, "stages": {s: slot.stage.name for s, slot in model.slots.items()}}


def reduce_mismatch(rank: int, group) -> dict:
    evaluation = Evaluation(50.0, {"r0c0": 1.0} if rank == 0 else {}, samples=5)
    try:
        reduce_evaluation(evaluation, group=group)
    except Exception as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"error": None}


SCENARIOS = [
    ("controller_agrees", controller_agrees),
    ("controller_disagrees", controller_disagrees),
    ("reduce_mismatch", reduce_mismatch),
]
