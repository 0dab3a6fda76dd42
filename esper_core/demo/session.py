"""One ``esper demo`` session: every seed, every model, the console output and the report.

Per seed, in this order and each from the same initial host weights and the same batches:
the host alone, then for every selection strategy the grown model and its static twin
(the grown model's final architecture trained from scratch).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from esper_core.demo.compute import FLOP_CONVENTION, TRAIN_FLOPS_PER_FORWARD, forward_flops
from esper_core.demo.diagnosis import NoGermination, no_germination_notes
from esper_core.demo.events import DemoEventSinks
from esper_core.demo.preflight import candidate_blueprints, notes, timing_json
from esper_core.demo.report import (
    HIGHER_IS_BETTER,
    REPORT_VERSION,
    SeedTracker,
    compare,
    environment,
    outcome_records,
    seed_counts,
    summarize_models,
    write_report,
)
from esper_core.demo.settings import DemoSettings
from esper_core.demo.tasks import Task, make_task
from esper_core.demo.train import RunResult, build_static, train_grown, train_plain

__all__ = ["label", "run_session"]


def label(model: str) -> str:
    """Display name of a model key: ``host_alone`` -> "host alone", ``grown:cheapest`` -> "grown (cheapest)"."""
    if model == "host_alone":
        return "host alone"
    kind, _, strategy = model.partition(":")
    return f"{kind} ({strategy})"


def _plain_record(run: RunResult) -> dict[str, Any]:
    return {
        "params": run.params,
        "train_flops": run.train_flops,
        "eval_flops": run.eval_flops,
        "final": run.final,
        "history": run.history,
    }


def _fmt(value: float, metric: str) -> str:
    return f"{value:.3f}" if metric == "bits_per_char" else f"{value:.2f}%"


def _stat(entry: Mapping[str, Any], digits: int, unit: str = "") -> str:
    if entry["std"] is None:
        return f"{entry['mean']:.{digits}f}{unit}"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}{unit}"


def _diff(entry: Mapping[str, Any], digits: int) -> str:
    text = f"{entry['mean']:+.{digits}f}"
    if entry["std"] is not None:
        lo, hi = entry["ci95"]
        text += f" ± {entry['std']:.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return text


def run_session(settings: DemoSettings, out: Path, console: Any, command: list[str]) -> dict[str, Any]:
    """Run the demo of ``settings``, writing ``report.json``, ``growth.png`` and the event sinks."""
    started = time.perf_counter()
    sinks = DemoEventSinks(settings)  # opened before any training: a bad path stops the run at once
    try:
        return _session(settings, out, console, command, sinks, started)
    finally:
        sinks.close()


def _session(
    settings: DemoSettings, out: Path, console: Any, command: list[str], sinks: DemoEventSinks, started: float
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from esper_core.demo.plot import plot_report

    first = make_task(settings.topology, settings.seeds[0], settings.size)
    host = first.make_host()
    host_params = sum(p.numel() for p in host.parameters())
    budget_params = int(host_params * settings.budget)
    _print_header(console, settings, first, host_params, budget_params)
    candidates = candidate_blueprints(settings)
    _print_candidates(console, candidates)
    warnings = notes(settings, first.make_host())
    _print_notes(console, warnings)
    if sinks.active:
        console.print(f"  events to: {', '.join(str(p) for p in sinks.paths)}")
    model_keys = ["host_alone"] + [f"{k}:{s}" for s in settings.strategies for k in ("grown", "static")]
    runs: list[dict[str, Any]] = []
    with Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[metric]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        total = len(settings.seeds) * len(model_keys) * (settings.epochs + 1)
        bar = progress.add_task("", total=total, metric="")
        for seed in settings.seeds:
            task = first if seed == settings.seeds[0] else make_task(settings.topology, seed, settings.size)
            runs.append(_one_seed(settings, task, seed, progress, bar, sinks))
            _print_seed_line(progress.console, runs[-1], task.metrics[0])
    summary = summarize_models(runs, first.metrics)
    comparisons = _comparisons(settings, first.metrics, runs)
    _print_tables(console, settings, first.metrics, runs, summary, comparisons)
    warnings = [*warnings, *_no_germination_notes(settings, runs, host_params)]
    _print_notes(console, warnings)  # again: the start of a long run has scrolled away
    wall = time.perf_counter() - started
    report = {
        "version": REPORT_VERSION,
        "command": shlex.join(command),
        "topology": settings.topology,
        "task": {
            "name": first.name,
            "description": first.description,
            "host": {**first.host, "params": host_params},
            "budget_params": budget_params,
            "samples_per_epoch": first.samples_per_epoch,
        },
        "metrics": list(first.metrics),
        "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in first.metrics},
        "settings": settings.to_json(),
        "candidates": candidates,
        "seed_timing": timing_json(settings),
        "notes": warnings,
        "environment": environment(),
        "torch_threads": torch.get_num_threads(),
        "flops": {
            "convention": FLOP_CONVENTION,
            "train_flops_per_forward_flop": TRAIN_FLOPS_PER_FORWARD,
            "host_forward_per_sample": forward_flops(host, first.example),
        },
        "wall_time_s": round(wall, 2),
        "summary": summary,
        "comparisons": comparisons,
        "runs": runs,
        "plot": "growth.png",
    }
    write_report(out, report)
    plot_report(out / "growth.png", report)
    written = [str(out / "report.json"), str(out / "growth.png"), *(str(p) for p in sinks.paths)]
    console.print(f"wrote {', '.join(written)} in {time.perf_counter() - started:.1f}s")
    return report


def _one_seed(
    settings: DemoSettings, task: Task, seed: int, progress: Any, bar: Any, sinks: DemoEventSinks
) -> dict[str, Any]:
    def fresh_host() -> Any:
        torch.manual_seed(seed)
        return task.make_host()

    def on_epoch(model: str, epoch: int, metrics: Mapping[str, float]) -> None:
        shown = "  ".join(_fmt(metrics[m], m) for m in task.metrics)
        progress.update(
            bar, advance=1, description=f"seed {seed}  {label(model)}", metric=f"epoch {epoch}  {shown}"
        )

    models: dict[str, Any] = {
        "host_alone": _plain_record(train_plain("host_alone", fresh_host(), task, settings, on_epoch))
    }
    for strategy in settings.strategies:
        key = f"grown:{strategy}"
        tracker = SeedTracker()

        def on_event(epoch: int, event: object, key: str = key, tracker: SeedTracker = tracker) -> None:
            sinks.at_epoch(epoch)  # the sinks receive this event right after this observer
            line = tracker.on_event(epoch, event)
            if line is not None:
                text = f"  seed {seed}  {label(key)}  epoch {epoch:>3}  {line}"
                progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

        with sinks.run(seed, key):
            grown, model = train_grown(
                task, settings, strategy, fresh_host(), label=key, on_epoch=on_epoch, on_event=on_event
            )
        final = model.evaluate(task.val_batches, task.score)
        alphas = {slot_id: float(model.slots[slot_id].alpha) for slot_id in model.slot_ids}
        seeds = tracker.records(final.contributions, alphas)
        models[key] = {
            **_plain_record(grown),
            "alpha": grown.alphas,
            "seeds": seeds,
            "seed_counts": seed_counts(seeds),
            "events": tracker.events,
            "outcomes": outcome_records(grown.outcomes, seeds),
            "refusals": tracker.refusals,
            "governor": grown.governor,
            "no_germination": None if grown.no_germination is None else attrs.asdict(grown.no_germination),
        }
        static = train_plain(
            f"static:{strategy}", build_static(task, grown.seeds, fresh_host), task, settings, on_epoch
        )
        models[f"static:{strategy}"] = {
            **_plain_record(static),
            "architecture": [attrs.asdict(r) for r in grown.seeds],
        }
    return {"seed": seed, "models": models}


def _no_germination_notes(settings: DemoSettings, runs: list[dict[str, Any]], host_params: int) -> list[str]:
    """One note per grown model that germinated no seed for some random seed, saying why."""
    reasons: dict[str, dict[int, NoGermination]] = {}
    for strategy in settings.strategies:
        key = f"grown:{strategy}"
        reasons[label(key)] = {
            run["seed"]: NoGermination(**run["models"][key]["no_germination"])
            for run in runs
            if run["models"][key]["no_germination"] is not None
        }
    config = settings.controller_config(host_params, settings.strategies[0])
    return no_germination_notes(reasons, config, settings.epochs, len(settings.seeds))


def _comparisons(
    settings: DemoSettings, metrics: tuple[str, ...], runs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    pairs = []
    for strategy in settings.strategies:
        pairs += [(f"grown:{strategy}", "host_alone"), (f"grown:{strategy}", f"static:{strategy}")]
    for other in settings.strategies[1:]:
        pairs.append((f"grown:{settings.strategies[0]}", f"grown:{other}"))
    return [compare(runs, a, b, metric) for a, b in pairs for metric in metrics]


def _print_header(
    console: Any, settings: DemoSettings, task: Task, host_params: int, budget_params: int
) -> None:
    gates = settings.gates()
    overrides = ", ".join(f"{k}={v}" for k, v in settings.gate_thresholds.items()) or "library defaults"
    seeds = settings.seeds
    host = ", ".join(f"{k}={v}" for k, v in task.host.items() if k != "class")
    console.print(f"[bold]esper demo[/bold] ({settings.topology}): {task.description}")
    console.print(f"  host: {task.host['class']}({host}), {host_params:,} parameters")
    console.print(
        f"  budget: {settings.budget:g} x host = {budget_params:,} seed parameters; strategies: "
        f"{', '.join(settings.strategies)}; gates: {gates.policy} ({overrides})"
    )
    console.print(
        f"  {len(seeds)} seed(s) {seeds[0]}..{seeds[-1]} x {settings.epochs} epochs; AdamW lr {settings.lr:g} "
        f"(seeds {settings.seed_lr:g}); batch {settings.batch_size}; blueprints: "
        f"{'all' if settings.include is None else ','.join(settings.include)} except {','.join(settings.exclude) or '-'}"
    )


def _print_candidates(console: Any, candidates: list[dict[str, Any]]) -> None:
    by_source: dict[str, list[str]] = {}
    for row in sorted(candidates, key=lambda r: not r["shipped"]):  # Esper's own packs first
        by_source.setdefault(f"{row['distribution']} {row['version']}", []).append(row["name"])
    shown = "; ".join(f"{source} ({', '.join(names)})" for source, names in by_source.items())
    console.print(f"  candidate blueprints from {shown}", markup=False, highlight=False)
    outside = sorted({f"{r['distribution']} {r['version']}" for r in candidates if not r["shipped"]})
    if outside:
        names = ", ".join(r["name"] for r in candidates if not r["shipped"])
        console.print(
            f"  of which from packs not shipped with Esper: {', '.join(outside)} ({names}); "
            "restrict with --include/--exclude",
            markup=False,
            highlight=False,
        )


def _print_notes(console: Any, warnings: list[str]) -> None:
    from rich.markup import escape

    for text in warnings:
        console.print(f"[bold yellow]note:[/bold yellow] {escape(text)}", highlight=False)


def _print_seed_line(console: Any, run: Mapping[str, Any], metric: str) -> None:
    parts = [f"{label(k)} {_fmt(m['final'][metric], metric)}" for k, m in run["models"].items()]
    console.print(f"  seed {run['seed']} done: " + ", ".join(parts))


def _header(model: str, strategies: tuple[str, ...]) -> str:
    """Short column header: the strategy only when several strategies ran."""
    if model == "host_alone":
        return "host alone"
    kind, _, strategy = model.partition(":")
    return kind if len(strategies) == 1 else f"{kind}\n{strategy}"


def _print_tables(
    console: Any,
    settings: DemoSettings,
    metrics: tuple[str, ...],
    runs: list[dict[str, Any]],
    summary: Mapping[str, Any],
    comparisons: list[dict[str, Any]],
) -> None:
    from rich.table import Table

    strategies = settings.strategies
    headline = metrics[0]
    digits = 3 if headline == "bits_per_char" else 2
    models = list(runs[0]["models"])
    grown = [m for m in models if m.startswith("grown:")]
    per_seed = Table(
        title=f"final {headline} per seed; seeds kept (fossilized) / on probation at the end / germinated"
    )
    per_seed.add_column("seed", justify="right")
    for model in models:
        per_seed.add_column(_header(model, strategies), justify="right")
    for model in grown:
        title = "kept/prob./germ."
        per_seed.add_column(
            f"{title}\n{model.partition(':')[2]}" if len(strategies) > 1 else title, justify="right"
        )
    for run in runs:
        row = [str(run["seed"])] + [_fmt(run["models"][m]["final"][headline], headline) for m in models]
        for model in grown:
            counts = run["models"][model]["seed_counts"]
            row.append(f"{counts['kept']}/{counts['on_probation']}/{counts['germinated']}")
        per_seed.add_row(*row)
    console.print(per_seed)

    table = Table(title=f"mean ± std over {len(runs)} seed(s); equal compute = host alone's training FLOPs")
    columns = (
        "model",
        "params",
        "train FLOPs",
        *(f"{m}\nfinal" for m in metrics),
        f"{headline}\nequal compute",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for model in models:
        entry = summary["models"][model]
        table.add_row(
            _header(model, strategies).replace("\n", " "),
            f"{entry['params']['mean']:,.0f}",
            f"{entry['train_flops']['mean']:.3g}",
            *(_stat(entry["final"][m], 3 if m == "bits_per_char" else 2) for m in metrics),
            _stat(entry["at_equal_compute"][headline], digits),
        )
    console.print(table)

    better = "higher" if comparisons[0]["higher_is_better"] else "lower"
    diffs = Table(title=f"paired {headline} differences a - b ({better} is better): mean ± std [95% CI]")
    for column in ("a - b", "equal epochs", "equal compute", "FLOPs a/b"):
        diffs.add_column(column, justify="left" if column == "a - b" else "right")
    for c in comparisons:
        if c["metric"] != headline:
            continue
        a, b = (_header(m, strategies).replace("\n", " ") for m in (c["a"], c["b"]))
        diffs.add_row(
            f"{a} - {b}", _diff(c["equal_epochs"], digits), _diff(c["equal_compute"], digits),
            f"{c['compute_ratio']['mean']:.2f}",
        )  # fmt: skip
    console.print(diffs)
