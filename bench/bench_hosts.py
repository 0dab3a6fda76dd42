"""Hosts: the cost of empty slots, and the wall time of the default ``esper demo``.

* Dormant overhead: a training step (forward + backward) of ``MorphogeneticModel(host)``
  with a slot at every injection point and no seed, against the bare host. Target <= 1.02.
* Demo wall time: the default ``esper demo`` (cnn and transformer), reported as a fraction
  of the 3-minute budget (so the target is <= 1.0); the detail gives seconds.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import torch

from bench._harness import Benchmark, Measurement, compare, ratio_of
from esper_core.hosts import CNNHost, TransformerHost
from esper_core.model import MorphogeneticModel

DEMO_BUDGET_S = 180.0


def _step(module: torch.nn.Module, x: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    module(x).float().sum().backward()


def _dormant(host: torch.nn.Module, x: torch.Tensor) -> Measurement:
    torch.manual_seed(0)
    model = MorphogeneticModel(host)
    n = len(model.slot_ids)
    return compare(
        lambda: _step(model, x),
        lambda: _step(host, x),
        repeats=41,
        number=10,
        warmup=5,
        detail=f"{n} empty slots; {type(host).__name__} {host.host_param_count():,} params; batch {tuple(x.shape)}",
    )


def dormant_cnn() -> Measurement:
    return _dormant(CNNHost(10), torch.randn(32, 3, 32, 32))


def dormant_transformer() -> Measurement:
    host = TransformerHost(128, n_embd=64, n_head=4, n_layer=4, block_size=64)
    return _dormant(host, torch.randint(0, 128, (8, 64)))


def _demo(topology: str) -> Measurement:
    from rich.console import Console

    from esper_core.demo import DemoSettings, run_demo

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        settings = DemoSettings.resolve(topology)  # exactly what `esper demo --topology T` runs
        report = run_demo(settings, Path(out), console=Console(file=io.StringIO()))
        wall = time.perf_counter() - start
    metric = report["metrics"][0]
    shown = ", ".join(
        f"{name} {entry['final'][metric]['mean']:.3g}" for name, entry in report["summary"]["models"].items()
    )
    seeds = len(settings.seeds)
    return ratio_of(
        [wall / DEMO_BUDGET_S], detail=f"{wall:.1f} s of {DEMO_BUDGET_S:.0f} s; {seeds} seeds; {shown}"
    )


BENCHMARKS = [
    Benchmark("hosts: dormant MorphogeneticModel / bare CNNHost (train step)", "<= 1.02", dormant_cnn),
    Benchmark(
        "hosts: dormant MorphogeneticModel / bare TransformerHost (train step)",
        "<= 1.02",
        dormant_transformer,
    ),
    Benchmark("hosts: default `esper demo` wall time / 180 s (cnn)", "<= 1.0", lambda: _demo("cnn")),
    Benchmark(
        "hosts: default `esper demo` wall time / 180 s (transformer)", "<= 1.0", lambda: _demo("transformer")
    ),
]
