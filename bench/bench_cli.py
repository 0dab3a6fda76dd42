"""CLI cold start: ``esper blueprints --dim 512`` against ``python -c 'import torch'``.

Both are fresh processes, so the ratio shows what Esper adds on top of torch's own import.
"""

from __future__ import annotations

import subprocess
import sys

from bench._harness import Benchmark, Measurement, compare


def _run(*args: str) -> None:
    subprocess.run([sys.executable, *args], check=True, capture_output=True)


def cold_start() -> Measurement:
    return compare(
        lambda: _run("-m", "esper_core.cli", "blueprints", "--dim", "512"),
        lambda: _run("-c", "import torch"),
        repeats=7,
        warmup=1,
        detail="subprocess wall time ratio",
    )


BENCHMARKS = [
    Benchmark(
        name="cli: cold `esper blueprints --dim 512` / `import torch`",
        target="<= 1.3",
        run=cold_start,
    )
]
