"""Reading envelope version 1: convert its data to version 2, then read it like any envelope.

Version 1 was written by the library until a slot's lifecycle became one state value
(``tests/fixtures/checkpoints_v1`` holds files it wrote, and a test loads each of them
exactly). Its layout held the state's fields at the top level and the seed's history as
``{"bound": 100, "stages": [...]}``; it had no blueprint provenance, and some fields had the
names of an older vocabulary (``ticks_in_stage``, ``tempo``, ``alpha`` for the schedule with
``steps_*``, metrics ``epochs_*`` for what version 2 calls evaluations). The conversion checks
version 1's own key sets exactly (so a malformed version-1 file is reported as such), moves
the fields into version 2's places and leaves every value to version 2's strict reader.
"""

from __future__ import annotations

from typing import Any

from esper_core._fields import FieldError
from esper_core.slot_state import HISTORY_BOUND

__all__ = ["LEGACY_MODULE_NAMES", "convert_v1", "may_be_legacy", "rename_legacy_keys"]

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
    state = {
        "stage": data["stage"],
        "previous_stage": data["previous_stage"],
        "epochs_in_stage": data["ticks_in_stage"],
        "germinations": data["germinations"],
        "seed": None if data["seed"] is None else _seed(data["seed"]),
    }
    return {
        "version": 2,
        "slot_id": data["slot_id"],
        "topology": data["topology"],
        "dim": data["dim"],
        "state": state,
    }


#: Version 1's name -> version 2's name, per record (fields not listed keep their name).
_ALPHA = {"steps_total": "epochs_total", "steps_done": "epochs_done"}
_METRICS = {"epochs_total": "evaluations_total", "epochs_in_stage": "evaluations_in_stage"}


def _renamed(record: object, names: dict[str, str]) -> object:
    if type(record) is not dict:
        return record  # version 2's reader reports it
    return {names.get(key, key): value for key, value in record.items()}


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
    return {
        "seed_id": seed["seed_id"],
        "blueprint": seed["blueprint"],
        "options": seed["options"],
        "provenance": None,  # version 1 did not record where a blueprint came from
        "algorithm": seed["algorithm"],
        "ramp_epochs": seed["tempo"],
        "curve": seed["curve"],
        "germination_target": seed["germination_target"],
        "schedule": _renamed(seed["alpha"], _ALPHA),
        "metrics": _renamed(seed["metrics"], _METRICS),
        "activity": seed["activity"],
        "health_issues": seed["health_issues"],
        "warned": sorted(set(warned)) if _all_text(warned) else warned,
        "output_requires_grad": seed["output_requires_grad"],
        "pending_prune": seed["pending_prune"],
        "history": stages,
    }


def _all_text(value: object) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


#: Submodule names of a slot that version-1 checkpoints used, and today's names.
LEGACY_MODULE_NAMES = {"gate_module.": "blend_gate."}


def rename_legacy_keys(state_dict: dict[str, Any], prefix: str) -> None:
    """Rename, in place, a slot's version-1 tensor keys under ``prefix`` to today's names."""
    for old, new in LEGACY_MODULE_NAMES.items():
        start = prefix + old
        for key in [k for k in state_dict if k.startswith(start)]:
            state_dict[prefix + new + key[len(start) :]] = state_dict.pop(key)


def may_be_legacy(envelope: object) -> bool:
    """Whether a slot with this envelope may have version-1 tensor keys: False only for a
    version-2 envelope (text as ``state_text`` writes it, or data), so that a load does not
    scan every key of the file once per slot; anything else is scanned."""
    if isinstance(envelope, str):
        return not envelope.startswith('{"version":2,')
    return not (isinstance(envelope, dict) and envelope.get("version") == 2)
