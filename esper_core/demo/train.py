"""The demo's training runs: the grown model, the host alone, and a static model.

* **grown**: the host inside a :class:`~esper_core.model.MorphogeneticModel`, with the
  heuristic controller germinating, advancing and pruning seeds, the optimizer binding
  adding and removing their parameters, and the governor guarding every step;
* **host alone**: the same host (same initial weights, same batches), no slots;
* **static**: the grown model's final architecture (host plus every seed that is still
  there at the end, fully blended in) trained from scratch for the same epochs, so it has
  exactly the grown model's final parameter count.

Epochs are numbered from 1; epoch 0 is the evaluation at initialisation. Each run records
per epoch the validation metrics, the cumulative training FLOPs and samples, and the
parameter count (see :mod:`esper_core.demo.compute`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from esper_core.control import HeuristicController, Outcome, SlotVerbs
from esper_core.demo.compute import TRAIN_FLOPS_PER_FORWARD, SeedCosts, forward_flops, point_shapes
from esper_core.demo.diagnosis import NoGermination, why_no_germination
from esper_core.demo.settings import DemoSettings
from esper_core.demo.tasks import Task
from esper_core.governor import Governor
from esper_core.hosts import SegmentedHost, unique_param_count
from esper_core.model import MorphogeneticModel
from esper_core.optim import OptimizerBinding
from esper_core.registry import create_blueprint

__all__ = ["RunResult", "SeedRecord", "StaticGrownModel", "build_static", "train_grown", "train_plain"]

#: ``on_epoch(label, epoch, metrics)`` after each epoch's evaluation (epoch 0 included).
EpochCallback = Callable[[str, int, Mapping[str, float]], None]


@attrs.frozen
class SeedRecord:
    """A seed that exists in the grown model at the end (what the static model copies)."""

    slot_id: str
    blueprint: str
    options: Mapping[str, object]


@attrs.frozen
class RunResult:
    """One run: per-epoch history (epoch 0 = initialisation) and compute totals.

    Each history entry has ``epoch``, the task's metrics, ``train_flops`` and ``samples``
    (cumulative) and ``params`` (at the end of that epoch).
    """

    label: str
    params: int
    history: list[dict[str, float]]
    eval_flops: int = 0
    alphas: dict[str, list[float]] = attrs.field(factory=dict)
    seeds: list[SeedRecord] = attrs.field(factory=list)
    outcomes: list[Outcome] = attrs.field(factory=list)
    governor: list[str] = attrs.field(factory=list)
    no_germination: NoGermination | None = None
    """Why a grown model germinated no seed (``None``: it germinated one, or not a grown model)."""

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]

    @property
    def train_flops(self) -> int:
        return int(self.history[-1]["train_flops"])


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


class _Ledger:
    """Cumulative training FLOPs and samples of one run, and its per-epoch history."""

    def __init__(self) -> None:
        self.flops = 0
        self.samples = 0
        self.history: list[dict[str, float]] = []

    def step(self, samples: int, forward_per_sample: int) -> None:
        self.samples += samples
        self.flops += TRAIN_FLOPS_PER_FORWARD * forward_per_sample * samples

    def close_epoch(self, epoch: int, metrics: Mapping[str, float], params: int) -> dict[str, float]:
        entry = {
            "epoch": epoch,
            **metrics,
            "train_flops": self.flops,
            "samples": self.samples,
            "params": params,
        }
        self.history.append(entry)
        return entry


def _fit_epoch(
    model: nn.Module,
    task: Task,
    epoch: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    ledger: _Ledger,
    cost: Callable[[], int],
    governor: Governor | None = None,
) -> None:
    model.train()
    for x, y in task.train_batches(epoch, batch_size):
        # Charged before the step: what runs in this forward (a skipped step still spent it).
        ledger.step(x.shape[0], cost())
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
    label: str,
    model: nn.Module,
    task: Task,
    settings: DemoSettings,
    on_epoch: EpochCallback | None = None,
) -> RunResult:
    """Train ``model`` with AdamW at ``settings.lr`` for ``settings.epochs`` epochs."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    per_sample = forward_flops(model, task.example)
    params = unique_param_count(model)
    ledger = _Ledger()

    def close(epoch: int) -> None:
        model.eval()
        entry = ledger.close_epoch(epoch, task.evaluate(model), params)
        if on_epoch is not None:
            on_epoch(label, epoch, entry)

    close(0)
    for epoch in range(1, settings.epochs + 1):
        _fit_epoch(model, task, epoch, settings.batch_size, optimizer, ledger, lambda: per_sample)
        close(epoch)
    return RunResult(label, params, ledger.history)


