"""Scenarios run on every rank against stand-in slots (see ``dist_standin.py``).

Each function returns JSON-able facts; the assertions live in ``test_two_ranks.py``, which
compares the ranks' facts with each other and with what rank 0 asked for.
"""

from __future__ import annotations

import torch
from dist_standin import StandInSlot

from esper_core.alpha import AlphaCurve
from esper_core.blend import BlendAlgorithm
from esper_core.distributed import Channel, CommandStream, DistributedLifecycle
from esper_core.errors import DistributedError, EsperError
from esper_core.stages import SeedStage


def _slots(n: int = 2, **kwargs) -> list[StandInSlot]:
    return [StandInSlot(f"s{i}", **kwargs) for i in range(n)]


def _calls(slot: StandInSlot) -> list[str]:
    return [repr(call) for call in slot.calls]


def _params(slot: StandInSlot) -> list[float]:
    return [float(v) for p in slot.seed_parameters() for v in p.detach().flatten()]


def _error(fn) -> dict:
    try:
        fn()
    except EsperError as exc:
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": None, "message": ""}


def commands(rank: int, group) -> dict:
    """Every mutation, with rank 1 passing different arguments: all ranks apply rank 0's."""
    torch.manual_seed(100 + rank)  # different global RNG per rank, as in real DDP jobs
    slots = _slots()
    dl = DistributedLifecycle(slots, group=group, timeout=10)
    lead = rank == 0
    dl.germinate(
        "s1" if lead else "s0",
        "dist_probe" if lead else "noop",
        options={"hidden": 3, "gain": 0.25, "act": "relu", "bias": False} if lead else {},
        seed_id="seed-a" if lead else "other",
        algorithm=BlendAlgorithm.GATE if lead else BlendAlgorithm.ADD,
        ramp_epochs=7 if lead else 1,
        curve=AlphaCurve.SIGMOID if lead else AlphaCurve.LINEAR,
        alpha_target=0.75 if lead else 1.0,
    )
    rng_after = float(torch.rand(()))  # the global RNG stream must be untouched by the command
    dl.set_alpha_target("s1", 0.1 + 0.2 if lead else 0.9, 4 if lead else 1, AlphaCurve.COSINE)
    dl.schedule_prune(
        "s1", 3 if lead else 9, AlphaCurve.LINEAR, reason="slow" if lead else "x", initiator="policy"
    )
    params = _params(slots[1])
    dl.prune("s1" if lead else "s0", "rent too high" if lead else "-", "governor" if lead else "-")
    dl.step_epoch()
    return {
        "calls": [_calls(s) for s in slots],
        "params": params,
        "rng_after": rng_after,
        "stages": [int(s.stage) for s in slots],
    }


def lone_mismatch(rank: int, group) -> dict:
    """Rank 1 prunes on its own while rank 0 ticks the epoch: both raise, nothing changes."""
    slots = _slots(1)
    dl = DistributedLifecycle(slots, group=group, timeout=10)
    dl.germinate("s0", "dist_probe")
    before = _calls(slots[0])
    error = _error(lambda: dl.prune("s0", "alone", "policy")) if rank == 1 else _error(dl.step_epoch)
    unchanged = _calls(slots[0]) == before and slots[0].stage is SeedStage.GERMINATED
    # The stream is still aligned: a symmetric call afterwards works on both ranks.
    dl.prune("s0", "together", "policy")
    return {"error": error, "unchanged": unchanged, "stage_after": int(slots[0].stage)}


def lone_timeout(rank: int, group) -> dict:
    """Rank 1 prunes while rank 0 makes no lifecycle call at all: rank 1 times out, no hang."""
    slots = _slots(1)
    dl = DistributedLifecycle(slots, group=group, timeout=1.5)
    if rank == 0:
        return {"error": None, "later": None}
    error = _error(lambda: dl.prune("s0", "alone", "policy"))
    later = _error(lambda: dl.prune("s0", "again", "policy"))
    return {"error": error, "later": later, "stage": int(slots[0].stage)}


def drift(rank: int, group) -> dict:
    """State changed behind the lifecycle's back on one rank is reported, naming the slot."""
    slots = _slots(3)
    dl = DistributedLifecycle(slots, group=group, timeout=10)
    clean = _error(dl.check_drift)
    if rank == 1:
        slots[2].alpha = 0.5  # a mutation that bypassed rank 0
    alpha_drift = _error(dl.check_drift)
    slots[2].alpha = 0.0
    # A seed built locally on each rank starts from different weights: caught by the fingerprint.
    torch.manual_seed(7 + rank)
    slots[1].decider = None
    slots[1].germinate("dist_probe")
    param_drift = _error(dl.check_drift)
    dl.check_parameters = False
    without_params = _error(dl.check_drift)
    return {"clean": clean, "alpha": alpha_drift, "params": param_drift, "without_params": without_params}


def rank0_rejects(rank: int, group) -> dict:
    """A call rank 0 cannot encode raises the same error class on every rank; nothing changes."""
    slots = _slots(1)
    dl = DistributedLifecycle(slots, timeout=10)  # no group: the lifecycle makes its own
    unknown = _error(lambda: dl.germinate("s0", "no_such_blueprint" if rank == 0 else "dist_probe"))
    too_long = _error(lambda: dl.prune("s0", "x" * 500 if rank == 0 else "ok", "policy"))
    bad_slot = _error(lambda: dl.advance("nope" if rank == 0 else "s0"))
    return {
        "unknown": unknown,
        "too_long": too_long,
        "bad_slot": bad_slot,
        "calls": _calls(slots[0]),
        "stage": int(slots[0].stage),
    }


def config_mismatch(rank: int, group) -> dict:
    """Ranks that built different slot sets are refused at construction."""
    try:
        DistributedLifecycle(_slots(2 + rank), group=group, timeout=10)
    except DistributedError as exc:
        return {"error": str(exc)}
    return {"error": None}


def channel_exchange(rank: int, group) -> dict:
    """The channel's one-round-trip exchange: every header and rank 0's record everywhere."""
    channel = Channel(group, 10, capacity=8)
    rows, record = channel.exchange(3, 1, rank, 10 + rank, b"rank-0-!" if rank == 0 else b"ignored!")
    mismatch = _error(lambda: channel.exchange(3 if rank == 0 else 4, 2))
    bare = channel.broadcast_record(b"12345678" if rank == 0 else None)
    # A record longer than the capacity follows in a second broadcast: no size limit.
    long = channel.broadcast_record(("x" * 5000 + "-end").encode() if rank == 0 else None)
    stream = CommandStream(group, 10)
    gates = _error(lambda: stream.decide(rank, SeedStage.BLENDING, True, ["s0", "s1"]))
    verdict = stream.decide(1, SeedStage.TRAINING, rank == 1, ["s0", "s1"])
    return {
        "rows": [[r.rank, r.op, r.seq, r.slot, r.extra] for r in rows],
        "record": record.decode(),
        "mismatch": mismatch,
        "bare": bare.decode(),
        "long": long.decode(),
        "gates": gates,
        "verdict": verdict,
    }


SCENARIOS = [
    ("channel_exchange", channel_exchange),
    ("commands", commands),
    ("lone_mismatch", lone_mismatch),
    ("drift", drift),
    ("rank0_rejects", rank0_rejects),
    ("config_mismatch", config_mismatch),
    ("lone_timeout", lone_timeout),
]
