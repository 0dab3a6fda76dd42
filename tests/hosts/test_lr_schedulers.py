"""Every torch LR scheduler keeps working while seeds join and leave (issue 15, item 8).

The kind: a param group that appears after a scheduler was built breaks it. The classes
are enumerated from ``torch.optim.lr_scheduler`` itself, so a scheduler added to torch
fails the first test until it has a recipe here. For each class:

* created after the binding: seeds join, leave and join again mid-run; every group's lr
  equals, step for step, that of a plain optimizer with the same groups from the start
  (a seed group is scheduled exactly like the others, with its own base lr);
* created before the binding and passed as ``schedulers=``: the seed group follows the
  reference group's schedule scaled to its own base lr (affine around ``eta_min``);
  not passed: a clear error, nothing changed;
* checkpoint resume (``torch.save``/``torch.load(weights_only=True)``): the resumed run's
  learning rates equal the uninterrupted run's; also the documented
  ``CosineAnnealingLR(..., last_epoch=k - 1)`` recipe;
* a trainer that owns optimizer and scheduler, with a callback that binds and germinates
  mid-run.
"""

from __future__ import annotations

import inspect
import io
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn import functional as F
from torch.optim import lr_scheduler as L

from esper_core.checkpoint import load_checkpoint
from esper_core.errors import HostError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import MorphogeneticModel
from esper_core.optim import SLOT_KEY, OptimizerBinding
from esper_core.stages import SeedStage

from .conftest import drive

HOST_LR, SEED_LR = 0.1, 0.03
STEPS = 14
JOIN, LEAVE, REJOIN = 3, 7, 10
ETA = 1e-3

Recipe = Callable[[torch.optim.Optimizer], Any]
RECIPES: dict[str, Recipe] = {
    "LambdaLR": lambda o: L.LambdaLR(o, lambda e: 0.9**e),
    "MultiplicativeLR": lambda o: L.MultiplicativeLR(o, lambda e: 0.95),
    "StepLR": lambda o: L.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda o: L.MultiStepLR(o, milestones=[2, 5, 9], gamma=0.5),
    "ConstantLR": lambda o: L.ConstantLR(o, factor=0.5, total_iters=4),
    "LinearLR": lambda o: L.LinearLR(o, start_factor=0.2, total_iters=6),
    "ExponentialLR": lambda o: L.ExponentialLR(o, gamma=0.9),
    "PolynomialLR": lambda o: L.PolynomialLR(o, total_iters=12, power=2.0),
    "CosineAnnealingLR": lambda o: L.CosineAnnealingLR(o, T_max=10, eta_min=ETA),
    "CosineAnnealingWarmRestarts": lambda o: L.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2, eta_min=ETA),
    "CyclicLR": lambda o: L.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3),
    "OneCycleLR": lambda o: L.OneCycleLR(o, max_lr=0.2, total_steps=40),
    "SequentialLR": lambda o: L.SequentialLR(
        o,
        [L.LinearLR(o, start_factor=0.1, total_iters=3), L.CosineAnnealingLR(o, T_max=8, eta_min=ETA)],
        milestones=[4],
    ),
    "ChainedScheduler": lambda o: L.ChainedScheduler(
        [L.ConstantLR(o, factor=0.5, total_iters=3), L.ExponentialLR(o, gamma=0.9)]
    ),
    "ReduceLROnPlateau": lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=1),
}
ABSTRACT = {"LRScheduler", "_LRScheduler"}


def torch_schedulers() -> set[str]:
    return {
        name
        for name, cls in vars(L).items()
        if inspect.isclass(cls) and issubclass(cls, L.LRScheduler) and name not in ABSTRACT
    }


def test_every_torch_scheduler_has_a_recipe() -> None:
    missing = torch_schedulers() - set(RECIPES)
    assert not missing, f"torch ships schedulers without a test recipe here: {sorted(missing)}"
    assert len(RECIPES) >= 15


def _step(scheduler: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "lr_scheduler.step() before optimizer.step()"
        if isinstance(scheduler, L.ReduceLROnPlateau):
            scheduler.step(1.0)  # a plateau: a reduction every other step
        else:
            scheduler.step()


def _model() -> MorphogeneticModel:
    torch.manual_seed(0)
    host = CNNHost(3, in_channels=1, base_channels=4)
    return MorphogeneticModel(host, gates=QualityGates("permissive"))


def _optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=HOST_LR, momentum=0.9)


def _lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [float(g["lr"]) for g in optimizer.param_groups]


