"""Exact resume: interrupted and resumed runs match the uninterrupted run bit for bit.

A tiny network with two slots trains for 15 epochs while a fixed lifecycle script grows,
blends, fossilizes, prunes (scheduled, with a cooldown) and regrows seeds. Training draws
its data and dropout masks from the global RNG and uses Adam with one param group per seed
(:class:`~esper_core.optim.OptimizerBinding`). A run interrupted at a checkpoint (model
``state_dict`` + optimizer state + RNG state, through ``torch.save`` and
``torch.load(weights_only=True)``) and resumed in a freshly built model, built from a
different seed, must produce the same losses, parameters and outputs.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from esper_core.blend import BlendAlgorithm
from esper_core.checkpoint import load_checkpoint, slot_envelope
from esper_core.optim import OptimizerBinding, host_parameters
from esper_core.stages import SeedStage

EPOCHS = 15
STEPS = 2


class TinyNet(nn.Module):
    """stem -> slot a -> mid -> dropout -> slot b -> head, for ``cnn`` or ``transformer``."""

    def __init__(self, topology: str, make_slot: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.topology = topology
        if topology == "cnn":
            self.stem: nn.Module = nn.Conv2d(3, 6, 3, padding=1)
            self.mid: nn.Module = nn.Conv2d(6, 6, 3, padding=1)
        else:
            self.stem = nn.Embedding(10, 6)
            self.mid = nn.Linear(6, 6)
        self.slots = nn.ModuleDict({sid: make_slot(topology, slot_id=sid) for sid in ("a", "b")})
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.slots["a"](torch.relu(self.stem(x)))
        h = self.slots["b"](self.drop(torch.relu(self.mid(h))))
        return self.head(h.mean((2, 3)) if self.topology == "cnn" else h.mean(1))


def batch(
    topology: str, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    if topology == "cnn":
        x = torch.randn(n, 3, 5, 5, generator=generator)
    else:
        x = torch.randint(0, 10, (n, 5), generator=generator)
    return x, torch.randint(0, 4, (n,), generator=generator)


def lifecycle(model: TinyNet, epoch: int) -> None:
    """The actions of the end of ``epoch`` (after accuracies are recorded)."""
    a, b = model.slots["a"], model.slots["b"]
    blueprint = "ckpt_conv" if model.topology == "cnn" else "ckpt_token"
    if epoch == 0:
        a.germinate(blueprint, ramp_epochs=3)
        b.germinate(blueprint, options={"hidden": 5}, algorithm=BlendAlgorithm.GATE, ramp_epochs=4)
    elif epoch == 1:
        a.advance()
        b.advance()
    elif epoch == 2:
        a.advance()
    elif epoch == 3:
        b.advance()
    elif epoch == 5:
        a.advance()
    elif epoch == 6:
        a.schedule_prune(2, reason="resume_test", initiator="tester")
    elif epoch == 7:
        b.advance()
    elif epoch == 8:
        b.record_counterfactual(3.0)
        b.advance()
    elif epoch == 12:
        a.germinate(blueprint, algorithm=BlendAlgorithm.MULTIPLY, ramp_epochs=2)
    elif epoch == 13:
        a.advance()


class Run:
    """One training run; ``position`` is the next (epoch, step) to execute."""

    def __init__(self, topology: str, make_slot: Callable[..., nn.Module], seed: int) -> None:
        torch.manual_seed(seed)
        self.topology = topology
        self.model = TinyNet(topology, make_slot)
        self.optimizer = torch.optim.Adam(host_parameters(self.model, self.model.slots), lr=1e-2)
        self.binding = OptimizerBinding(self.optimizer, self.model.slots, lr=5e-3)
        self.validation = batch(topology, 16, torch.Generator().manual_seed(5))
        self.position = (0, 0)
        self.losses: list[float] = []

    def _step(self) -> None:
        self.model.train()
        x, y = batch(self.topology, 4)
        loss = nn.functional.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.item())

    def _end_epoch(self, epoch: int) -> None:
        self.model.eval()
        with torch.no_grad():
            x, y = self.validation
            accuracy = 100.0 * (self.model(x).argmax(1) == y).float().mean().item()
        for slot in self.model.slots.values():
            if slot.seed is not None:
                slot.record_accuracy(accuracy)
        lifecycle(self.model, epoch)
        for slot in self.model.slots.values():
            slot.step_epoch()

    def run_until(self, stop: tuple[int, int]) -> None:
        while self.position < stop:
            epoch, step = self.position
            self._step()
            if step + 1 < STEPS:
                self.position = (epoch, step + 1)
            else:
                self._end_epoch(epoch)
                self.position = (epoch + 1, 0)

    def checkpoint(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "position": list(self.position),
            "losses": list(self.losses),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=True)

    @classmethod
    def resume(cls, topology: str, make_slot: Callable[..., nn.Module], state: dict[str, Any]) -> Run:
        run = cls(topology, make_slot, seed=4321)  # different init: everything must come from the file
        load_checkpoint(run.model, state["model"])
        run.binding.sync()
        run.binding.load_optimizer_state(state["optimizer"])
        torch.set_rng_state(state["rng"])
        run.position = tuple(state["position"])
        run.losses = list(state["losses"])
        return run

    def outputs(self) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad():
            return self.model(self.validation[0])


def _make_slot(fresh_slot: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def make(topology: str, slot_id: str) -> nn.Module:
        return fresh_slot(topology, slot_id=slot_id)

    return make


_BASELINES: dict[str, Run] = {}


def baseline(topology: str, make_slot: Callable[..., nn.Module]) -> Run:
    if topology not in _BASELINES:
        run = Run(topology, make_slot, seed=0)
        run.run_until((EPOCHS, 0))
        _BASELINES[topology] = run
    return _BASELINES[topology]


def without_activity(envelope: dict[str, Any]) -> dict[str, Any]:
    state = envelope["state"]
    if state["seed"] is None:
        return envelope
    return envelope | {"state": state | {"seed": state["seed"] | {"activity": None}}}


# (where the run is cut, the stages there: slot a, slot b)
CUTS = [
    ((2, 1), SeedStage.TRAINING, SeedStage.TRAINING),
    ((3, 0), SeedStage.BLENDING, SeedStage.TRAINING),
    ((4, 1), SeedStage.BLENDING, SeedStage.BLENDING),
    ((5, 0), SeedStage.BLENDING, SeedStage.BLENDING),
    ((7, 1), SeedStage.BLENDING, SeedStage.BLENDING),
    ((9, 1), SeedStage.EMBARGOED, SeedStage.FOSSILIZED),
    ((10, 0), SeedStage.EMBARGOED, SeedStage.FOSSILIZED),
]


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
@pytest.mark.parametrize(("cut", "stage_a", "stage_b"), CUTS, ids=[f"e{c[0][0]}s{c[0][1]}" for c in CUTS])
def test_resumed_run_is_bit_identical(fresh_slot, topology, cut, stage_a, stage_b):
    make_slot = _make_slot(fresh_slot)
    reference = baseline(topology, make_slot)

    interrupted = Run(topology, make_slot, seed=0)
    interrupted.run_until(cut)
    assert (interrupted.model.slots["a"].stage, interrupted.model.slots["b"].stage) == (stage_a, stage_b)
    if cut == (7, 1):
        pending = interrupted.model.slots["a"].state.seed.pending_prune
        assert (pending.reason, pending.initiator) == ("resume_test", "tester")
    state = interrupted.checkpoint()
    del interrupted

    resumed = Run.resume(topology, make_slot, state)
    resumed.run_until((EPOCHS, 0))

    assert resumed.losses == reference.losses  # every step after the cut, bit for bit
    mine, theirs = resumed.model.state_dict(), reference.model.state_dict()
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(mine[key], value), key
    assert torch.equal(resumed.outputs(), reference.outputs())
    for sid in ("a", "b"):
        ours, expected = slot_envelope(resumed.model.slots[sid]), slot_envelope(reference.model.slots[sid])
        if cut[1] == 0:
            assert ours == expected  # cut at an epoch boundary: the whole lifecycle matches
        else:
            # Mid-epoch, the activity interval in progress restarts at the resume point.
            assert without_activity(ours) == without_activity(expected)
    assert (
        reference.model.slots["a"].seed_id
        == resumed.model.slots["a"].seed_id
        == "a-" + ("ckpt_conv" if topology == "cnn" else "ckpt_token") + "-2"
    )
