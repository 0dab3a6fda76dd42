"""What ``esper demo`` says before it trains: runs too short (or budgets too small) for anything
to grow, and where the candidate blueprints come from, including packs that do not ship with
Esper. The user-facing checks go through the real ``esper`` command (marked ``demo``); the
notes' logic is also checked in-process on real settings and hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from esper_core.demo.preflight import candidate_blueprints, notes, timing
from esper_core.demo.settings import DemoSettings
from esper_core.demo.tasks import make_task
from esper_core.errors import OptionError
from esper_core.registry import temporary_blueprints
from esper_core.spec import BlueprintSpec

ESPER = shutil.which("esper", path=str(Path(sys.executable).parent)) or "esper"


def esper(
    *args: str, extra_path: Path | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "2000"}  # the notes are long; keep each on one line
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([ESPER, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _notes_of(stdout: str) -> list[str]:
    return [line.removeprefix("note: ") for line in stdout.splitlines() if line.startswith("note: ")]


# ---- runs too short for a seed ---------------------------------------------------------------


@pytest.mark.demo
@pytest.mark.parametrize("epochs", [4, 10])
def test_a_run_too_short_for_a_seed_says_so_and_still_runs(epochs: int, tmp_path: Path) -> None:
    # The reported instances: `esper demo --seeds 1 --epochs 4` (and 10) grew nothing and said nothing.
    result = esper("demo", "--seeds", "1", "--epochs", str(epochs), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    timing_ = report["seed_timing"]
    # Default controller (warm-up 3, plateau window 2, ramp 3) and strict gates (3 + 3 dwell).
    assert (timing_["germination_epoch"], timing_["first_blended_epoch"], timing_["earliest_fossilization"]) == (
        3, 8, 11,
    )  # fmt: skip
    note, *after = report["notes"]
    assert note.startswith(f"--epochs {epochs} ends before the earliest epoch at which a seed can be kept")
    for setting in ("warmup_epochs=3", "plateau_window=2", "min_training_evaluations=3", "ramp_epochs=3"):
        assert setting in note
    assert "use --epochs 11 or more (default 30)" in note
    # The count is a lower bound, and the note says what else must happen.
    assert (
        "Even then nothing may grow: 11 is a lower bound that assumes the validation score plateaus at epoch 3, "
        "the earliest possible, and the controller germinates only on a plateau (the best of the last "
        "plateau_window=2 epochs less than plateau_min_delta=0.5 pp above the best before them)" in note
    )
    # Printed at the start, before any result, and again after the tables; a grown model that
    # germinated nothing is said once, at the end (see the test of --epochs 14 below).
    lines = result.stdout.splitlines()
    printed = [i for i, line in enumerate(lines) if line == f"note: {note}"]
    first_result = next(i for i, line in enumerate(lines) if "done:" in line)
    assert len(printed) == 2 and printed[0] < first_result < printed[1]
    grown = report["runs"][0]["models"]["grown:gain_per_param"]
    assert [n.startswith("grown (gain_per_param) germinated no seed") for n in after] == (
        [grown["no_germination"] is not None]
    )
    assert [lines.index(f"note: {n}") > printed[1] for n in after] == [True] * len(after)
    runs = report["runs"][0]["models"]
    assert report["summary"]["models"]["grown:gain_per_param"]["seeds_fossilized"]["mean"] == 0
    if epochs < 8:  # no seed blended in: the grown model is the host alone, epoch by epoch
        assert "No seed can even blend in" in note
        assert [h["accuracy"] for h in runs["grown:gain_per_param"]["history"]] == [
            h["accuracy"] for h in runs["host_alone"]["history"]
        ]
    else:
        assert "At best, seeds are still on probation at the end and none is kept" in note


@pytest.mark.demo
def test_a_run_in_which_nothing_germinates_says_why_at_the_end(tmp_path: Path) -> None:
    # The reported instance: `esper demo --epochs 14` is long enough for the preflight (11 epochs),
    # but the score was still climbing at every step, so nothing germinated, and nothing said so.
    result = esper("demo", "--seeds", "1", "--epochs", "14", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    grown = report["runs"][0]["models"]["grown:gain_per_param"]
    assert grown["seed_counts"]["germinated"] == 0 and grown["events"] == []
    assert grown["no_germination"]["kind"] == "no_plateau"
    assert grown["no_germination"]["detail"].startswith(
        "the score never plateaued from epoch 3 to 14 (the smallest gain was "
    )
    (note,) = report["notes"]
    assert note.startswith(
        "grown (gain_per_param) germinated no seed in 14 epochs for random seed 0 (of 1), so for it the grown "
        "model (and its static twin) is the host alone. The controller germinates only when the validation "
        "score plateaus (the best of the last plateau_window=2 epochs less than plateau_min_delta=0.5 pp above "
        f"the best before them) and a blueprint is affordable: {grown['no_germination']['detail']}. What may help: "
        "more epochs give the score time to level off"
    )
    # Said once, after the tables (there was nothing to say before training).
    lines = result.stdout.splitlines()
    assert _notes_of(result.stdout) == [note]
    assert lines.index(f"note: {note}") > next(i for i, line in enumerate(lines) if "done:" in line)
    # What it says is what happened: the grown model trained exactly as the host alone.
    host = report["runs"][0]["models"]["host_alone"]["history"]
    assert [h["accuracy"] for h in grown["history"]] == [h["accuracy"] for h in host]


def test_a_run_long_enough_has_no_note() -> None:
    host = make_task("cnn", 0).make_host()
    for epochs, expected in ((11, 0), (10, 1)):
        assert len(notes(DemoSettings.resolve("cnn", epochs=epochs), host)) == expected
    # Permissive gates shorten the probation: 3 + 1 + 1 + 3 + 1.
    settings = DemoSettings.resolve("cnn", epochs=9, gate_policy="permissive")
    assert timing(settings).earliest_fossilization == 9 and notes(settings, host) == []


def test_a_dwell_beyond_the_stage_limit_says_no_seed_can_be_kept() -> None:
    settings = DemoSettings.resolve("cnn", gate_thresholds={"min_training_evaluations": 13})
    (note,) = notes(settings, make_task("cnn", 0).make_host())
    assert note.startswith(
        "no seed can be kept: TRAINING needs 13 epochs, more than the controller's max_stage_epochs=12"
    )


# ---- budgets and blueprints that leave nothing to grow ---------------------------------------------


@pytest.mark.demo
def test_a_budget_too_small_for_any_blueprint_says_so(tmp_path: Path) -> None:
    # The tiny host has 152 parameters: a budget of 0.001 x host is 0 seed parameters.
    args = [
        "demo",
        "--size",
        "tiny",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--budget",
        "0.001",
        "--out",
        str(tmp_path),
    ]
    result = esper(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    budget_notes = [n for n in report["notes"] if "affords no allowed blueprint" in n]
    assert budget_notes == [
        "the seed budget --budget 0.001 x 152 host parameters = 0 affords no allowed blueprint (the cheapest, "
        "norm at r0c0, has 5 parameters), so nothing can grow; use --budget 0.033 or more to afford it (a seed "
        "then still germinates only once the validation score plateaus)"
    ]
    assert budget_notes[0] in _notes_of(result.stdout)
    # The suggested budget is enough.
    host = make_task("cnn", 0, "tiny").make_host()
    settings = DemoSettings.resolve("cnn", size="tiny", epochs=30, budget=0.033)
    assert notes(settings, host) == []


class _Gain(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.gain.view(1, -1, 1, 1))


def _wide_only(dim: int) -> None:
    if dim < 64:
        raise OptionError(f"wide_gain needs dim >= 64, got {dim}")


def test_no_allowed_blueprint_buildable_at_any_slot_says_so() -> None:
    spec = BlueprintSpec(
        "wide_gain", "cnn", _Gain, lambda dim: dim, "test: gain, wide hosts only", validate=_wide_only
    )
    with temporary_blueprints(spec, distribution="preflight-tests"):
        settings = DemoSettings.resolve("cnn", size="tiny", include=("wide_gain",))
        assert notes(settings, make_task("cnn", 0, "tiny").make_host()) == [
            "no allowed cnn blueprint can be built at any slot of this host (widths 2, 4), so nothing can "
            "grow; change --include/--exclude (`esper blueprints --dim D` shows why a blueprint is not buildable)"
        ]


# ---- third-party packs among the candidates -------------------------------------------------------

_PACK = """
import torch
from torch import nn