def train_grown(
    task: Task,
    settings: DemoSettings,
    strategy: str,
    host: SegmentedHost,
    *,
    label: str = "grown",
    on_epoch: EpochCallback | None = None,
    on_event: Callable[[int, object], None] | None = None,
) -> tuple[RunResult, MorphogeneticModel]:
    """Train ``host`` inside a morphogenetic model with the controller growing seeds.

    ``on_event(epoch, event)`` receives every lifecycle event with the number of the epoch
    whose end-of-epoch step (or, for the governor, whose training) caused it, and each
    :class:`~esper_core.control.Refusal` (a candidate the blueprint made fail) of that step. Epoch ``k``'s
    metrics, parameter count and alphas are taken after its training and before its
    lifecycle step; the result's ``params`` is the model's count after the last step.
    """
    model = MorphogeneticModel(host, gates=settings.gates())
    host_per_sample = forward_flops(model.host, task.example)
    costs = SeedCosts(model.slots, point_shapes(model.host, task.example))
    optimizer = torch.optim.AdamW(model.host.parameters(), lr=settings.lr)
    binding = OptimizerBinding(optimizer, model.slots, lr=settings.seed_lr)
    refusals = _Refusals(on_event)
    controller = HeuristicController(
        model.slots,
        settings.controller_config(model.host_param_count, strategy),
        lifecycle=_InOrder(SlotVerbs(model.slots), refusals),
    )
    refusals.controller = controller
    governor = Governor(model, model.slots)
    epoch_box = [0]
    observers: list[tuple[Any, Any]] = []
    if on_event is not None:
        for slot in model.slots.values():
            observer = _forward_events(on_event, epoch_box)
            slot.add_observer(observer)
            observers.append((slot, observer))
    ledger = _Ledger()
    eval_flops = 0
    val_samples = sum(x.shape[0] for x, _ in task.val_batches)
    alphas: dict[str, list[float]] = {s: [] for s in model.slot_ids}

    def close(epoch: int) -> None:
        # Measured after the epoch's training and before the lifecycle step it informs, so
        # the numbers describe the model that was trained (an alpha raised by the step
        # has not been trained with yet); alpha is the value the epoch trained with.
        model.eval()
        entry = ledger.close_epoch(epoch, task.evaluate(model), model.total_param_count)
        for slot_id in model.slot_ids:
            alphas[slot_id].append(float(model.slots[slot_id].alpha))
        if on_epoch is not None:
            on_epoch(label, epoch, entry)

    close(0)
    try:
        for epoch in range(1, settings.epochs + 1):
            epoch_box[0] = epoch
            _fit_epoch(
                model,
                task,
                epoch,
                settings.batch_size,
                optimizer,
                ledger,
                lambda: host_per_sample + costs.running(),
                governor,
            )
            evaluation = model.evaluate(task.val_batches, task.score)
            # One full forward per configuration: all seeds, then each blended seed at alpha 0.
            configurations = 1 + len(evaluation.contributions)
            eval_flops += configurations * val_samples * (host_per_sample + costs.running())
            close(epoch)
            controller.step(evaluation, epoch)
            refusals.flush(epoch)
    finally:
        binding.close()
        for slot, observer in observers:
            slot.remove_observer(observer)
    seeds = [
        SeedRecord(s, model.slots[s].report().blueprint, dict(model.slots[s].report().options))
        for s in model.live_slots()
    ]
    no_germination = None
    if not any(d.action == "germinate" for d in controller.decisions):
        # Nothing germinated, so every slot is dormant and nothing was tried: the candidates
        # now are the ones every step of the run saw.
        no_germination = why_no_germination(
            controller.history, controller.config, len(controller.candidates())
        )
    result = RunResult(
        label,
        model.total_param_count,
        ledger.history,
        eval_flops=eval_flops,
        alphas=alphas,
        seeds=seeds,
        outcomes=list(controller.outcomes),
        governor=[v.reason for v in governor.interventions],
        no_germination=no_germination,
    )
    return result, model


class _Refusals:
    """Passes the controller's new :class:`~esper_core.control.Refusal` records to ``on_event``."""

    def __init__(self, on_event: Callable[[int, object], None] | None) -> None:
        self.on_event = on_event
        self.controller: HeuristicController | None = None
        self.seen = 0

    def flush(self, epoch: int | None = None) -> None:
        if self.controller is None:
            return
        new = self.controller.refusals[self.seen :]
        self.seen += len(new)
        for refusal in new:
            if self.on_event is not None:
                self.on_event(refusal.epoch if epoch is None else epoch, refusal)


class _InOrder:
    """The slots' own verbs; before each germination the refusals recorded so far go out, so
    the event lines keep the order in which the controller tried its candidates."""

    def __init__(self, verbs: SlotVerbs, refusals: _Refusals) -> None:
        self.verbs, self.refusals = verbs, refusals
        self.advance, self.prune, self.step_epoch = verbs.advance, verbs.prune, verbs.step_epoch

    def germinate(self, slot_id: str, blueprint: str, **kwargs: Any) -> None:
        self.refusals.flush()
        self.verbs.germinate(slot_id, blueprint, **kwargs)


def _forward_events(
    on_event: Callable[[int, object], None], epoch_box: list[int]
) -> Callable[[object], None]:
    def observe(event: object) -> None:
        on_event(epoch_box[0], event)

    return observe


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
