"""``esper demo`` with an installed third-party pack whose blueprint G0 refuses (user report).

The demo includes every installed pack's blueprints, so one bad blueprint used to end the
whole run with a ``LifecycleError`` after many epochs of training. Now the refusal is an
event line, the run goes on (other blueprints still grow) and ``report.json`` records it
under ``runs[].models["grown:<strategy>"].refusals`` and ``events``. The pack is installed
as pip leaves one (a ``.dist-info`` with an entry point) on ``PYTHONPATH``, and the demo runs
through the real ``esper`` command (marked ``demo``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ESPER = shutil.which("esper", path=str(Path(sys.executable).parent)) or "esper"

_PACK = """
import torch
from torch import nn

from esper_core import BlueprintSpec, hookimpl


class InPlace(nn.Module):
    # The reported blueprint: multiplies its input in place, so G0 refuses it.
    def __init__(self, dim):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4 * dim))

    def forward(self, x):
        x.mul_(1)
        return x * (1 + self.w[: x.shape[1]].view(1, -1, 1, 1))


@hookimpl
def esper_register_blueprints(register):
    # 4 * dim parameters: larger than any good candidate below, so gain_per_param tries it first.
    register(BlueprintSpec("acme_inplace", "cnn", InPlace, lambda dim: 4 * dim, "writes into its input"))
"""


def _install_pack(site: Path) -> None:
    info = site / "acme_bad-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-bad\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[esper.blueprints]\nmain = acme_bad\n")
    (site / "acme_bad.py").write_text(_PACK)


@pytest.mark.demo
def test_a_refused_third_party_blueprint_is_an_event_line_and_the_demo_goes_on(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _install_pack(site)
    env = {
        **os.environ,
        "COLUMNS": "2000",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }
    args = ["demo", "--size", "tiny", "--epochs", "6", "--seeds", "1", "--gates", "permissive"]
    args += [
        "--include",
        "acme_inplace,norm",
        "--strategy",
        "gain_per_param,cheapest",
        "--out",
        str(tmp_path / "out"),
    ]
    result = subprocess.run([ESPER, *args], capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr
    refused_lines = [
        line for line in result.stdout.splitlines() if "germination of acme_inplace refused" in line
    ]
    assert refused_lines, result.stdout
    assert all("input_modified_in_place" in line and "going on without it" in line for line in refused_lines)
    lines = [line for line in result.stdout.splitlines() if "grown (gain_per_param)" in line]
    germinated = [i for i, line in enumerate(lines) if re.search(r"r\dc\d: germinated norm", line)]
    refused = [i for i, line in enumerate(lines) if "germination of acme_inplace refused" in line]
    assert germinated and refused and refused[0] < germinated[0], result.stdout  # the order tried

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    models = report["runs"][0]["models"]
    for key in ("grown:gain_per_param", "grown:cheapest"):
        grown = models[key]
        refusals = grown["refusals"]
        pairs = [(r["slot_id"], r["blueprint"]) for r in refusals]
        assert len(pairs) == len(set(pairs))  # never the same pair twice
        assert all(
            r["blueprint"] == "acme_inplace" and "input_modified_in_place" in r["reason"] for r in refusals
        )
        events = [e for e in grown["events"] if e["event"] == "Refusal"]
        assert [(e["epoch"], e["slot_id"]) for e in events] == [(r["epoch"], r["slot_id"]) for r in refusals]
        assert {s["blueprint"] for s in grown["seeds"]} <= {"norm"}
    assert models["grown:gain_per_param"]["refusals"]  # largest first: the bad one was tried
    assert models["grown:gain_per_param"]["seeds"]  # ... and norm grown after it, in the same run
