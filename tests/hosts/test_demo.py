"""``esper demo`` end to end through the real ``esper`` command, on the tiny configuration.

Checks what a user sees: the report records every setting and version, every model of
every seed, compute that adds up, epochs numbered alike in printed events, report and
figure; bad options and an unwritable ``--out`` give one line and exit status 2.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from esper_core.demo import DemoSettings, SettingsError, main, run_demo
from esper_core.demo.plot import EVENT_MARKERS, draw_figure
from esper_core.demo.settings import known_blueprints

ESPER = shutil.which("esper", path=str(Path(sys.executable).parent)) or "esper"
TINY = ["--size", "tiny", "--epochs", "4", "--gates", "permissive"]
_EVENT_LINE = re.compile(r"^\s*seed (\d+)\s+(grown \(\w+\))\s+epoch\s+(\d+)\s+(\S+): (.*)$")


def esper(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([ESPER, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module", params=["cnn", "transformer"])
def demo_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, str]:
    """One real two-seed, two-strategy tiny run per topology, shared by the checks below."""
    out = tmp_path_factory.mktemp(f"demo-{request.param}")
    args = ["demo", *TINY, "--topology", request.param, "--seeds", "2", "--seed", "3"]
    args += ["--strategy", "gain_per_param,cheapest", "--out", str(out)]
    result = esper(*args)
    assert result.returncode == 0, result.stderr
    return request.param, out, result.stdout


def test_report_records_every_setting_and_version(demo_run: tuple[str, Path, str]) -> None:
    topology, out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    settings = report["settings"]
    assert report["command"].startswith("esper demo --size tiny --epochs 4")
    assert settings["topology"] == topology and settings["epochs"] == 4 and settings["seeds"] == [3, 4]
    assert settings["strategies"] == ["gain_per_param", "cheapest"]
    assert settings["gates"]["policy"] == "permissive"
    assert settings["gates"]["thresholds"]["min_fossilize_contribution"] == 1.0  # the library default
    assert settings["budget_fraction"] == 0.5 and report["task"]["budget_params"] == int(
        0.5 * report["task"]["host"]["params"]
    )
    assert settings["include"] is None and "noop" in settings["exclude"]
    assert settings["lr"] == settings["seed_lr"] == 3e-3
    assert settings["batch_size"] == (64 if topology == "cnn" else 24)
    assert set(settings["controller"]) >= {"warmup_epochs", "plateau_window", "ramp_epochs", "prune_patience"}
    env = report["environment"]
    assert env["torch"] == torch.__version__
    pack = f"esper-blueprints-{topology}"
    assert env["packs"][pack]["loaded"] and re.match(r"\d+\.\d+", env["packs"][pack]["version"])
    assert report["metrics"][0] == ("accuracy" if topology == "cnn" else "bits_per_char")


def test_every_seed_trains_every_model_and_compute_adds_up(demo_run: tuple[str, Path, str]) -> None:
    _, out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    keys = [
        "host_alone",
        "grown:gain_per_param",
        "static:gain_per_param",
        "grown:cheapest",
        "static:cheapest",
    ]
    per_epoch = report["task"]["samples_per_epoch"]
    host_flops = report["flops"]["host_forward_per_sample"]
    for run in report["runs"]:
        assert list(run["models"]) == keys
        host = run["models"]["host_alone"]
        assert host["params"] == report["task"]["host"]["params"]
        assert [h["epoch"] for h in host["history"]] == [0, 1, 2, 3, 4]
        assert [h["samples"] for h in host["history"]] == [per_epoch * e for e in range(5)]
        # The host's training compute is exactly 3 x forward x samples (Kaplan et al.'s 6ND).
        assert host["train_flops"] == 3 * host_flops * per_epoch * 4
        for strategy in ("gain_per_param", "cheapest"):
            grown, static = run["models"][f"grown:{strategy}"], run["models"][f"static:{strategy}"]
            added = sum(s["params_added"] for s in grown["seeds"])
            assert grown["params"] == static["params"] == host["params"] + added
            assert [a["blueprint"] for a in static["architecture"]] == [
                s["blueprint"] for s in grown["seeds"] if s["final_stage"] != "PRUNED"
            ]
            # Growth never costs less than the host and, before any seed runs, exactly the same.
            steps = [
                b["train_flops"] - a["train_flops"]
                for a, b in zip(grown["history"], grown["history"][1:], strict=False)
            ]
            assert all(step >= 3 * host_flops * per_epoch for step in steps)
            assert steps[0] == 3 * host_flops * per_epoch
            assert grown["eval_flops"] > 0 and static["eval_flops"] == 0
        for model in run["models"].values():
            flops = [h["train_flops"] for h in model["history"]]
            assert flops == sorted(flops) and flops[0] == 0 and model["train_flops"] == flops[-1]
    assert any(s for run in report["runs"] for s in run["models"]["grown:gain_per_param"]["seeds"])


def test_summary_is_the_mean_over_seeds_and_comparisons_are_paired(demo_run: tuple[str, Path, str]) -> None:
    _, out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    metric = report["metrics"][0]
    for model, entry in report["summary"]["models"].items():
        finals = [run["models"][model]["final"][metric] for run in report["runs"]]
        assert entry["final"][metric]["values"] == finals
        assert entry["final"][metric]["mean"] == pytest.approx(sum(finals) / len(finals))
        assert entry["final"][metric]["std"] == pytest.approx(
            torch.tensor(finals, dtype=torch.float64).std().item()
        )
    vs_host = next(
        c
        for c in report["comparisons"]
        if (c["a"], c["b"], c["metric"]) == ("grown:cheapest", "host_alone", metric)
    )
    expected = [
        run["models"]["grown:cheapest"]["final"][metric] - run["models"]["host_alone"]["final"][metric]
        for run in report["runs"]
    ]
    assert vs_host["equal_epochs"]["values"] == pytest.approx(expected)
    assert vs_host["higher_is_better"] is (metric == "accuracy")


def test_only_fossilized_seeds_count_as_kept(demo_run: tuple[str, Path, str]) -> None:
    """The reported instance: a seed still BLENDING at the end was counted as kept."""
    _, out, stdout = demo_run
    report = json.loads((out / "report.json").read_text())
    strategies = report["settings"]["strategies"]
    printed = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) > len(strategies) and cells[0].isdigit():
            printed[int(cells[0])] = cells[-len(strategies) :]
    probation = 0
    for run in report["runs"]:
        expected = []
        for strategy in strategies:
            model = run["models"][f"grown:{strategy}"]
            stages = [s["final_stage"] for s in model["seeds"]]
            counts = {
                "germinated": len(stages),
                "kept": stages.count("FOSSILIZED"),
                "on_probation": sum(s in ("GERMINATED", "TRAINING", "BLENDING", "HOLDING") for s in stages),
                "pruned": stages.count("PRUNED"),
            }
            assert model["seed_counts"] == counts
            expected.append(f"{counts['kept']}/{counts['on_probation']}/{counts['germinated']}")
            probation += counts["on_probation"]
            for seed in model["seeds"]:
                assert "contribution" not in seed  # one name per meaning (docs/user-guide.md)
                if seed["final_stage"] != "FOSSILIZED" and seed["final_stage"] != "PRUNED":
                    assert seed["contribution_at_decision"] is None and seed["alpha_at_end"] is not None
                    assert (seed["contribution_at_end"] is None) is (seed["alpha_at_end"] == 0.0)
        assert printed[run["seed"]] == expected
    assert probation > 0  # four epochs: the seeds are still on probation, none kept
    for model, entry in report["summary"]["models"].items():
        if model.startswith("grown:"):
            assert entry["seeds_fossilized"]["values"] == [
                r["models"][model]["seed_counts"]["kept"] for r in report["runs"]
            ]
            assert entry["seeds_on_probation"]["values"] == [
                r["models"][model]["seed_counts"]["on_probation"] for r in report["runs"]
            ]


def test_epochs_are_numbered_alike_in_printed_events_report_and_figure(
    demo_run: tuple[str, Path, str],
) -> None:
    _topology, out, stdout = demo_run
    report = json.loads((out / "report.json").read_text())
    printed = []
    for line in stdout.splitlines():
        match = _EVENT_LINE.match(line)
        if match:
            seed, model, epoch, slot, detail = match.groups()
            printed.append((int(seed), model, int(epoch), slot, f"{slot}: {detail}"))
    recorded = [
        (run["seed"], f"grown ({key.partition(':')[2]})", e["epoch"], e["slot_id"], e["detail"])
        for run in report["runs"]
        for key, model in run["models"].items()
        if key.startswith("grown:")
        for e in model["events"]
    ]
    assert printed and sorted(printed) == sorted(recorded)
    epochs = report["settings"]["epochs"]
    first = report["runs"][0]["models"]["grown:gain_per_param"]
    assert all(len(alpha) == epochs + 1 for alpha in first["alpha"].values())
    germinated = [e for e in first["events"] if e["event"] == "SeedGerminated"]
    assert germinated and all(1 <= e["epoch"] <= epochs for e in germinated)
    for seed in first["seeds"]:
        assert any(
            e["epoch"] == seed["germinated_epoch"] for e in germinated if e["seed_id"] == seed["seed_id"]
        )
    fig = draw_figure(report)
    try:
        alpha_axis, epoch_axis = fig.axes[0], fig.axes[1]
        for slot_id, values in first["alpha"].items():
            (line,) = [ln for ln in alpha_axis.lines if ln.get_gid() == f"alpha:{slot_id}"]
            assert list(line.get_xdata()) == list(range(epochs + 1)) and list(line.get_ydata()) == values
        drawn = sorted(
            (int(ln.get_xdata()[0]), ln.get_gid().split(":")[2])
            for ln in alpha_axis.lines
            if (ln.get_gid() or "").startswith("event:")
        )
        marked = sorted((e["epoch"], e["slot_id"]) for e in first["events"] if e["event"] in EVENT_MARKERS)
        assert drawn == marked
        rug = sorted(
            int(ln.get_xdata()[0])
            for ln in epoch_axis.lines
            if (ln.get_gid() or "").startswith("event:") and ln.get_gid().endswith("grown:gain_per_param")
        )
        all_runs = sorted(
            e["epoch"]
            for run in report["runs"]
            for e in run["models"]["grown:gain_per_param"]["events"]
            if e["event"] in EVENT_MARKERS
        )
        assert rug == all_runs
        legend = [t.get_text() for t in alpha_axis.get_legend().get_texts()]
        assert all(any(text.startswith(slot) for text in legend) for slot in first["alpha"])  # every slot
        curves = {
            ln.get_gid(): ln.get_zorder()
            for ln in epoch_axis.lines
            if (ln.get_gid() or "").startswith("curve:")
        }
        assert curves["curve:grown:gain_per_param"] > curves["curve:static:gain_per_param"]
    finally:
        from matplotlib import pyplot as plt

        plt.close(fig)
    assert (out / "growth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_language_model_figure_has_a_bits_per_char_panel(demo_run: tuple[str, Path, str]) -> None:
    topology, out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    fig = draw_figure(report)
    try:
        labels = [ax.get_ylabel() for ax in fig.axes if ax.get_visible()]
    finally:
        from matplotlib import pyplot as plt

        plt.close(fig)
    assert any("bits/char" in label for label in labels) is (topology == "transformer")
    assert sum("training" in ax.get_xlabel() for ax in fig.axes) == 1  # the metric-vs-FLOPs panel


def test_unwritable_out_is_one_line_naming_the_path_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out, reason in ((blocker / "sub", "Not a directory"), (blocker, "File exists")):
        result = esper("demo", *TINY, "--seeds", "1", "--out", str(out))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("esper demo: error: cannot write to --out") and str(out) in lines[0]
        assert reason in lines[0]
        assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0"], "--seeds must be an integer >= 1, got 0"),
        (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["--budget", "-0.5"], "--budget must be a finite number > 0 and at most 1000, got -0.5"),
        (["--budget", "0"], "--budget must be a finite number > 0 and at most 1000, got 0.0"),
        (["--budget", "1e20"], "--budget must be a finite number > 0 and at most 1000, got 1e+20"),
        (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (
            ["--strategy", "best"],
            "--strategy must be distinct names from ['gain_per_param', 'cheapest'], got 'best'",
        ),
        (["--gates", "lenient"], "argument --gates: invalid choice: 'lenient'"),
        (
            ["--gate-threshold", "speed=1"],
            "unknown gate threshold(s) ['speed']; accepted: ['min_training_improvement'",
        ),
        (["--gate-threshold", "min_activity"], "invalid threshold 'min_activity': expected NAME=NUMBER"),
        (
            ["--include", "conv_smal"],
            "--include: unknown cnn blueprint(s) ['conv_smal']; registered: attention,",
        ),
        (["--include", "noop"], "--include noop leaves no blueprint once --exclude noop is applied"),
        (["--topology", "graph"], "invalid choice: 'graph'"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process (the same main() the command runs) to keep the suite fast; the --out test
    # above and the fixture go through the real command.
    with pytest.raises(SystemExit) as info:
        main([*args, "--out", str(tmp_path / "never")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "never").exists()  # nothing is created for a run that cannot start


def test_an_exclude_of_every_blueprint_is_refused_like_an_empty_include(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The kind of `--include noop` (above): a grown model with no candidate can never grow.
    every = ",".join(known_blueprints("cnn"))
    with pytest.raises(SystemExit) as info:
        main(["--exclude", every, "--out", str(tmp_path / "never")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"--exclude {every} leaves no cnn blueprint (registered: " in err and "Traceback" not in err
    assert not (tmp_path / "never").exists()
    # One blueprint left is enough.
    assert DemoSettings.resolve("cnn", exclude=every.split(",")[1:]).exclude == tuple(every.split(",")[1:])


def test_a_zero_budget_is_refused_by_the_command_before_anything_runs(tmp_path: Path) -> None:
    # The reported instance: `esper demo --budget 0` launched a full run in which nothing could grow.
    out = tmp_path / "never"
    result = esper("demo", "--budget", "0", "--seeds", "1", "--out", str(out), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "esper demo: error: --budget must be a finite number > 0 and at most 1000, got 0.0"
    assert "Traceback" not in result.stderr and result.stdout == "" and not out.exists()
    with pytest.raises(SettingsError, match=r"--budget must be a finite number > 0 and at most 1000, got 0"):
        DemoSettings.resolve("cnn", budget=0)


def test_settings_flags_change_the_run(tmp_path: Path) -> None:
    result = esper(
        "demo", "--size", "tiny", "--epochs", "3", "--seeds", "1", "--gates", "strict",
        "--gate-threshold", "min_fossilize_contribution=0.25", "--budget", "0.3", "--include", "conv_small,depthwise",
        "--lr", "0.01", "--seed-lr", "0.002", "--batch-size", "32", "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    settings = report["settings"]
    assert settings["gates"] == {
        "policy": "strict",
        "overrides": {"min_fossilize_contribution": 0.25},
        "thresholds": {**settings["gates"]["thresholds"], "min_fossilize_contribution": 0.25},
    }
    assert (settings["budget_fraction"], settings["include"], settings["lr"], settings["seed_lr"]) == (
        0.3, ["conv_small", "depthwise"], 0.01, 0.002,
    )  # fmt: skip
    assert settings["batch_size"] == 32
    assert "gates: strict (min_fossilize_contribution=0.25)" in result.stdout
    grown = report["runs"][0]["models"]["grown:gain_per_param"]
    assert {s["blueprint"] for s in grown["seeds"]} <= {"conv_small", "depthwise"}
    assert sum(s["param_count"] for s in grown["seeds"]) <= report["task"]["budget_params"]


def test_runs_are_reproducible_and_independent_of_the_other_models(tmp_path: Path) -> None:
    """The same seed gives the same numbers, whichever other strategies share the session.

    This is what lets ``make demo`` reproduce the README's numbers, which come from a run
    that also grew the cheapest-first model.
    """

    def run(out: str, strategies: tuple[str, ...]) -> dict:
        settings = DemoSettings.resolve(
            "cnn",
            epochs=3,
            seeds=1,
            first_seed=1,
            size="tiny",
            gate_policy="permissive",
            strategies=strategies,
        )
        return run_demo(settings, tmp_path / out, console=Console(file=io.StringIO()))

    threads = torch.get_num_threads()
    both = run("both", ("gain_per_param", "cheapest"))
    assert torch.get_num_threads() == threads  # the run's --threads setting is undone
    one = run("one", ("gain_per_param",))
    for key in ("host_alone", "grown:gain_per_param", "static:gain_per_param"):
        assert both["runs"][0]["models"][key]["history"] == one["runs"][0]["models"][key]["history"]
    assert json.loads((tmp_path / "one" / "report.json").read_text())["runs"] == json.loads(
        json.dumps(one["runs"])
    )
