"""Run a scenario module on N real processes (gloo on 127.0.0.1) and collect the results.

Every rank is a plain ``python worker.py`` subprocess: no pickling of test functions, and
a rank that hangs is killed at the deadline, so a deadlock fails the test instead of
blocking CI. Each rank writes a JSON dict of scenario results; the harness returns one
dict per rank, or raises AssertionError with every rank's output when a rank failed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "dist_worker.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_ranks(module: str, out_dir: Path, *, world: int = 2, deadline: float = 90.0) -> list[dict]:
    """Run the scenario modules ``module`` (comma-separated, in this folder) on ``world`` ranks."""
    port = free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ESPER_LOAD_PLUGINS": "",
        "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
    }
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo on the loopback device
    procs = []
    for rank in range(world):
        out = out_dir / f"rank{rank}.json"
        cmd = [sys.executable, str(WORKER), module, str(rank), str(world), str(port), str(out)]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    logs = []
    start = time.monotonic()
    for proc in procs:
        try:
            remaining = max(1.0, deadline - (time.monotonic() - start))
            logs.append(proc.communicate(timeout=remaining)[0])
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            logs.append(proc.communicate()[0] + f"\n[killed after {deadline} s]")
    codes = [proc.returncode for proc in procs]
    if any(codes):
        text = "\n".join(
            f"--- rank {r} (exit {c})\n{log[-4000:]}"
            for r, (c, log) in enumerate(zip(codes, logs, strict=True))
        )
        raise AssertionError(f"a rank failed:\n{text}")
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(world)]