class Run:
    """Train a CNN host; a seed joins at JOIN, is pruned at LEAVE and a new one joins at REJOIN."""

    def __init__(self, name: str, *, before_binding: bool = False) -> None:
        self.model = _model()
        self.optimizer = _optimizer(self.model.host.parameters())
        if before_binding:
            self.scheduler = RECIPES[name](self.optimizer)
            self.binding = OptimizerBinding(self.optimizer, self.model.slots, lr=SEED_LR, schedulers=[])
        else:
            self.binding = OptimizerBinding(self.optimizer, self.model.slots, lr=SEED_LR)
            self.scheduler = RECIPES[name](self.optimizer)
        self.history: list[list[float]] = []
        self.step_index = 0
        self.data = torch.Generator().manual_seed(1)

    def lifecycle(self) -> None:
        slot = self.model.slots["r0c1"]
        if self.step_index == JOIN:
            self.model.germinate("r0c1", "toy_conv")
            drive(slot, SeedStage.BLENDING)
            slot.step_epoch()
        elif self.step_index == LEAVE:
            self.model.prune("r0c1", "test", "test")
        elif self.step_index == REJOIN:
            self.model.germinate("r1c1", "toy_scale")
            drive(self.model.slots["r1c1"], SeedStage.BLENDING)

    def step(self) -> None:
        self.lifecycle()
        x = torch.randn(4, 1, 8, 8, generator=self.data)
        y = torch.randint(0, 3, (4,), generator=self.data)
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(x), y).backward()
        self.optimizer.step()
        _step(self.scheduler)
        self.history.append(_lrs(self.optimizer))
        self.step_index += 1


