"""Scenarios run on every rank against real :class:`~esper_core.slot.SeedSlot` objects.

Each rank seeds its global RNG differently (as real data-parallel jobs do for data order),
so identical seed weights across ranks can only come from the lifecycle's forked RNG.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from esper_core.alpha import AlphaCurve
from esper_core.blend import BlendAlgorithm
from esper_core.distributed import DDPRewrapper, DistributedLifecycle
from esper_core.errors import EsperError
from esper_core.gates import GateLevel, QualityGates
from esper_core.slot import SeedSlot


def _slot(slot_id: str, **kwargs) -> SeedSlot:
    return SeedSlot(slot_id, topology="cnn", dim=4, gates=QualityGates("permissive"), **kwargs)


def _values(tensors) -> list[float]:
    return [float(v) for t in tensors for v in t.detach().flatten()]


def _real_gates(rank: int, group, passing_rank: int) -> dict:
    """G2 (permissive) needs one recorded epoch in TRAINING; only ``passing_rank`` records one."""
    torch.manual_seed(rank)
    slots = {"a": _slot("a"), "b": _slot("b", auto_advance={GateLevel.G2})}
    dl = DistributedLifecycle(slots, group=group, timeout=10)
    for slot_id in slots:
        dl.germinate(slot_id, "dist_probe")
        dl.advance(slot_id)  # G1 passes everywhere
    if rank == passing_rank:
        for slot in slots.values():
            slot.record_accuracy(40.0)  # per-rank validation shards: metrics legitimately differ
    local = {slot_id: slot.evaluate().passed for slot_id, slot in slots.items()}
    explicit = dl.advance("a")
    dl.step_epoch()  # "b" tries G2 automatically; rank 0 decides; then the drift check runs
    return {
        "local": local,
        "explicit_passed": explicit.passed,
        "stages": {slot_id: slot.stage.name for slot_id, slot in slots.items()},
        "overruled": dl.overruled,
    }


def real_gate_rank1_passes(rank: int, group) -> dict:
    return _real_gates(rank, group, passing_rank=1)


def real_gate_rank0_passes(rank: int, group) -> dict:
    return _real_gates(rank, group, passing_rank=0)


def real_all_ops(rank: int, group) -> dict:
    """Every mutation on real slots, with rank 1 passing other arguments; compare everything."""
    torch.manual_seed(100 + rank)
    slots = [_slot("a"), _slot("b")]
    events: list[str] = []
    for slot in slots:
        slot.add_observer(lambda e, sid=slot.slot_id: events.append(f"{sid}:{type(e).__name__}"))
    dl = DistributedLifecycle(slots, group=group, timeout=10)
    lead = rank == 0
    dl.germinate(
        "a",
        "dist_probe" if lead else "noop",
        options={"hidden": 3, "act": "relu"} if lead else {},
        algorithm=BlendAlgorithm.GATE if lead else BlendAlgorithm.ADD,
        ramp_epochs=2 if lead else 9,
    )
    dl.advance("a")
    slots[0].record_accuracy(10.0)
    dl.advance("a")  # TRAINING -> BLENDING creates the GATE module: random init, forked RNG
    gate_params = _values(slots[0].blend_gate.parameters()) if slots[0].blend_gate is not None else []
    checksums = []
    for _ in range(2):
        dl.step_epoch()
        checksums.append(_values([slots[0].state_checksum()]))
    dl.advance("a")  # G3 -> HOLDING
    stage_holding = slots[0].stage.name
    dl.set_alpha_target("a", 0.5 if lead else 0.9, 1 if lead else 7, AlphaCurve.COSINE)
    dl.step_epoch()
    checksums.append(_values([slots[0].state_checksum()]))
    dl.schedule_prune("a", 2, AlphaCurve.LINEAR, reason="rent" if lead else "?", initiator="policy")
    seed_params = _values(slots[0].seed_parameters())
    dl.step_epoch()
    dl.step_epoch()
    dl.germinate("b", "dist_probe")
    dl.prune("b", "instant" if lead else "x", "governor")
    dl.step_epoch()
    return {
        "stage_holding": stage_holding,
        "stages": [s.stage.name for s in slots],
        "gate_params": gate_params,
        "seed_params": seed_params,
        "checksums": checksums,
        "events": events,
    }


def real_bypass(rank: int, group) -> dict:
    """Rank 1 prunes a real slot directly (no collective involved): both ranks hear of it."""
    slot = _slot("a")
    dl = DistributedLifecycle([slot], group=group, timeout=10)
    dl.germinate("a", "dist_probe")
    if rank == 1:
        slot.prune("behind rank 0's back", "governor")
    try:
        dl.check_drift()
    except EsperError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"error": None}


class _Tiny(nn.Module):
    """stem -> slot -> head; the slot's seed appears mid-training."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 1)
        self.slots = nn.ModuleDict({"s0": _slot("s0")})
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.slots["s0"](self.stem(x))).mean(dim=(1, 2, 3))


def _ddp_run(rank: int, group, *, rewrap: bool) -> dict:
    torch.manual_seed(0)  # same host init everywhere (DDP would broadcast it anyway)
    model = _Tiny()
    dl = DistributedLifecycle(model, group=group, timeout=20)
    ddp = DDPRewrapper(model, process_group=group)
    data = torch.Generator().manual_seed(1000 + rank)  # each rank trains on its own shard
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seed_at_birth: list[float] = []
    for step in range(6):
        if step == 2:
            dl.germinate("s0", "dist_probe", options={"hidden": 2})
            dl.advance("s0")  # TRAINING: the seed now runs (straight-through) and learns
            seed_at_birth = _values(model.slots["s0"].seed_parameters())
            if rewrap and ddp.refresh():
                optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            elif not rewrap:
                optimizer.add_param_group({"params": model.slots["s0"].seed_parameters()})
        x = torch.randn(3, 2, 3, 3, generator=data)
        y = torch.randn(3, generator=data)
        loss = (ddp(x) - y).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    mine = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, mine, group=group)
    try:
        dl.step_epoch()  # ends with the drift check, which fingerprints the seed's weights
        drift = None
    except EsperError as exc:
        drift = f"{type(exc).__name__}: {exc}"
    seed_now = _values(model.slots["s0"].seed_parameters())
    return {
        "identical": all(torch.equal(g, gathered[0]) for g in gathered),
        "seed_trained": seed_now != seed_at_birth,
        "rebuilds": ddp.rebuilds,
        "drift": drift,
        "stage": model.slots["s0"].stage.name,
    }


def ddp_rewrap(rank: int, group) -> dict:
    return _ddp_run(rank, group, rewrap=True)


def ddp_stale_wrapper(rank: int, group) -> dict:
    """The negative control: the seed's gradients are never averaged, so ranks diverge."""
    return _ddp_run(rank, group, rewrap=False)


SCENARIOS = [
    ("real_gate_rank1_passes", real_gate_rank1_passes),
    ("real_gate_rank0_passes", real_gate_rank0_passes),
    ("real_all_ops", real_all_ops),
    ("real_bypass", real_bypass),
    ("ddp_rewrap", ddp_rewrap),
    ("ddp_stale_wrapper", ddp_stale_wrapper),
]
