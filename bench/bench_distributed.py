"""Lifecycle decisions across 2 gloo ranks: fixed-size tensor command vs pickled object.

Both sides move the same decision (a command value of :mod:`esper_core.commands`) from rank 0 to
rank 1 and rebuild it there: a gate decision (what every ``advance`` and auto-advance
sends) and a germinate (the largest command: blueprint reference, options, three
strings). The tensor side is encode + one message of the record to every peer (on gloo a
point-to-point ``send`` per peer) + decode (:meth:`Channel.broadcast_record`); the reference is ``broadcast_object_list`` (pickle,
a size broadcast, a payload broadcast, unpickle), which is what the earlier
implementation used for gate decisions (review B3-SLOT-05).

Two local processes are started (``python -m bench.bench_distributed worker ...``).
What is timed is the issue's quantity, the *latency* of one decision: from rank 0
starting it to rank 1 holding the decoded command, read on the machine's monotonic
clock in both processes, one decision at a time after a barrier. Blocks of every path
alternate; the ratio ``median latency(object) / median latency(tensor)`` is taken per
block, so the target reads "at least 3x lower median latency". (Timing back-to-back
calls in a loop instead measures throughput, which also counts rank 0's own decode of
its record and gives 2.7-3.4x on the 2-core machine, at the transport's floor.)
A third row times a whole checked lifecycle call as :class:`DistributedLifecycle` makes
it (``CommandStream.decide``: every rank's header gathered on rank 0, then the record
broadcast with the header table) against the same unchecked pickled broadcast: the
cross-rank check costs one more one-way message, and the call must still be cheaper
than what it replaces. The detail column adds a bare broadcast of the same bytes (the
transport floor), so the encode/decode overhead is visible.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._harness import Benchmark, Measurement, ratio_of

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = 30  # blocks per path; the ratio is taken per block, then its median reported
SAMPLES = 20  # single decisions timed per block


def _commands() -> dict:
    """The decision every gate evaluation sends, and the largest command (a germinate)."""
    from esper_core.alpha import AlphaCurve, BlendAlgorithm
    from esper_core.commands import Germinate
    from esper_core.gates import GateLevel, GateResult
    from esper_core.stages import SeedStage

    # What the earlier implementation pickled for a gate decision: the gate result itself.
    decision = GateResult(
        gate=GateLevel.G2,
        edge=(SeedStage.TRAINING, SeedStage.BLENDING),
        passed=True,
        score=0.4,
        checks_passed=("seed_trainable", "finite"),
        checks_failed=(),
        message="blending readiness (strict): improvement 2.00pp",
        policy="strict",
    )
    germinate = Germinate(
        blueprint="dist_bench",
        options={"hidden": 3},
        seed_id="r0c1-seed-7",
        algorithm=BlendAlgorithm.GATE,
        curve=AlphaCurve.SIGMOID,
        ramp_epochs=5,
        alpha_target=1.0,
    )
    return {"decide": decision, "germinate": germinate}


def _bench_spec():
    from torch import nn

    from esper_core import BlueprintSpec, Option

    return BlueprintSpec(
        name="dist_bench",
        topology="cnn",
        factory=lambda dim, hidden: nn.Identity(),
        param_count=lambda dim, hidden: 0,
        description="benchmark placeholder",
        options=(Option("hidden", int, 2, "unused"),),
    )


def _paths(rank: int, command, stream, ids):
    import torch.distributed as dist

    from esper_core.codec import decode_command, encode_command
    from esper_core.distributed.stream import _VERDICT, CallOp
    from esper_core.gates import GateResult

    group = stream.channel.group  # every path runs on the same process group
    deciding = isinstance(command, GateResult)

    if deciding:

        def tensor() -> None:
            # A verdict's record is one of two constant byte strings: no encode, a comparison to decode.
            raw = stream.channel.broadcast_record(_VERDICT[command.passed] if rank == 0 else None)
            assert (raw == _VERDICT[True]) is command.passed

        def protocol() -> None:
            # One whole checked call, exactly as DistributedLifecycle makes it for a gate.
            assert stream.decide(1, command.target, command.passed, ids)

        template = _VERDICT[True]
    else:

        def tensor() -> None:
            # The command transport alone: encode on rank 0, one message per peer, decode everywhere.
            record = encode_command(command) if rank == 0 else None
            assert decode_command(stream.channel.broadcast_record(record)) == command

        def protocol() -> None:
            assert stream.issue(CallOp.GERMINATE, lambda: (1, command)) == (1, command)

        template = encode_command(command)

    def pickled() -> None:
        box = [command if rank == 0 else None]
        dist.broadcast_object_list(box, group_src=0, group=group)
        assert box[0] == command

    def bare() -> None:
        # The transport floor, for the detail column: the same bytes, no encode or decode.
        stream.channel.broadcast_record(template)

    return {"tensor": tensor, "pickled": pickled, "protocol": protocol, "bare": bare}


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from esper_core.distributed import CommandStream
    from esper_core.registry import temporary_blueprints

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    stream = CommandStream(None, 60)
    stamps: dict[str, list[list[float]]] = {}
    with temporary_blueprints(_bench_spec()):
        for name, command in _commands().items():
            paths = _paths(rank, command, stream, ["a", "b"])
            for fn in paths.values():
                for _ in range(10):
                    fn()
            for key, blocks in _stamp(rank, paths).items():
                stamps[f"{name}/{key}"] = blocks
    Path(f"{out}.rank{rank}").write_text(json.dumps(stamps))
    dist.destroy_process_group()


def _stamp(rank: int, paths: dict) -> dict[str, list[list[float]]]:
    """Clock readings around single decisions: rank 0 before it starts, rank 1 once it has it.

    Every decision starts from a barrier, so none overlaps the previous one; blocks of
    each path alternate (order reversed every other round) so drift hits all alike.
    ``time.perf_counter`` is the system-wide monotonic clock, so readings of the two
    processes on one machine are comparable.
    """
    import torch.distributed as dist

    stamps: dict[str, list[list[float]]] = {key: [] for key in paths}
    for i in range(BLOCKS):
        for key in paths if i % 2 == 0 else reversed(list(paths)):
            block = []
            for _ in range(SAMPLES):
                dist.barrier()
                if rank == 0:
                    block.append(time.perf_counter())
                    paths[key]()
                else:
                    paths[key]()
                    block.append(time.perf_counter())
            stamps[key].append(block)
    return stamps


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_CACHE: dict[str, list[list[float]]] = {}


def _measure() -> dict[str, list[list[float]]]:
    """Per path, per block: the one-way latency of each decision in microseconds."""
    if _CACHE:
        return _CACHE
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "stamps")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ESPER_LOAD_PLUGINS": ""}
        if sys.platform.startswith("linux"):
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo on the loopback device
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.bench_distributed", "worker", str(rank), str(port), out],
                cwd=ROOT,
                env=env,
            )
            for rank in range(2)
        ]
        for proc in procs:
            if proc.wait(timeout=300) != 0:
                raise RuntimeError(f"benchmark rank exited with {proc.returncode}")
        start, end = (json.loads(Path(f"{out}.rank{rank}").read_text()) for rank in range(2))
    for key, blocks in start.items():
        _CACHE[key] = [
            [1e6 * (t1 - t0) for t0, t1 in zip(b0, b1, strict=True)]
            for b0, b1 in zip(blocks, end[key], strict=True)
        ]
    return _CACHE


def _median_us(name: str, path: str) -> float:
    return statistics.median(v for block in _measure()[f"{name}/{path}"] for v in block)


def _detail(name: str) -> str:
    us = {key: _median_us(name, key) for key in ("tensor", "pickled", "protocol", "bare")}
    return (
        f"median latency per {name}: tensor {us['tensor']:.0f} us, broadcast_object_list "
        f"{us['pickled']:.0f} us, whole checked call {us['protocol']:.0f} us, "
        f"bare record message {us['bare']:.0f} us"
    )


def _ratio(name: str, path: str) -> Measurement:
    """Per block, median pickled latency / median latency of ``path``."""
    rows = _measure()
    ratios = [
        statistics.median(p) / statistics.median(t)
        for p, t in zip(rows[f"{name}/pickled"], rows[f"{name}/{path}"], strict=True)
    ]
    return ratio_of(ratios, detail=_detail(name))


BENCHMARKS = [
    Benchmark(
        name="distributed: pickled / tensor gate decision (2 gloo)",
        target=">= 3",
        run=lambda: _ratio("decide", "tensor"),
        note="time(broadcast_object_list) / time(tensor command) for one gate decision",
    ),
    Benchmark(
        name="distributed: pickled / tensor germinate command (2 gloo)",
        target=">= 3",
        run=lambda: _ratio("germinate", "tensor"),
        note="the largest command: blueprint reference, options, three strings",
    ),
    Benchmark(
        name="distributed: pickled / whole checked gate call (2 gloo)",
        target=">= 1.2",
        run=lambda: _ratio("decide", "protocol"),
        note="our own bar: the checked call (one round trip) must beat the unchecked pickled broadcast",
    ),
]


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "worker":
        _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit("usage: python -m bench.run bench_distributed")