def _control(name: str, n_slots: int) -> list[list[float]]:
    """The same scheduler on a plain optimizer that has a group per slot from the start."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(1 + n_slots)]
    groups = [{"params": [params[0]]}] + [{"params": [p], "lr": SEED_LR} for p in params[1:]]
    optimizer = _optimizer(groups)
    scheduler = RECIPES[name](optimizer)
    history = []
    for _ in range(STEPS):
        for p in params:
            p.grad = torch.zeros(1)
        optimizer.step()
        _step(scheduler)
        history.append(_lrs(optimizer))
    return history


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_scheduler_created_after_the_binding_schedules_seed_groups_like_the_others(name: str) -> None:
    run = Run(name)
    for _ in range(STEPS):
        run.step()
    assert run.model.slots["r1c1"].stage is SeedStage.BLENDING
    assert run.history == _control(name, len(run.model.slot_ids))
    assert len({row[2] for row in run.history}) > 1, "the schedule must move for this test to mean anything"


def _floor(scheduler: Any) -> float:
    if isinstance(scheduler, L.SequentialLR):  # the active child's floor
        milestones = scheduler._milestones
        active = sum(1 for m in milestones if m <= scheduler.last_epoch)
        return _floor(scheduler._schedulers[active])
    return float(getattr(scheduler, "eta_min", 0.0))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_scheduler_created_before_the_binding_is_extended(name: str) -> None:
    model = _model()
    optimizer = _optimizer(model.host.parameters())
    scheduler = RECIPES[name](optimizer)
    for _ in range(JOIN):
        optimizer.step()
        _step(scheduler)
    ref_base = optimizer.param_groups[0].get("initial_lr")
    ref_base = scheduler.base_lrs[0] if hasattr(scheduler, "base_lrs") else ref_base
    if isinstance(scheduler, (L.SequentialLR, L.ChainedScheduler)):
        ref_base = scheduler._schedulers[0].base_lrs[0]
    binding = OptimizerBinding(optimizer, model.slots, lr=SEED_LR, schedulers=[scheduler])
    model.germinate("r0c1", "toy_conv")
    index = model.slot_ids.index("r0c1") + 1
    assert binding.group("r0c1") is optimizer.param_groups[index]
    joined = None
    for step in range(JOIN, STEPS):
        ref, new = optimizer.param_groups[0]["lr"], optimizer.param_groups[index]["lr"]
        if isinstance(scheduler, L.ReduceLROnPlateau):  # no base lrs: joins at its own lr
            joined = joined or (new, ref)
            expected = joined[0] * ref / joined[1]
        else:
            floor = _floor(scheduler)
            expected = floor + (ref - floor) * (SEED_LR - floor) / (ref_base - floor)
        assert math.isclose(new, expected, rel_tol=1e-9, abs_tol=1e-12), (step, new, expected)
        assert len(scheduler.get_last_lr()) == len(optimizer.param_groups)
        x = torch.randn(4, 1, 8, 8)
        optimizer.zero_grad()
        F.cross_entropy(model(x), torch.randint(0, 3, (4,))).backward()
        optimizer.step()
        _step(scheduler)
    if name != "ReduceLROnPlateau":  # SEED_LR itself when joining at rest; then the schedule moves it
        assert len({round(float(g["lr"]), 12) for g in optimizer.param_groups[1:]}) == 1


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_without_lr_a_passed_scheduler_schedules_seeds_exactly_like_the_host(name: str) -> None:
    # The reported instance: OneCycleLR starts from max_lr / div_factor, not the optimizer's lr,
    # so a default lr of "the optimizer's" made seed groups 25x the host's schedule.
    model = _model()
    optimizer = _optimizer(model.host.parameters())
    scheduler = RECIPES[name](optimizer)
    for _ in range(JOIN):
        optimizer.step()
        _step(scheduler)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # k = 1: nothing to warn about
        OptimizerBinding(optimizer, model.slots, schedulers=[scheduler])
    model.germinate("r0c1", "toy_conv")
    for _ in range(JOIN, STEPS):
        assert len({round(float(g["lr"]), 12) for g in optimizer.param_groups}) == 1, _lrs(optimizer)
        for key in ("max_lr", "initial_lr"):
            assert len({g[key] for g in optimizer.param_groups if key in g}) <= 1, key
        optimizer.step()
        _step(scheduler)


def test_an_explicit_lr_against_a_scheduler_base_other_than_the_optimizers_warns_with_k() -> None:
    model = _model()
    optimizer = _optimizer(model.host.parameters())  # lr 0.1
    scheduler = L.OneCycleLR(optimizer, max_lr=0.1, total_steps=40)  # base 0.1 / 25 = 0.004
    with pytest.warns(
        UserWarning, match=r"from base lr 0\.004, not the optimizer's lr 0\.1.*k = 0\.1 / 0\.004 = 25"
    ):
        OptimizerBinding(optimizer, model.slots, lr=HOST_LR, schedulers=[scheduler])
    assert math.isclose(optimizer.param_groups[1]["max_lr"], 25 * 0.1)  # what was asked, now said


@pytest.mark.parametrize("name", sorted(set(RECIPES) - {"ReduceLROnPlateau"}))
def test_an_existing_scheduler_that_is_not_passed_is_refused(name: str) -> None:
    model = _model()
    optimizer = _optimizer(model.host.parameters())
    scheduler = RECIPES[name](optimizer)
    with pytest.raises(HostError, match=r"scheduler is already attached.*schedulers=\[\.\.\.\]"):
        OptimizerBinding(optimizer, model.slots, lr=SEED_LR)
    assert len(optimizer.param_groups) == 1
    optimizer.step()
    _step(scheduler)  # still works


def test_a_scheduler_that_cannot_be_extended_leaves_everything_unchanged() -> None:
    model = _model()
    optimizer = _optimizer(model.host.parameters())
    good = L.ExponentialLR(optimizer, gamma=0.9)
    bad = L.StepLR(optimizer, step_size=2)
    bad.per_group_note = ["host"]  # a per-group list this library cannot know how to extend
    state = (list(good.base_lrs), list(good._last_lr))
    with pytest.raises(HostError, match=r"StepLR\.per_group_note looks like a per-group list"):
        OptimizerBinding(optimizer, model.slots, lr=SEED_LR, schedulers=[good, bad])
    assert len(optimizer.param_groups) == 1 and (good.base_lrs, good._last_lr) == (list(state[0]), state[1])
    other = _optimizer(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(HostError, match="another optimizer"):
        OptimizerBinding(optimizer, model.slots, schedulers=[L.StepLR(other, step_size=2)])
    with pytest.raises(HostError, match="appears twice"):
        OptimizerBinding(optimizer, model.slots, schedulers=[good, L.ChainedScheduler([good])])


def _round_trip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("cut", [JOIN + 2, REJOIN + 1])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_checkpoint_resume_continues_every_schedule(name: str, cut: int) -> None:
    full = Run(name)
    for _ in range(STEPS):
        full.step()
    first = Run(name)
    for _ in range(cut):
        first.step()
    checkpoint = _round_trip(
        {
            "model": first.model.state_dict(),
            "optimizer": first.optimizer.state_dict(),
            "scheduler": first.scheduler.state_dict(),
            "data": first.data.get_state(),
        }
    )
    resumed = Run(name)  # fresh model, optimizer, binding and scheduler
    load_checkpoint(resumed.model, checkpoint["model"])
    resumed.binding.sync()
    resumed.binding.load_optimizer_state(checkpoint["optimizer"])
    resumed.scheduler.load_state_dict(checkpoint["scheduler"])
    resumed.data.set_state(checkpoint["data"])
    resumed.step_index = cut
    for _ in range(cut, STEPS):
        resumed.step()
    assert first.history == full.history[:cut]
    assert resumed.history == full.history[cut:]


@pytest.mark.parametrize("name", ["LinearLR", "OneCycleLR", "SequentialLR", "CosineAnnealingWarmRestarts"])
def test_a_scheduler_built_after_loading_the_optimizer_state_resumes_from_the_wrong_lr(name: str) -> None:
    """Why docs/checkpoints.md builds the scheduler first: the other order is torch's trap."""
    cut = JOIN + 2
    first = Run(name)
    for _ in range(cut):
        first.step()
    saved = _round_trip(
        {"optimizer": first.optimizer.state_dict(), "scheduler": first.scheduler.state_dict()}
    )
    model = _model()
    optimizer = _optimizer(model.host.parameters())
    binding = OptimizerBinding(optimizer, model.slots, lr=SEED_LR)
    model.germinate("r0c1", "toy_conv")
    binding.load_optimizer_state(saved["optimizer"])
    scheduler = RECIPES[name](optimizer)  # the wrong order: after the load
    scheduler.load_state_dict(saved["scheduler"])
    assert _lrs(optimizer) != _lrs(first.optimizer)


