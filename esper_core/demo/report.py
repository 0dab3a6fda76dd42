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
    "ON_PROBATION",
    "REPORT_VERSION",
    "SeedTracker",
    "compare",
    "describe_event",
    "environment",
    "outcome_records",
    "seed_counts",
    "summarize_models",
    "write_report",
]

#: 3: seeds[].contribution split into contribution_at_decision / contribution_at_end (with
#: alpha_at_end), outcomes[] renamed alike (with seed_id, gain_per_param), seed_counts,
#: seeds_on_probation, candidates, seed_timing, notes and the grown models' no_germination added.
REPORT_VERSION = 3

#: Direction of each metric.
HIGHER_IS_BETTER = {"accuracy": True, "bits_per_char": False}

_SHOWN = {
    "SeedGerminated",
    "StageChanged",
    "SeedFossilized",
    "SeedPruned",
    "PruneScheduled",
    "SeedWarning",
    "Refusal",
}


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
    if kind == "Refusal":  # the controller's record, not a slot event
        return f"{slot}: germination of {event.blueprint} refused ({event.reason}); going on without it"
    return f"{slot}: warning {event.code}: {event.message}"


def _pp(value: float | None) -> str:
    return "unmeasured" if value is None else f"{value:+.2f} pp"


class SeedTracker:
    """Collects a grown run's events and one record per germinated seed.

    Two contributions are recorded per seed, both leave-one-out counterfactual contributions
    in percentage points (the validation score with the seed minus the score with that seed's
    alpha set to 0): ``contribution_at_decision``, the last one measured before the seed was
    fossilized or pruned (what its event line prints and what G5 judged; ``None`` while the
    seed is on probation, or if it never blended in), and ``contribution_at_end``, measured
    on the final model at ``alpha_at_end`` (``None`` for a pruned seed or one at alpha 0).
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.seeds: dict[str, dict[str, Any]] = {}
        self.refusals: list[dict[str, Any]] = []
        """Candidates the blueprint made fail: ``{"epoch", "slot_id", "blueprint", "reason"}``."""

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
                "contribution_at_decision": None,
                "reason": None,
            }
        if kind == "Refusal":
            self.refusals.append(
                {
                    "epoch": epoch,
                    "slot_id": event.slot_id,
                    "blueprint": event.blueprint,
                    "reason": event.reason,
                }
            )
        record = self.seeds.get(seed_id)
        if record is not None and kind == "StageChanged":
            record["final_stage"] = event.to_stage.name
        if record is not None and kind in ("SeedPruned", "SeedFossilized"):
            record["contribution_at_decision"] = event.counterfactual
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

    def records(
        self, final_contributions: Mapping[str, float], final_alphas: Mapping[str, float]
    ) -> list[dict[str, Any]]:
        """Seed records; a seed still in the model gets its alpha and contribution at the end.

        ``final_contributions`` and ``final_alphas`` are per slot id, measured after the last
        lifecycle step (a slot missing from ``final_contributions`` was at alpha 0).
        """
        out = []
        for record in self.seeds.values():
            record = dict(record)
            present = record["final_stage"] != "PRUNED"
            record["contribution_at_end"] = final_contributions.get(record["slot_id"]) if present else None
            record["alpha_at_end"] = final_alphas.get(record["slot_id"]) if present else None
            record["params_added"] = record["param_count"] if present else 0
            out.append(record)
        return out


def outcome_records(outcomes: Sequence[Any], seeds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The controller's :class:`~esper_core.control.Outcome` values, as ``report.json`` records them.

    Each gets the ``seed_id`` it belongs to (a slot holds one seed at a time, so a slot's
    outcomes and its finished seeds are in the same order) and the seed's
    ``contribution_at_decision`` (``None`` when never measured, where the controller itself
    counts 0.0); ``gain_per_param`` is what the ``gain_per_param`` strategy ranks by (pp per
    parameter, 0.0 when unmeasured).
    """
    finished: dict[str, list[Mapping[str, Any]]] = {}
    for seed in seeds:
        if seed["final_stage"] in ("FOSSILIZED", "PRUNED"):
            finished.setdefault(seed["slot_id"], []).append(seed)
    out = []
    for outcome in outcomes:
        queue = finished.get(outcome.slot_id) or []
        seed = queue.pop(0) if queue else None
        out.append(
            {
                "seed_id": None if seed is None else seed["seed_id"],
                "slot_id": outcome.slot_id,
                "blueprint": outcome.blueprint,
                "params": outcome.params,
                "fate": outcome.fate,
                "epoch": outcome.epoch,
                "contribution_at_decision": outcome.contribution
                if seed is None or seed["contribution_at_decision"] is not None
                else None,
                "gain_per_param": outcome.gain_per_param,
            }
        )
    return out


#: Stages of a seed that is still on probation (neither kept nor removed).
ON_PROBATION = ("GERMINATED", "TRAINING", "BLENDING", "HOLDING")


def seed_counts(seeds: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How a grown run's seeds ended: ``kept`` (FOSSILIZED only), ``on_probation``, ``pruned``, ``germinated``."""
    stages = [s["final_stage"] for s in seeds]
    return {
        "germinated": len(stages),
        "kept": stages.count("FOSSILIZED"),
        "on_probation": sum(stage in ON_PROBATION for stage in stages),
        "pruned": stages.count("PRUNED"),
    }


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
            counts = [seed_counts(r["seeds"]) for r in records]
            entry["seeds_germinated"] = summarize([c["germinated"] for c in counts])
            entry["seeds_fossilized"] = summarize([c["kept"] for c in counts])
            entry["seeds_on_probation"] = summarize([c["on_probation"] for c in counts])
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
