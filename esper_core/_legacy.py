"""Reading envelope version 1: convert its data to version 2, then read it like any envelope.

Version 1 was written by the library until a slot's lifecycle became one state value
(``tests/fixtures/checkpoints_v1`` holds files it wrote, and a test loads each of them
exactly). Its layout held the state's fields at the top level and the seed's history as
``{"bound": 100, "stages": [...]}``; it had no blueprint provenance. The conversion checks
version 1's own key sets exactly (so a malformed version-1 file is reported as such), moves
the fields into version 2's places and leaves every value to version 2's strict reader.
"""

from __future__ import annotations

from typing import Any

from esper_core._fields import FieldError
from esper_core.slot_state import HISTORY_BOUND

__all__ = ["convert_v1"]

_TOP = [
    "version",
    "slot_id",
    "topology",
    "dim",
    "stage",
    "previous_stage",
    "ticks_in_stage",
    "germinations",
    "seed",
]
_SEED = [
    "seed_id",
    "blueprint",
    "options",
    "algorithm",
    "tempo",
    "curve",
    "germination_target",
    "alpha",
    "metrics",
    "activity",
    "health_issues",
    "warned",
    "output_requires_grad",
    "pending_prune",
    "history",
]
_HISTORY = ["bound", "stages"]


def _keys(data: object, expected: list[str], path: str) -> dict[str, Any]:
    if type(data) is not dict:
        raise FieldError(
            path or "<envelope>", f"got {type(data).__name__}; accepted: an object with keys {expected}"
        )
    for name in expected:
        if name not in data:
            raise FieldError(_join(path, name), f"is missing; version 1 needs exactly the keys {expected}")
    for name in data:
        if name not in expected:
            raise FieldError(_join(path, str(name)), f"is not part of version 1; accepted keys: {expected}")
    return data


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def convert_v1(data: dict[str, Any]) -> dict[str, Any]:
    """The version-2 form of a version-1 envelope (raises :class:`FieldError` on a bad layout)."""
    _keys(data, _TOP, "")
    state = {key: data[key] for key in ("stage", "previous_stage", "ticks_in_stage", "germinations")}
    state["seed"] = None if data["seed"] is None else _seed(data["seed"])
    return {
        "version": 2,
        "slot_id": data["slot_id"],
        "topology": data["topology"],
        "dim": data["dim"],
        "state": state,
    }


def _seed(seed: object) -> dict[str, Any]:
    seed = _keys(seed, _SEED, "seed")
    history = _keys(seed["history"], _HISTORY, "seed.history")
    stages = history["stages"]
    if type(stages) is list and len(stages) > HISTORY_BOUND:
        raise FieldError(
            "seed.history.stages",
            f"{len(stages)} entries; this version keeps at most {HISTORY_BOUND} (version 1 files written "
            f"by the library have bound {HISTORY_BOUND})",
        )
    warned = seed["warned"]
    converted = {key: seed[key] for key in _SEED if key not in ("history", "warned")}
    converted["provenance"] = None  # version 1 did not record where a blueprint came from
    converted["warned"] = sorted(set(warned)) if _all_text(warned) else warned
    converted["history"] = stages
    order = [*_SEED[:3], "provenance", *_SEED[3:]]
    return {key: converted[key] for key in order}


def _all_text(value: object) -> bool:
    return type(value) is list and all(type(v) is str for v in value)
