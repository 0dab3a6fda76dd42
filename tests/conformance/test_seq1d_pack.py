"""A pack that adds a (B, C, L) topology, installed with pip, works with every blend algorithm.

``examples/esper-blueprints-seq1d`` (the complete example of ``docs/writing-a-blueprint-pack.md``,
section "Adding a topology") registers ``seq1d``: feature axis 1, sequence axis 2, the
Conv1d layout. It is installed into a temporary folder and used from child processes, so
Esper finds it through its entry point as after a user's ``pip install``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "esper-blueprints-seq1d"
DIST = "esper-blueprints-seq1d"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("seq1d-pack")
    source = root / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(site), str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESPER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env["ESPER_LOAD_PLUGINS"] = DIST
    env["ESPER_STRICT_PLUGINS"] = "1"
    env["SEQ1D_SOURCE"] = str(source)
    return env


def _run(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=400
    )


def test_the_pack_shows_its_topology_and_blueprints(installed) -> None:
    script = (
        "from esper_core.cli import main; main(['plugins', '--json']); print('\\x1e');"
        "main(['blueprints', '--topology', 'seq1d', '--dim', '16', '--json'])"
    )
    result = _run(installed, "-c", script)
    assert result.returncode == 0, result.stderr
    plugins_json, blueprints_json = result.stdout.split("\x1e")
    pack = {p["distribution"]: p for p in json.loads(plugins_json)}[DIST]
    assert pack["loaded"] and pack["topologies"] == ["seq1d"]
    assert pack["blueprints"] == ["seq1d:causal_conv", "seq1d:shift_mix"]
    rows = {r["name"]: r for r in json.loads(blueprints_json)}
    assert rows["causal_conv"]["params"] == 16 * 3 + 16 * 16  # depthwise k=3 + 1x1, no bias
    assert rows["shift_mix"]["params"] == 16 * 16 + 16
    assert rows["causal_conv"]["accepted"] == {"kernel_size": "an int in [2, 9]", "bias": "a bool"}


def test_the_packs_own_conformance_test_passes(installed) -> None:
    source = Path(installed["SEQ1D_SOURCE"])
    result = _run(installed, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests", cwd=source)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test_conformance[seq1d:causal_conv] PASSED" in output
    assert "test_conformance[seq1d:shift_mix] PASSED" in output


GROW = """
import json, torch
from esper_core import BlendAlgorithm, QualityGates, SeedStage, get_blueprint
from esper_core.slot import SeedSlot
from esper_core.testing import Check, conformance_report

out = {}
for name in ("causal_conv", "shift_mix"):
    report = conformance_report(get_blueprint("seq1d", name))
    out[name] = {"kit": report.format(), "slot_checked": Check.SLOT in report.checks_run}
    for algorithm in BlendAlgorithm:
        torch.manual_seed(0)
        slot = SeedSlot("s0", topology="seq1d", dim=8, gates=QualityGates("permissive", permissive_training_evaluations=0))
        slot.germinate(name, algorithm=algorithm, ramp_epochs=2)
        slot.advance(SeedStage.TRAINING)
        slot.advance(SeedStage.BLENDING)
        slot.step_epoch()
        modules = [slot.seed] + ([slot.blend_gate] if slot.blend_gate is not None else [])
        with torch.no_grad():  # a trained seed and gate: outputs now depend on the weights
            for module in modules:
                for p in module.parameters():
                    p.add_(0.3 * torch.randn_like(p))
        slot.eval()
        x = torch.randn(2, 8, 12)
        later = x.clone()
        later[..., 6:] += 3.0
        with torch.no_grad():
            y, y_later = slot(x), slot(later)
            gate = None if slot.blend_gate is None else list(slot.blend_gate(x).shape)
        out[f"{name}/{algorithm.name}"] = {
            "stage": slot.stage.name,
            "alpha": slot.alpha,
            "shape": list(y.shape),
            "gate": gate,
            "past_change": (y[..., :6] - y_later[..., :6]).abs().max().item(),
            "future_change": (y[..., 6:] - y_later[..., 6:]).abs().max().item(),
            "seed_effect": (y - x).abs().max().item(),
        }
print(json.dumps(out))
"""


def test_every_blend_algorithm_grows_causal_seeds_on_the_new_layout(installed) -> None:
    result = _run(installed, "-c", GROW)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("causal_conv", "shift_mix"):
        assert (
            out[name]["kit"] == f"seq1d:{name} passed 21 conformance checks"
        )  # every check but channels-last
        assert out[name]["slot_checked"]  # identity-in-slot ran, for ADD, MULTIPLY and GATE
        for algorithm in ("ADD", "MULTIPLY", "GATE"):
            run = out[f"{name}/{algorithm}"]
            assert run["stage"] == "BLENDING" and run["alpha"] > 0 and run["shape"] == [2, 8, 12]
            assert run["gate"] == ([2, 1, 12] if algorithm == "GATE" else None)  # per position along L
            assert run["seed_effect"] > 1e-3  # the blended seed changes the output...
            assert run["future_change"] > 1e-3
            assert run["past_change"] == 0.0  # ...but never from later positions
