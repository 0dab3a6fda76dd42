"""The demo's three training runs: the grown model, the host alone, and a static model.

* **grown**: the host inside a :class:`~esper_core.model.MorphogeneticModel`, with the
  heuristic controller germinating, advancing and pruning seeds, the optimizer binding
  adding and removing their parameters, and the governor guarding every step;
* **host alone**: the same host (same initial weights, same batches), no slots;
* **static**: the grown model's final architecture (host plus every seed that is still
  there at the end, fully blended in) trained from scratch for the same epochs, so it has
  exactly the grown model's final parameter count.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import torch
from torch import Tensor, nn

from esper_core.control import Decision, HeuristicController
from esper_core.demo.tasks import Task
from esper_core.governor import Governor
from esper_core.hosts import SegmentedHost, unique_param_count
from esper_core.model import MorphogeneticModel
from esper_core.optim import OptimizerBinding
from esper_core.registry import create_blueprint

__all__ = ["RunResult", "SeedRecord", "StaticGrownModel", "train_grown", "train_plain"]

EpochCallback = Callable[[str, int, Mapping[str, float]], None]


@attrs.frozen
class SeedRecord:
    """A seed that exists in the grown model at the end (what the static model copies)."""

    slot_id: str
    blueprint: str
    options: Mapping[str, object]


@attrs.frozen
class RunResult:
    """One run's parameter count and per-epoch validation metrics."""

    label: str
    params: int
    history: list[dict[str, float]]
    alphas: dict[str, list[float]] = attrs.field(factory=dict)
    decisions: list[Decision] = attrs.field(factory=list)
    seeds: list[SeedRecord] = attrs.field(factory=list)
    governor: list[str] = attrs.field(factory=list)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]


class StaticGrownModel(nn.Module):
    """A host with fixed extra modules applied at injection points (no lifecycle, alpha 1)."""

    def __init__(self, host: SegmentedHost, modules: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.host = host
        self.extra = nn.ModuleDict(dict(modules))
        self._route = [s for s in host.execution_order() if s in self.extra]

    def forward(self, x: Tensor) -> Tensor:
        h, prev = x, None
        for slot_id in self._route:
            h = self.extra[slot_id](self.host.forward_segment(h, prev, slot_id))
            prev = slot_id
        return self.host.forward_segment(h, prev, None)


def _fit_epoch(
    model: nn.Module, task: Task, epoch: int, optimizer: torch.optim.Optimizer, governor: Governor | None
) -> None:
    model.train()
    for x, y in task.train_batches(epoch):
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model(x), y)
        replay = lambda x=x, y=y: task.loss(model(x), y)  # noqa: E731 - reruns this step's forward
        if governor is not None and not governor.check_loss(loss, replay).ok:
            continue
        loss.backward()
        if governor is not None and not governor.check_gradients(replay).ok:
            continue
        optimizer.step()


def train_plain(
    label: str, model: nn.Module, task: Task, epochs: int, on_epoch: EpochCallback | None = None
) -> RunResult:
    """Train ``model`` with AdamW for ``epochs`` epochs, recording validation metrics each epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.lr)
    history = []
    for epoch in range(epochs):
        _fit_epoch(model, task, epoch, optimizer, None)
        model.eval()
        history.append(task.metrics(model))
        if on_epoch is not None:
            on_epoch(label, epoch, history[-1])
    return RunResult(label, unique_param_count(model), history)


def train_grown(
    task: Task,
    epochs: int,
    host: SegmentedHost,
    *,
    on_epoch: EpochCallback | None = None,
    on_event: Callable[[int, object], None] | None = None,
) -> tuple[RunResult, MorphogeneticModel, HeuristicController]:
    """Train ``host`` inside a morphogenetic model with the controller growing seeds."""
    model = MorphogeneticModel(host, gates=task.gates)
    optimizer = torch.optim.AdamW(model.host.parameters(), lr=task.lr)
    binding = OptimizerBinding(optimizer, model.slots, lr=task.seed_lr)
    controller = HeuristicController(model.slots, task.controller(model.host_param_count))
    governor = Governor(model, model.slots)
    epoch_box = [0]
    if on_event is not None:
        for slot in model.slots.values():
            slot.add_observer(lambda event: on_event(epoch_box[0], event))
    history: list[dict[str, float]] = []
    alphas: dict[str, list[float]] = {s: [] for s in model.slot_ids}
    for epoch in range(epochs):
        epoch_box[0] = epoch
        _fit_epoch(model, task, epoch, optimizer, governor)
        evaluation = model.evaluate(task.val_batches, task.score)
        controller.step(evaluation, epoch)
        model.eval()
        metrics = task.metrics(model)
        history.append(metrics)
        for slot_id in model.slot_ids:
            alphas[slot_id].append(float(model.slots[slot_id].alpha))
        if on_epoch is not None:
            on_epoch("grown", epoch, metrics)
    binding.close()
    seeds = [
        SeedRecord(s, model.slots[s].report().blueprint, dict(model.slots[s].report().options))
        for s in model.live_slots()
    ]
    result = RunResult(
        "grown",
        model.total_param_count,
        history,
        alphas=alphas,
        decisions=list(controller.decisions),
        seeds=seeds,
        governor=[v.reason for v in governor.interventions],
    )
    return result, model, controller


def build_static(
    task: Task, seeds: list[SeedRecord], make_host: Callable[[], SegmentedHost]
) -> StaticGrownModel:
    """The grown model's final architecture, freshly initialised."""
    host = make_host()
    dims = {p.slot_id: p.dim for p in host.injection_points()}
    modules = {
        r.slot_id: create_blueprint(task.topology, r.blueprint, dims[r.slot_id], **r.options) for r in seeds
    }
    return StaticGrownModel(host, modules)
