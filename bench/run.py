"""Run every benchmark (or the modules named on the command line) and print one table.

``python -m bench.run [bench_module ...]`` writes ``bench/results.json`` with the machine
description next to the numbers.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from bench._harness import Benchmark

BENCH_DIR = Path(__file__).resolve().parent


def discover(names: list[str]) -> list[str]:
    if names:
        return [n.removeprefix("bench.").removesuffix(".py") for n in names]
    return sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    modules = discover(list(sys.argv[1:] if argv is None else argv))
    results = []
    header = f"{'benchmark':<58} {'median':>9} {'min':>9} {'max':>9}  {'target':<10} ok"
    print(header)
    print("-" * len(header))
    for module_name in modules:
        module = importlib.import_module(f"bench.{module_name}")
        benchmarks: list[Benchmark] = module.BENCHMARKS
        for bench in benchmarks:
            start = time.perf_counter()
            try:
                m = bench.run()
            except Exception:
                traceback.print_exc()
                results.append(
                    {"module": module_name, "name": bench.name, "target": bench.target, "error": True}
                )
                print(f"{bench.name:<58} {'ERROR':>9}")
                continue
            ok = m.meets(bench.target)
            results.append(
                {
                    "module": module_name,
                    "name": bench.name,
                    "median": m.median,
                    "min": m.minimum,
                    "max": m.maximum,
                    "repeats": m.repeats,
                    "target": bench.target,
                    "within_target": ok,
                    "detail": m.detail,
                    "note": bench.note,
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
            print(
                f"{bench.name:<58} {m.median:>9.3f} {m.minimum:>9.3f} {m.maximum:>9.3f}  {bench.target:<10} "
                f"{'yes' if ok else 'NO'}",
                flush=True,
            )
    out = BENCH_DIR / "results.json"
    if not (argv or sys.argv[1:]):
        out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
