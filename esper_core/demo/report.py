"""The demo's outputs: ``report.json``, the final table and the event lines."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["REPORT_VERSION", "describe_event", "write_report"]

REPORT_VERSION = 1

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
        return f"{slot}: prune scheduled over {event.steps} epochs: {event.reason}"
    return f"{slot}: warning {event.code}: {event.message}"


def _pp(value: float | None) -> str:
    return "unmeasured" if value is None else f"{value:+.2f} pp"


def write_report(out: Path, report: Mapping[str, Any]) -> Path:
    """Write ``report`` as ``out/report.json`` (indented, keys in insertion order)."""
    path = out / "report.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path
