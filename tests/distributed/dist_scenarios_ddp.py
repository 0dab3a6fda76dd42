"""DDP through every stage, run on every rank (issue 15 item 7).

The documented pattern (``docs/distributed.md``): lifecycle calls through
:class:`~esper_core.distributed.DistributedLifecycle`, then ``DDPRewrapper.refresh()`` and a
new optimizer when it rebuilt, then ordinary training steps through the DDP wrapper, with
``find_unused_parameters=False`` (DDP's default). One slot walks GERMINATED -> TRAINING ->
BLENDING (each ramp epoch) -> HOLDING -> FOSSILIZED, a second one is blended in and then
removed by a scheduled prune (its alpha ramps down), a third is pruned at once, and both
cool down to DORMANT. Two training steps follow every change: DDP reports a parameter it
waited for in vain at the start of the *next* iteration ("Expected to have finished
reduction in the prior iteration").
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from esper_core.blend import BlendAlgorithm
from esper_core.distributed import DDPRewrapper, DistributedLifecycle
from esper_core.gates import QualityGates
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

_S = SeedStage


class _Net(nn.Module):
    """stem -> s0 -> mid -> s1 -> s2 -> head: every slot has host layers upstream."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.mid = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, 1, 1)
        self.slots = nn.ModuleDict(
            {
                s: SeedSlot(s, topology="cnn", dim=4, gates=QualityGates("permissive"), embargo_epochs=1)
                for s in ("s0", "s1", "s2")
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.slots["s0"](self.stem(x))
        h = self.slots["s2"](self.slots["s1"](self.mid(h)))
        return self.head(h).mean(dim=(1, 2, 3))


class _Run:
    def __init__(self, rank: int, group, algorithm: BlendAlgorithm) -> None:  # type: ignore[no-untyped-def]
        torch.manual_seed(0)  # the same host everywhere (DDP would broadcast it anyway)
        self.model = _Net()
        self.algorithm = algorithm
        self.dl = DistributedLifecycle(self.model, group=group, timeout=20)
        self.ddp = DDPRewrapper(self.model, process_group=group)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05)
        self.data = torch.Generator().manual_seed(1000 + rank)  # each rank its own shard
        self.group = group
        self.steps: list[dict] = []

    def slot(self, slot_id: str) -> SeedSlot:
        return self.model.slots[slot_id]

    def train(self, label: str, steps: int = 2) -> None:
        """``refresh`` (new optimizer when it rebuilt), then ``steps`` DDP training steps."""
        rebuilt = self.ddp.refresh()
        if rebuilt:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05)
        for _ in range(steps):
            x = torch.randn(3, 2, 4, 4, generator=self.data)
            y = torch.randn(3, generator=self.data)
            loss = (self.ddp(x) - y).pow(2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            unused = [n for n, p in self.model.named_parameters() if p.requires_grad and p.grad is None]
            self.optimizer.step()
        self.steps.append(
            {
                "label": label,
                "stages": [self.slot(s).stage.name for s in ("s0", "s1", "s2")],
                "rebuilt": rebuilt,
                "unused": unused,
                "seed_grads": self._seed_grads(),
            }
        )

    def _seed_grads(self) -> dict[str, bool]:
        """Per slot holding a seed: whether any seed or blend-gate parameter got a non-zero gradient."""
        return {
            s: any(
                p.grad is not None and bool(p.grad.abs().sum() > 0) for p in self.slot(s).seed_parameters()
            )
            for s in ("s0", "s1", "s2")
            if self.slot(s).seed is not None
        }

    def advance(self, slot_id: str, label: str) -> None:
        self.slot(slot_id).record_accuracy(40.0 + len(self.steps))  # per-rank measurements stay direct
        result = self.dl.advance(slot_id)
        assert result.passed, result
        self.train(label)

    def grow(self, slot_id: str, last: SeedStage) -> None:
        self.dl.germinate(
            slot_id, "dist_probe", options={"hidden": 2}, algorithm=self.algorithm, ramp_epochs=2
        )
        self.train(f"{slot_id} GERMINATED")
        self.advance(slot_id, f"{slot_id} TRAINING")
        self.advance(slot_id, f"{slot_id} BLENDING")
        slot = self.slot(slot_id)
        while not (slot.schedule.at_rest and slot.alpha == 1.0):
            self.dl.step_epoch()
            self.train(f"{slot_id} ramp alpha={slot.alpha:.2f}")
        if last is _S.BLENDING:
            return
        self.advance(slot_id, f"{slot_id} HOLDING")
        if last is _S.FOSSILIZED:
            slot.record_counterfactual(2.0)
            self.advance(slot_id, f"{slot_id} FOSSILIZED")

    def walk(self) -> dict:
        self.train("dormant")
        self.grow("s0", _S.FOSSILIZED)
        self.grow("s1", _S.HOLDING)
        self.dl.schedule_prune("s1", 2, reason="rent", initiator="test")
        self.train("s1 prune scheduled")
        while self.slot("s1").seed is not None:
            self.dl.step_epoch()
            self.train(f"s1 ramp down alpha={self.slot('s1').alpha:.2f} {self.slot('s1').stage.name}")
        self.dl.germinate("s2", "dist_probe", options={"hidden": 2}, algorithm=self.algorithm)
        self.train("s2 GERMINATED")
        self.advance("s2", "s2 TRAINING")
        self.dl.prune("s2", "rent", "test")
        self.train("s2 pruned")
        while not (self.slot("s1").available and self.slot("s2").available):
            self.dl.step_epoch()
            self.train(f"cooldown {self.slot('s1').stage.name} {self.slot('s2').stage.name}")
        mine = torch.cat([p.detach().flatten() for p in self.model.parameters()])
        gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(gathered, mine, group=self.group)
        self.dl.check_drift()
        return {
            "steps": self.steps,
            "identical": all(torch.equal(g, gathered[0]) for g in gathered),
            "rebuilds": self.ddp.rebuilds,
            "final": [self.slot(s).stage.name for s in ("s0", "s1", "s2")],
        }


def _scenario(algorithm: BlendAlgorithm):  # type: ignore[no-untyped-def]
    def run(rank: int, group) -> dict:  # type: ignore[no-untyped-def]
        return _Run(rank, group, algorithm).walk()

    return run


SCENARIOS = [(f"ddp_all_stages_{a.name.lower()}", _scenario(a)) for a in BlendAlgorithm]