from esper_core import BlueprintSpec, hookimpl


class Gain(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gain = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x * (1 + self.gain.view(1, -1, 1, 1))


@hookimpl
def esper_register_blueprints(register):
    register(BlueprintSpec("acme_gain", "cnn", Gain, lambda dim: dim, "per-channel gain (third-party test pack)"))
"""


def _install_pack(site: Path) -> None:
    """An installed third-party distribution as pip leaves it: metadata, entry point, module."""
    info = site / "acme_blueprints-0.2.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-blueprints\nVersion: 0.2.0\n")
    (info / "entry_points.txt").write_text("[esper.blueprints]\nmain = acme_blueprints\n")
    (site / "acme_blueprints.py").write_text(_PACK)


@pytest.mark.demo
def test_blueprints_of_a_third_party_pack_are_named_at_the_start_and_recorded(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _install_pack(site)
    base = ["demo", "--size", "tiny", "--epochs", "1", "--seeds", "1"]
    result = esper(*base, "--out", str(tmp_path / "all"), extra_path=site)
    assert result.returncode == 0, result.stderr
    header = result.stdout.split("note:")[0]
    assert (
        "candidate blueprints from esper-blueprints-cnn 0.1.0 (norm, attention, conv_small, bottleneck, "
        "depthwise, conv_light, conv_heavy); acme-blueprints 0.2.0 (acme_gain)" in header
    )
    assert (
        "of which from packs not shipped with Esper: acme-blueprints 0.2.0 (acme_gain); restrict with "
        "--include/--exclude" in header
    )
    report = json.loads((tmp_path / "all" / "report.json").read_text())
    rows = {row["name"]: row for row in report["candidates"]}
    assert rows["acme_gain"] == {
        "name": "acme_gain",
        "distribution": "acme-blueprints",
        "version": "0.2.0",
        "shipped": False,
    }
    assert rows["conv_small"]["distribution"] == "esper-blueprints-cnn" and rows["conv_small"]["shipped"]
    assert "noop" not in rows  # excluded by default
    # --exclude takes it out again, and the run says nothing about packs from outside.
    result = esper(*base, "--exclude", "noop,acme_gain", "--out", str(tmp_path / "without"), extra_path=site)
    assert result.returncode == 0, result.stderr
    assert "acme-blueprints" not in result.stdout and "not shipped with Esper" not in result.stdout
    report = json.loads((tmp_path / "without" / "report.json").read_text())
    assert {row["name"] for row in report["candidates"]} == set(rows) - {"acme_gain"}


def test_candidates_follow_include_and_exclude() -> None:
    settings = DemoSettings.resolve("cnn", include=("conv_small", "norm"), exclude=("norm",))
    assert [row["name"] for row in candidate_blueprints(settings)] == ["conv_small"]
