"""Why the demo's hosts: train candidate hosts, and hosts with seeds fixed in from the start,
with the demo's own data, optimizer and epochs, and record the final headline metric.

    .venv/bin/python scripts/host_capacity.py --topology cnn
    .venv/bin/python scripts/host_capacity.py --topology transformer

Writes ``docs/evidence/capacity-<topology>.json``; ``scripts/make_evidence.py --render-only``
turns it into the table in ``docs/evidence.md``. Every model here is static (no lifecycle):
the question is only what capacity the task rewards, and which of it seeds can supply.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from esper_core.demo.settings import DemoSettings
from esper_core.demo.stats import summarize
from esper_core.demo.tasks import make_task
from esper_core.demo.train import StaticGrownModel, train_plain
from esper_core.hosts import CNNHost, SegmentedHost, TransformerHost
from esper_core.registry import create_blueprint

ROOT = Path(__file__).resolve().parents[1]

# (row name, host factory arguments, {slot: blueprint}); the first row is the demo's host.
CNN_ROWS = [
    ("demo host: 2 blocks, 4/8 channels", {"n_blocks": 2, "base_channels": 4}, {}),
    ("demo host + conv_light@r0c0", {"n_blocks": 2, "base_channels": 4}, {"r0c0": "conv_light"}),
    ("demo host + conv_light@r1c0", {"n_blocks": 2, "base_channels": 4}, {"r1c0": "conv_light"}),
    ("demo host + depthwise@r0c1", {"n_blocks": 2, "base_channels": 4}, {"r0c1": "depthwise"}),
    ("narrow host: 3 blocks, 2/4/8 channels", {"n_blocks": 3, "base_channels": 2}, {}),
    ("narrow host + conv_light@r1c1", {"n_blocks": 3, "base_channels": 2}, {"r1c1": "conv_light"}),
    ("wide host: 2 blocks, 8/16 channels", {"n_blocks": 2, "base_channels": 8}, {}),
]
LM_ROWS = [
    ("demo host: 1 block, width 64", {"n_layer": 1, "n_embd": 64}, {}),
    ("demo host + attention@r0c0", {"n_layer": 1, "n_embd": 64}, {"r0c0": "attention"}),
    ("demo host + mlp_small@r0c0", {"n_layer": 1, "n_embd": 64}, {"r0c0": "mlp_small"}),
    ("2 blocks, width 64", {"n_layer": 2, "n_embd": 64}, {}),
    ("1 block, width 32", {"n_layer": 1, "n_embd": 32}, {}),
]


def _host_factory(topology: str, args: dict, vocab: int, length: int) -> Callable[[], SegmentedHost]:
    if topology == "cnn":
        return lambda: CNNHost(10, in_channels=1, **args)
    return lambda: TransformerHost(vocab, n_head=4, block_size=length, num_segments=args["n_layer"], **args)


def measure(topology: str, seeds: int) -> dict:
    settings = DemoSettings.resolve(topology, seeds=seeds)
    rows = CNN_ROWS if topology == "cnn" else LM_ROWS
    out = []
    for name, args, seeds_in in rows:
        values, params = [], 0
        for seed in settings.seeds:
            task = make_task(topology, seed)
            config = task.host
            make = _host_factory(topology, args, config.get("vocab_size", 0), config.get("block_size", 0))
            torch.manual_seed(seed)
            host = make()
            dims = {p.slot_id: p.dim for p in host.injection_points()}
            extra: dict[str, nn.Module] = {
                s: create_blueprint(topology, b, dims[s]) for s, b in seeds_in.items()
            }
            model = StaticGrownModel(host, extra)
            run = train_plain(name, model, task, settings)
            values.append(run.final[task.metrics[0]])
            params = run.params
        out.append({"name": name, "params": params, "metric": task.metrics[0], "final": summarize(values)})
        print(f"{name:<40} {params:>7,}  {out[-1]['final']['mean']:.3f}", flush=True)
    return {
        "command": f"python scripts/host_capacity.py --topology {topology}",
        "topology": topology,
        "epochs": settings.epochs,
        "seeds": list(settings.seeds),
        "rows": out,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topology", choices=("cnn", "transformer"), required=True)
    parser.add_argument("--seeds", type=int, default=None, help="default: 3 cnn, 2 transformer")
    args = parser.parse_args()
    seeds = args.seeds or (3 if args.topology == "cnn" else 2)
    torch.set_num_threads(1)
    started = time.perf_counter()
    data = measure(args.topology, seeds)
    data["wall_time_s"] = round(time.perf_counter() - started, 1)
    path = ROOT / "docs" / "evidence" / f"capacity-{args.topology}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
