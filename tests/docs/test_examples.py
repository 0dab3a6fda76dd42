"""The training examples in ``examples/`` run as a user runs them, and resume exactly.

* ``examples/multiprocess/train.py`` under ``torchrun --nproc-per-node 2`` (gloo, CPU,
  127.0.0.1): a run that writes a checkpoint after epoch 4 and goes on, then a second
  ``torchrun`` that resumes from that file. The resumed epochs equal the uninterrupted ones
  bit for bit (losses, accuracies, decisions, a digest of every parameter and lifecycle),
  the replicas are identical on both ranks, Adam's step count on a host weight covers every
  step (the optimizer was never rebuilt), and neither run prints a warning (in particular
  DDP's "Grad strides do not match bucket view strides").
* ``examples/single_process.py``: the same cut-and-resume in one process, with an injected
  model, the governor and a OneCycleLR scheduler.

Each command runs in its own session and is killed as a group at its deadline, so a hang
fails the test instead of the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MULTI = ROOT / "examples" / "multiprocess" / "train.py"
SINGLE = ROOT / "examples" / "single_process.py"
# Python warnings ("UserWarning: ...") and glog-style lines that torch and torchrun log as warnings.
WARNING = re.compile(r"Warning|^W\d{4} ", re.MULTILINE)


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "always"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
        out, _ = proc.communicate()
        raise AssertionError(f"{cmd} did not finish within {timeout} s:\n{out[-4000:]}") from None
    assert proc.returncode == 0, f"{cmd} exited with {proc.returncode}:\n{out[-6000:]}"
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torchrun(*args: str, cwd: Path) -> str:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    return _run([*launcher, str(MULTI), *args], cwd)


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


@pytest.mark.timeout(600)
def test_multiprocess_example_resumes_exactly_without_warnings(tmp_path: Path) -> None:
    straight_log = _torchrun("--epochs", "10", "--save-at", "4", "--out", "a", cwd=tmp_path)
    resumed_log = _torchrun("--epochs", "10", "--resume", "a/checkpoint.pt", "--out", "b", cwd=tmp_path)
    for log in (straight_log, resumed_log):
        assert not WARNING.search(log), log
        assert "replicas identical: True" in log
    straight, resumed = _summary(tmp_path / "a"), _summary(tmp_path / "b")
    actions = {d[2] for d in straight["decisions"]}
    assert {"germinate", "advance", "prune"} <= actions  # the controller ran a whole story
    assert any(entry["rebuilt"] for entry in straight["history"][4:])  # DDP rebuilt after the cut
    assert [e["epoch"] for e in resumed["history"]] == list(range(5, 11))
    assert resumed["history"] == straight["history"][4:]
    assert resumed["decisions"] == straight["decisions"]
    assert len(set(straight["digests"])) == 1 and straight["digests"] == resumed["digests"]
    # 256 samples per rank in batches of 32: 8 Adam steps per epoch, none lost to a rebuild.
    assert straight["host_adam_steps"] == resumed["host_adam_steps"] == 80


@pytest.mark.timeout(600)
def test_single_process_example_resumes_exactly(tmp_path: Path) -> None:
    straight_log = _run([sys.executable, str(SINGLE), "--save-at", "5", "--out", "a"], tmp_path)
    resumed_log = _run([sys.executable, str(SINGLE), "--resume", "a/checkpoint.pt", "--out", "b"], tmp_path)
    for log in (straight_log, resumed_log):
        assert not WARNING.search(log), log
    straight, resumed = _summary(tmp_path / "a"), _summary(tmp_path / "b")
    assert {"germinate", "advance", "prune"} <= {d[2] for d in straight["decisions"]}
    assert any(entry["contributions"] for entry in straight["history"])  # seeds were measured
    assert resumed["history"] == straight["history"][5:]
    assert resumed["decisions"] == straight["decisions"]
    assert resumed["digest"] == straight["digest"]
    assert resumed["lr"] == straight["lr"]  # the scheduler resumed where it was
