"""``esper demo``: grow seeds in a small host and compare against two baselines."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["build_parser", "main", "run_demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esper demo",
        description=(
            "Train a deliberately small host, grow seeds in it with the heuristic controller, and compare "
            "with the host trained alone and with a static model of the grown model's final size."
        ),
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per run (default: 24 cnn, 16 transformer)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--topology",
        choices=("cnn", "transformer"),
        default="cnn",
        help="cnn: scikit-learn digits; transformer: character LM on Python's pydoc topics (default: cnn)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("esper-demo"), help="output folder (default: ./esper-demo/)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default: 1; the models are tiny, so more threads mostly add overhead)",
    )
    parser.add_argument("--size", choices=("default", "tiny"), default="default", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``esper demo``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    try:
        from rich.console import Console
    except ImportError as exc:  # the demo's dependencies are an optional extra
        print(f"esper demo needs the 'demo' extra (scikit-learn, matplotlib, rich): {exc}")
        return 2
    run_demo(
        topology=args.topology,
        epochs=args.epochs if args.epochs is not None else (24 if args.topology == "cnn" else 16),
        seed=args.seed,
        out=args.out,
        size=args.size,
        console=Console(),
        threads=args.threads,
    )
    return 0


def run_demo(
    *,
    topology: str,
    epochs: int,
    seed: int,
    out: Path,
    console: Any,
    size: str = "default",
    threads: int | None = 1,
) -> dict:
    """Run the three trainings, print the results, write ``report.json`` and ``growth.png``; return the report.

    ``threads`` sets torch's intra-op threads for the run (restored afterwards); ``None``
    leaves the setting alone.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_demo(topology=topology, epochs=epochs, seed=seed, out=out, console=console, size=size)
    finally:
        torch.set_num_threads(previous)


def _run_demo(*, topology: str, epochs: int, seed: int, out: Path, console: Any, size: str) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from esper_core.demo.plot import plot_growth
    from esper_core.demo.report import REPORT_VERSION, describe_event, write_report
    from esper_core.demo.tasks import make_task
    from esper_core.demo.train import build_static, train_grown, train_plain
    from esper_core.stages import SeedStage

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    task = make_task(topology, seed, size)
    console.print(f"[bold]esper demo[/bold] ({topology}): {task.description}; {epochs} epochs, seed {seed}")

    def fresh_host() -> Any:
        torch.manual_seed(seed)
        return task.make_host()

    seeds: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []

    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[metric]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bars = {
            label: progress.add_task(label, total=epochs, metric="")
            for label in ("grown", "host alone", "static")
        }

        def on_epoch(label: str, _epoch: int, metrics: dict[str, float]) -> None:
            text = f"acc {metrics['accuracy']:.2f}%"
            if "bits_per_char" in metrics:
                text += f"  {metrics['bits_per_char']:.3f} bpc"
            progress.update(bars[label], advance=1, metric=text)

        def on_event(epoch: int, event: Any) -> None:
            kind = type(event).__name__
            if kind == "SeedGerminated":
                seeds[event.seed_id] = {
                    "slot_id": event.slot_id,
                    "seed_id": event.seed_id,
                    "blueprint": event.blueprint,
                    "germinated_epoch": epoch,
                    "param_count": event.param_count,
                    "final_stage": "GERMINATED",
                    "contribution": None,
                }
            elif kind in ("SeedPruned", "SeedFossilized") and event.seed_id in seeds:
                seeds[event.seed_id]["contribution"] = event.counterfactual
            if kind == "SeedPruned" and event.seed_id in seeds:
                seeds[event.seed_id]["final_stage"] = "PRUNED"
                seeds[event.seed_id]["reason"] = event.reason
            line = describe_event(event)
            if line is not None:
                events.append({"epoch": epoch + 1, "event": kind, "slot_id": event.slot_id, "detail": line})
                progress.console.print(f"  epoch {epoch + 1:>3}  {line}")

        grown, model, _controller = train_grown(
            task, epochs, fresh_host(), on_epoch=on_epoch, on_event=on_event
        )
        alone = train_plain("host alone", fresh_host(), task, epochs, on_epoch=on_epoch)
        static_model = build_static(task, grown.seeds, fresh_host)
        static = train_plain("static", static_model, task, epochs, on_epoch=on_epoch)

    final_eval = model.evaluate(task.val_batches, task.score)
    for record in seeds.values():
        slot = model.slots[record["slot_id"]]
        if record["final_stage"] != "PRUNED" and slot.seed is not None:
            record["final_stage"] = SeedStage(slot.stage).name
            record["contribution"] = final_eval.contributions.get(record["slot_id"], record["contribution"])
        record["params_added"] = record["param_count"] if record["final_stage"] != "PRUNED" else 0

    table = Table(title="seeds")
    for column in ("slot", "blueprint", "final stage", "params added", "contribution"):
        table.add_column(column, justify="right" if column in ("params added", "contribution") else "left")
    for r in seeds.values():
        c = r["contribution"]
        table.add_row(
            r["slot_id"],
            r["blueprint"],
            r["final_stage"],
            str(r["params_added"]),
            "-" if c is None else f"{c:+.2f} pp",
        )
    if not seeds:
        table.add_row("-", "(no seed germinated)", "-", "0", "-")
    console.print(table)

    runs = {"grown": grown, "host_alone": alone, "static": static}
    summary = Table(title="validation (final epoch)")
    summary.add_column("model")
    summary.add_column("parameters", justify="right")
    summary.add_column("accuracy", justify="right")
    if task.language_model:
        summary.add_column("bits/char", justify="right")
    for name, run in runs.items():
        row = [name.replace("_", " "), f"{run.params:,}", f"{run.final['accuracy']:.2f}%"]
        if task.language_model:
            row.append(f"{run.final['bits_per_char']:.3f}")
        summary.add_row(*row)
    console.print(summary)

    png = out / "growth.png"
    plot_growth(
        png,
        grown.alphas,
        {label.replace("_", " "): [h["accuracy"] for h in run.history] for label, run in runs.items()},
        f"esper demo ({topology}, seed {seed})",
    )
    wall = time.perf_counter() - started
    report = {
        "version": REPORT_VERSION,
        "topology": topology,
        "task": task.name,
        "data": task.description,
        "epochs": epochs,
        "seed": seed,
        "wall_time_s": round(wall, 2),
        "torch_threads": torch.get_num_threads(),
        "metric": "bits_per_char" if task.language_model else "accuracy",
        "host_params": model.host_param_count,
        "runs": {
            name: {"params": run.params, "final": run.final, "history": run.history}
            for name, run in runs.items()
        },
        "seeds": list(seeds.values()),
        "alpha": grown.alphas,
        "events": events,
        "governor": grown.governor,
        "plot": png.name,
    }
    write_report(out, report)
    console.print(f"wrote {out / 'report.json'} and {png} in {wall:.1f}s")
    return report