def test_documented_cosine_resume_recipe_with_last_epoch() -> None:
    full = Run("CosineAnnealingLR")
    for _ in range(STEPS):
        full.step()
    first = Run("CosineAnnealingLR")
    k = JOIN + 2  # scheduler.step() calls made before the checkpoint
    for _ in range(k):
        first.step()
    checkpoint = _round_trip({"model": first.model.state_dict(), "optimizer": first.optimizer.state_dict()})
    model = _model()
    optimizer = _optimizer(model.host.parameters())
    binding = OptimizerBinding(optimizer, model.slots, lr=SEED_LR)
    load_checkpoint(model, checkpoint["model"])
    binding.sync()
    binding.load_optimizer_state(checkpoint["optimizer"])
    scheduler = L.CosineAnnealingLR(optimizer, T_max=10, eta_min=ETA, last_epoch=k - 1)
    assert _lrs(optimizer) == full.history[k - 1]
    for step in range(k, STEPS):
        optimizer.step()
        scheduler.step()
        assert _lrs(optimizer) == pytest.approx(full.history[step], rel=1e-12), step
    assert all(SLOT_KEY in g for g in optimizer.param_groups[1:])


class Trainer:
    """What training frameworks do: the trainer builds optimizer and scheduler itself and
    calls back into user code at fixed points."""

    def __init__(self, model: MorphogeneticModel, callbacks: list[Any]) -> None:
        self.model = model
        self.optimizer = torch.optim.AdamW(model.host.parameters(), lr=1e-2)
        self.scheduler = L.OneCycleLR(self.optimizer, max_lr=5e-2, total_steps=40)
        self.callbacks = callbacks

    def fit(self, epochs: int, steps: int) -> list[float]:
        for cb in self.callbacks:
            cb.on_train_begin(self)
        losses = []
        for epoch in range(epochs):
            for _ in range(steps):
                x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
                loss = F.cross_entropy(self.model(x), y)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                losses.append(loss.item())
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch)
        return losses


class GrowSeeds:
    def on_train_begin(self, trainer: Trainer) -> None:
        self.binding = OptimizerBinding(
            trainer.optimizer, trainer.model.slots, lr=1e-2, schedulers=[trainer.scheduler]
        )

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        slot = trainer.model.slots["r0c1"]
        if epoch == 1:
            trainer.model.germinate("r0c1", "toy_conv")
            drive(slot, SeedStage.BLENDING)
        elif epoch == 3:
            trainer.model.prune("r0c1", "callback", "callback")


def test_a_trainer_callback_that_germinates_mid_run_does_not_crash() -> None:
    model = _model()
    trainer = Trainer(model, [GrowSeeds()])
    losses = trainer.fit(epochs=5, steps=6)
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert model.slots["r0c1"].stage is SeedStage.PRUNED
    assert len(trainer.scheduler.get_last_lr()) == len(trainer.optimizer.param_groups) == 7
