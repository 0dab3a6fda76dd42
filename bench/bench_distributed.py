"""Lifecycle decisions across 2 gloo ranks: fixed-size tensor command vs pickled object.

Both sides move the same :class:`~esper_core.distributed.LifecycleCommand` from rank 0 to
rank 1 and rebuild it there: a gate decision (what every ``advance`` and auto-advance
sends) and a germinate (the largest command: blueprint reference, options, three
strings). The tensor side is encode + one ``broadcast`` of the record + decode
(:meth:`Channel.broadcast_record`); the reference is ``broadcast_object_list`` (pickle,
a size broadcast, a payload broadcast, unpickle), which is what the earlier
implementation used for gate decisions (review B3-SLOT-05).

Two local processes are started (``python -m bench.bench_distributed worker ...``);
they alternate blocks of every path in lockstep and rank 0 reports per-block ratios
``time(object) / time(tensor)``, so the target reads "at least 3x lower latency".
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
BLOCK = 150  # calls per timed block: long enough to average out scheduler noise
REPEATS = 21


def _commands() -> dict:
    """The decision every gate evaluation sends, and the largest command (a germinate)."""
    from esper_core.alpha import AlphaCurve
    from esper_core.blend import BlendAlgorithm
    from esper_core.distributed import CommandOp, LifecycleCommand
    from esper_core.stages import SeedStage

    return {
        "decide": LifecycleCommand(op=CommandOp.DECIDE, slot=1, passed=True, target_stage=SeedStage.BLENDING),
        "germinate": LifecycleCommand(
            op=CommandOp.GERMINATE,
            slot=1,
            topology="cnn",
            blueprint="dist_bench",
            options={"hidden": 3},
            seed_id="r0c1-seed-7",
            algorithm=BlendAlgorithm.GATE,
            curve=AlphaCurve.SIGMOID,
            tempo=5,
            alpha_target=1.0,
        ),
    }


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

    from esper_core.distributed import CommandOp, decode_command, pack_command

    group = stream.channel.group  # every path runs on the same process group

    def tensor() -> None:
        # The command transport alone: encode on rank 0, one broadcast, decode everywhere.
        record = pack_command(command, seq=1) if rank == 0 else None
        assert decode_command(stream.channel.broadcast_record(record)).command == command

    def pickled() -> None:
        box = [command if rank == 0 else None]
        dist.broadcast_object_list(box, group_src=0, group=group)
        assert box[0] == command

    if command.op is CommandOp.DECIDE:

        def protocol() -> None:
            # One whole checked call, exactly as DistributedLifecycle makes it for a gate.
            assert stream.decide(command.slot, command.target_stage, bool(command.passed), ids)

    else:

        def protocol() -> None:
            assert stream.issue(command.op, lambda: command) == command

    template = pack_command(command, seq=1)

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
    ids = ["a", "b"]
    rows: dict[str, list[float]] = {}
    with temporary_blueprints(_bench_spec()):
        for name, command in _commands().items():
            paths = _paths(rank, command, stream, ids)
            for fn in paths.values():
                for _ in range(10):
                    fn()
            seconds: dict[str, list[float]] = {key: [] for key in paths}
            for i in range(REPEATS):
                for key in paths if i % 2 == 0 else reversed(list(paths)):
                    dist.barrier()
                    start = time.perf_counter()
                    for _ in range(BLOCK):
                        paths[key]()
                    seconds[key].append((time.perf_counter() - start) / BLOCK)
            rows[f"{name}/tensor"] = [
                p / t for p, t in zip(seconds["pickled"], seconds["tensor"], strict=True)
            ]
            rows[f"{name}/protocol"] = [
                p / t for p, t in zip(seconds["pickled"], seconds["protocol"], strict=True)
            ]
            for key, values in seconds.items():
                rows[f"{name}/{key}_us"] = [1e6 * statistics.median(values)]
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_CACHE: dict[str, list[float]] = {}


def _measure() -> dict[str, list[float]]:
    if _CACHE:
        return _CACHE
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
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
        _CACHE.update(json.loads(Path(out).read_text()))
    return _CACHE


def _detail(name: str) -> str:
    rows = _measure()
    us = {key: rows[f"{name}/{key}_us"][0] for key in ("tensor", "pickled", "protocol", "bare")}
    return (
        f"median per {name}: tensor {us['tensor']:.0f} us, broadcast_object_list {us['pickled']:.0f} us, "
        f"whole checked call {us['protocol']:.0f} us, bare record broadcast {us['bare']:.0f} us"
    )


def _ratio(name: str, path: str) -> Measurement:
    return ratio_of(_measure()[f"{name}/{path}"], detail=_detail(name))


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
        target=">= 1.5",
        run=lambda: _ratio("decide", "protocol"),
        note="our own bar: handshake + command (one round trip) vs the unchecked pickled broadcast",
    ),
]


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "worker":
        _worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit("usage: python -m bench.run bench_distributed")
