"""Conformance kit cost: a whole pack of 8 blueprints, as a pack's CI runs it.

Each repetition is a fresh process (torch import, Dynamo warm-up and all) that runs
``conformance_report`` on every blueprint of one installed pack with the default sweep;
the number is wall seconds for the whole process, target under 30 s on 2 cores. The
detail names the slowest blueprints and any that failed, so a regression can be traced.
The per-blueprint ``compile`` check (``aot_eager`` by default) dominates; the heavy sweep
(``ESPER_CONFORMANCE_FULL=1``: more dims, Inductor) is deliberately not in the budget.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

from bench._harness import Benchmark, Measurement

_CHILD = """
import json, sys, time
from esper_core.registry import get_registry
from esper_core.testing import conformance_report
registry = get_registry()
specs = [s for s in registry.list_blueprints(sys.argv[1])
         if registry.source(s).distribution == sys.argv[2]]
per, failed = {}, []
for spec in specs:
    start = time.perf_counter()
    report = conformance_report(spec)
    per[spec.key] = round(time.perf_counter() - start, 2)
    if not report.passed:
        failed.append(spec.key + ": " + ", ".join(sorted(report.failed_checks)))
print(json.dumps({"per": per, "failed": failed}))
"""


def _pack(topology: str, distribution: str, repeats: int = 3) -> Measurement:
    totals: list[float] = []
    cpu: list[float] = []
    last: dict = {}
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, topology, distribution], check=True, capture_output=True, text=True
        )
        totals.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        last = json.loads(done.stdout.strip().splitlines()[-1])
    slowest = sorted(last["per"].items(), key=lambda kv: -kv[1])[:3]
    # CPU seconds next to wall seconds: on a shared machine wall time inflates, CPU time barely does
    detail = (
        f"{len(last['per'])} blueprints; cpu s median {statistics.median(cpu):.1f}; "
        f"slowest {slowest}; failed: {last['failed'] or 'none'}"
        if last["per"]
        else f"no blueprints of {distribution} found"
    )
    return Measurement(
        median=statistics.median(totals),
        minimum=min(totals),
        maximum=max(totals),
        repeats=repeats,
        detail=detail,
    )


BENCHMARKS = [
    Benchmark(
        name="conformance: whole cnn pack (8 blueprints), seconds",
        target="<= 30",
        run=lambda: _pack("cnn", "esper-blueprints-cnn"),
        note="fresh process per repetition, default sweep (8, 9, 13 real; 1024 meta), aot_eager compile",
    ),
    Benchmark(
        name="conformance: whole transformer pack (8 blueprints), seconds",
        target="<= 30",
        run=lambda: _pack("transformer", "esper-blueprints-transformer"),
        note="fresh process per repetition, default sweep (8, 9, 13 real; 1024 meta), aot_eager compile",
    ),
]
