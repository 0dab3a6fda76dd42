"""One rank of a multi-process test: ``dist_worker.py MODULES RANK WORLD PORT OUT``.

Joins a gloo group on 127.0.0.1, registers the probe blueprint, runs every scenario of
each of the comma-separated MODULES (a list ``SCENARIOS`` of ``(name, fn(rank, group) -> dict)``)
on a fresh subgroup,
and writes ``{name: result}`` as JSON. An unexpected exception is recorded, not raised,
so the other scenarios still run; the ranks realign on a barrier between scenarios.
"""

from __future__ import annotations

import datetime
import importlib
import json
import sys
import time
import traceback

import torch.distributed as dist


def main() -> None:
    module, rank, world, port, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=30),
    )
    from dist_probe import PROBE

    from esper_core.registry import temporary_blueprints

    scenarios = [item for name in module.split(",") for item in importlib.import_module(name).SCENARIOS]
    results = {}
    with temporary_blueprints(PROBE):
        for name, fn in scenarios:
            start = time.monotonic()
            group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=20))
            try:
                results[name] = {"ok": True, **fn(rank, group)}
            except Exception as exc:
                results[name] = {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "tb": traceback.format_exc(),
                }
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=30))
            print(f"rank {rank} {name}: {time.monotonic() - start:.2f} s", flush=True)
    with open(out, "w") as handle:
        json.dump(results, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
