"""The demo's outputs: event lines, per-seed records, the summary over seeds, ``report.json``.

Epochs are numbered the same way everywhere: epoch ``k`` (from 1) is the ``k``-th pass
over the training data; its metrics (and a grown model's alphas) are measured after that
pass, and an event "at epoch k" was caused by the lifecycle step that follows the
measurement (or, for the governor, by the pass itself); epoch 0 is the initial evaluation.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from esper_core.demo.stats import summarize, value_at

__all__ = [
    "HIGHER_IS_BETTER",
    "REPORT_VERSION",
    "SeedTracker",
    "compare",
    "describe_event",
    "environment",
    "summarize_models",
    "write_report",
]

REPORT_VERSION = 2

#: Direction of each metric.
HIGHER_IS_BETTER = {"accuracy": True, "bits_per_char": False}

_SHOWN = {"SeedGerminated", "StageChanged", "SeedFossilized", "SeedPruned", "PruneScheduled", "SeedWarning"}


def describe_event(event: object) -> str | None:
    """One human line for a lifecycle event, or ``None`` for events the demo does not print."""
    kind = type(event).__name__
    if kind not in _SHOWN:
        return None
    slot = getattr(event, "slot_id", "?")
    if kind == "SeedGerminated":
        return f"{slot}: germinated {event.blueprint} ({event.param_count} params)"
    if kind == "StageChanged":
        return f"{slot}: {event.from_stage.name} -> {event.to_stage.name}"
    if kind == "SeedFossilized":
        return f"{slot}: fossilized {event.blueprint} (contribution {_pp(event.counterfactual)})"
    if kind == "SeedPruned":
        return f"{slot}: pruned {event.blueprint} by {event.initiator}: {event.reason}"
    if kind == "PruneScheduled":
        return f"{slot}: prune scheduled over {event.epochs} epochs: {event.reason}"
    return f"{slot}: warning {event.code}: {event.message}"


def _pp(value: float | None) -> str:
    return "unmeasured" if value is None else f"{value:+.2f} pp"


class SeedTracker:
    """Collects a grown run's events and one record per germinated seed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.seeds: dict[str, dict[str, Any]] = {}

    def on_event(self, epoch: int, event: object) -> str | None:
        """Record ``event`` (caused at ``epoch``); return its printed line, if it has one."""
        kind = type(event).__name__
        seed_id = getattr(event, "seed_id", None)
        if kind == "SeedGerminated":
            self.seeds[seed_id] = {
                "slot_id": event.slot_id,
                "seed_id": seed_id,
                "blueprint": event.blueprint,
                "param_count": event.param_count,
                "germinated_epoch": epoch,
                "final_stage": "GERMINATED",
                "ended_epoch": None,
                "contribution": None,
                "reason": None,
            }
        record = self.seeds.get(seed_id)
        if record is not None and kind == "StageChanged":
            record["final_stage"] = event.to_stage.name
        if record is not None and kind in ("SeedPruned", "SeedFossilized"):
            record["contribution"] = event.counterfactual
            record["ended_epoch"] = epoch
            record["final_stage"] = "PRUNED" if kind == "SeedPruned" else "FOSSILIZED"
            if kind == "SeedPruned":
                record["reason"] = event.reason
        line = describe_event(event)
        if line is not None:
            self.events.append(
                {"epoch": epoch, "event": kind, "slot_id": event.slot_id, "seed_id": seed_id, "detail": line}
            )
        return line

    def records(self, final_contributions: Mapping[str, float]) -> list[dict[str, Any]]:
        """Seed records; a seed still present gets its contribution measured at the end."""
        out = []
        for record in self.seeds.values():
            record = dict(record)
            if record["final_stage"] != "PRUNED" and record["slot_id"] in final_contributions:
                record["contribution"] = final_contributions[record["slot_id"]]
            record["params_added"] = 0 if record["final_stage"] == "PRUNED" else record["param_count"]
            out.append(record)
        return out


def environment() -> dict[str, Any]:
    """Versions of Python, torch and every Esper distribution that registered something."""
    from esper_core.registry import plugin_report

    packs = {}
    for info in plugin_report():
        packs[info.distribution] = {"version": info.version, "loaded": info.loaded}
    try:
        core = metadata.version("esper-core")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        core = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "esper_core": core,
        "packs": packs,
    }


def _curve(record: Mapping[str, Any], metric: str) -> tuple[list[float], list[float]]:
    history = record["history"]
    return [h["train_flops"] for h in history], [h[metric] for h in history]


def summarize_models(runs: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """Per model, over seeds: parameters, training FLOPs, final metrics, metrics at equal compute.

    "Equal compute" for a seed is the smallest total training compute of that seed's
    models (the host alone's, normally); every model's metric is read off its
    metric-vs-cumulative-FLOPs curve there by linear interpolation between epochs.
    """
    models = list(runs[0]["models"])
    budgets = [min(run["models"][m]["train_flops"] for m in models) for run in runs]
    summary: dict[str, Any] = {}
    for model in models:
        records = [run["models"][model] for run in runs]
        entry: dict[str, Any] = {
            "params": summarize([r["params"] for r in records]),
            "train_flops": summarize([r["train_flops"] for r in records]),
            "final": {m: summarize([r["final"][m] for r in records]) for m in metrics},
            "at_equal_compute": {
                m: summarize(
                    [value_at(*_curve(r, m), at) for r, at in zip(records, budgets, strict=True)]  # type: ignore[misc]
                )
                for m in metrics
            },
        }
        if "seeds" in records[0]:
            entry["seeds_germinated"] = summarize([len(r["seeds"]) for r in records])
            entry["seeds_fossilized"] = summarize(
                [sum(s["final_stage"] == "FOSSILIZED" for s in r["seeds"]) for r in records]
            )
        summary[model] = entry
    return {"equal_compute_flops": summarize(budgets), "models": summary}


def compare(runs: Sequence[Mapping[str, Any]], a: str, b: str, metric: str) -> dict[str, Any]:
    """Paired differences ``a - b`` of ``metric`` over seeds, at equal epochs and at equal compute.

    At equal compute each seed's pair is compared at the smaller of the two models' total
    training compute, both read off their curves there. ``compute_ratio`` is ``a``'s total
    training FLOPs over ``b``'s.
    """
    epochs, at_compute, ratios = [], [], []
    for run in runs:
        ra, rb = run["models"][a], run["models"][b]
        epochs.append(ra["final"][metric] - rb["final"][metric])
        budget = min(ra["train_flops"], rb["train_flops"])
        va, vb = value_at(*_curve(ra, metric), budget), value_at(*_curve(rb, metric), budget)
        assert va is not None and vb is not None  # both runs reach the smaller total
        at_compute.append(va - vb)
        ratios.append(ra["train_flops"] / rb["train_flops"])
    return {
        "a": a,
        "b": b,
        "metric": metric,
        "higher_is_better": HIGHER_IS_BETTER[metric],
        "equal_epochs": summarize(epochs),
        "equal_compute": summarize(at_compute),
        "compute_ratio": summarize(ratios),
    }


def write_report(out: Path, report: Mapping[str, Any]) -> Path:
    """Write ``report`` as ``out/report.json`` (indented, keys in insertion order)."""
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
    return path
