"""Random lifecycle operations over real slots (``lifecycle_fuzz.py``), in a child process.

A child process, because the operations run real blueprints forward and backward (GroupNorm
included, see ``esper_core.groupnorm``): a crash in torch must fail this test, not end the
test run. Seeded and bounded (operations and seconds); the counts are printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("seed", [1616, 1617])
def test_random_lifecycle_operations_hold_every_invariant(seed: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.adversarial.lifecycle_fuzz", str(seed), "6000", "90"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"the fuzzing process died ({done.returncode}): {done.stderr[-3000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"lifecycle operations (seed {seed}): tried {result['tried']}, succeeded {result['succeeded']}, "
        f"rejected {result['rejected']}, failed {result['failed']}; stages {result['by_stage']}"
    )
    assert result["failed"] == 0, "\n".join(result["failures"])
    assert result["tried"] >= 1000, result  # the time bound must not hide a broken run
    assert {"BLENDING", "HOLDING", "EMBARGOED"} <= set(result["by_stage"]), result["by_stage"]
