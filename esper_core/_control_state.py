"""The heuristic controller's memory as plain data, for checkpoints (validated on the way back).

:class:`~esper_core.control.HeuristicController` decides from what it remembers: the score
history (plateau detection), each slot's age in its stage and run of poor contributions,
the (slot, blueprint) pairs already tried, the outcomes of finished seeds (which steer the
``gain_per_param`` strategy) and the quiet period after a germination. A run resumed from a
checkpoint decides exactly as an uninterrupted one only if that memory comes back with the
model, so :meth:`~esper_core.control.HeuristicController.state_dict` returns it as ``int``,
``float``, ``str``, ``None``, ``list`` and ``dict`` values (``torch.load(...,
weights_only=True)`` reads it) and ``load_state_dict`` checks all of it before changing
anything.

Format (version 2; every key always present; version 1, written before ``refusals`` existed,
is read with no refusals):

=================  ==========================================================================
key                value
=================  ==========================================================================
``version``        ``2``
``history``        the recorded scores, oldest first (finite floats)
``decisions``      ``[{"epoch", "slot_id", "action", "detail"}]``; ``action`` is one of
                   :data:`ACTIONS`
``outcomes``       ``[{"slot_id", "blueprint", "params", "contribution", "fate", "epoch"}]``;
                   ``fate`` is one of :data:`FATES`
``memory``         ``{slot_id: {"stage", "age", "below", "blueprint", "params",
                   "contribution"}}`` for exactly the controller's slots; ``stage`` is a
                   :class:`~esper_core.stages.SeedStage` name, ``blueprint`` and
                   ``contribution`` may be ``None``
``tried``          ``[[slot_id, blueprint]]``, sorted
``quiet_until``    no germination before the history has this many scores (an int >= 0)
``refusals``       ``[{"slot_id", "blueprint", "reason", "epoch"}]``: candidates whose
                   germination the blueprint made fail (never offered again at that slot)
=================  ==========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

from esper_core._checks import INT32_MAX, shown
from esper_core.errors import CheckpointError
from esper_core.stages import SeedStage

__all__ = ["ACTIONS", "FATES", "STATE_VERSION", "parse_state"]

#: Version of the controller state format.
STATE_VERSION = 2
#: Versions :func:`parse_state` reads (1 has no ``refusals``).
READABLE_VERSIONS = (1, 2)
#: What a controller decision can be.
ACTIONS = ("germinate", "germination_refused", "advance", "prune")
#: How a seed's probation can end.
FATES = ("fossilized", "pruned")

_KEYS = ("version", "history", "decisions", "outcomes", "memory", "tried", "quiet_until", "refusals")
_DECISION = ("epoch", "slot_id", "action", "detail")
_OUTCOME = ("slot_id", "blueprint", "params", "contribution", "fate", "epoch")
_MEMORY = ("stage", "age", "below", "blueprint", "params", "contribution")
_REFUSAL = ("slot_id", "blueprint", "reason", "epoch")


def _bad(where: str, value: object, accepted: str) -> CheckpointError:
    return CheckpointError(f"controller state field {where!r}: got {shown(value)}; accepted: {accepted}")


def _record(where: str, value: object, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or set(value) != set(keys):
        raise _bad(where, value, f"a dict with exactly the keys {list(keys)}")
    return value


def _list(where: str, value: object) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _bad(where, value, "a list")
    return list(value)


def _int(where: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= INT32_MAX:
        raise _bad(where, value, f"an int in [{minimum}, {INT32_MAX}]")
    return value


def _float(where: str, value: object, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(where, value, "a finite float" + (" or None" if optional else ""))
    return float(value)


def _text(where: str, value: object, choices: Collection[str] | None = None, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (choices is not None and value not in choices):
        accepted = f"one of {list(choices)}" if choices is not None else "a string"
        raise _bad(where, value, accepted + (" or None" if optional else ""))
    return value


def _slot(where: str, value: object, slot_ids: Collection[str]) -> str:
    return _text(where, value, choices=list(slot_ids))


def _items(where: str, value: object, parse: Callable[[str, object], Any]) -> list[Any]:
    return [parse(f"{where}[{i}]", item) for i, item in enumerate(_list(where, value))]


def parse_state(state: object, slot_ids: Collection[str]) -> dict[str, Any]:
    """Check a controller state (the format above) for a controller of ``slot_ids``.

    Returns the values with ``decisions``/``outcomes`` as lists of field dicts, ``memory``
    with ``stage`` as a :class:`SeedStage`, ``tried`` as a set of pairs and ``history`` as
    floats. Raises :class:`~esper_core.errors.CheckpointError` naming the first bad field by
    its dotted path, the value and what is accepted. Changes nothing.
    """
    version = state.get("version") if isinstance(state, Mapping) else None
    readable = type(version) is int and version in READABLE_VERSIONS
    if isinstance(state, Mapping) and "version" in state and not readable:
        raise _bad("version", version, f"one of {list(READABLE_VERSIONS)} (versions this esper-core reads)")
    top = _record("(top level)", state, _KEYS[:-1] if version == 1 else _KEYS)
    history = _items("history", top["history"], lambda w, v: _float(w, v))

    def decision(where: str, value: object) -> dict[str, Any]:
        d = _record(where, value, _DECISION)
        return {
            "epoch": _int(f"{where}.epoch", d["epoch"], minimum=-INT32_MAX),
            "slot_id": _slot(f"{where}.slot_id", d["slot_id"], slot_ids),
            "action": _text(f"{where}.action", d["action"], ACTIONS),
            "detail": _text(f"{where}.detail", d["detail"]),
        }

    def outcome(where: str, value: object) -> dict[str, Any]:
        o = _record(where, value, _OUTCOME)
        return {
            "slot_id": _slot(f"{where}.slot_id", o["slot_id"], slot_ids),
            "blueprint": _text(f"{where}.blueprint", o["blueprint"]),
            "params": _int(f"{where}.params", o["params"]),
            "contribution": _float(f"{where}.contribution", o["contribution"]),
            "fate": _text(f"{where}.fate", o["fate"], FATES),
            "epoch": _int(f"{where}.epoch", o["epoch"], minimum=-INT32_MAX),
        }

    def tried(where: str, value: object) -> tuple[str, str]:
        pair = _list(where, value)
        if len(pair) != 2:
            raise _bad(where, value, "a [slot_id, blueprint] pair")
        return _slot(f"{where}[0]", pair[0], slot_ids), _text(f"{where}[1]", pair[1])

    def refusal(where: str, value: object) -> dict[str, Any]:
        r = _record(where, value, _REFUSAL)
        return {
            "slot_id": _slot(f"{where}.slot_id", r["slot_id"], slot_ids),
            "blueprint": _text(f"{where}.blueprint", r["blueprint"]),
            "reason": _text(f"{where}.reason", r["reason"]),
            "epoch": _int(f"{where}.epoch", r["epoch"], minimum=-INT32_MAX),
        }

    memory_in = top["memory"]
    if not isinstance(memory_in, Mapping) or set(memory_in) != set(slot_ids):
        raise _bad(
            "memory", memory_in, f"a dict with one entry per slot of this controller: {sorted(slot_ids)}"
        )
    memory = {}
    for slot_id in slot_ids:
        where = f"memory.{slot_id}"
        m = _record(where, memory_in[slot_id], _MEMORY)
        stage = _text(f"{where}.stage", m["stage"], [s.name for s in SeedStage])
        memory[slot_id] = {
            "stage": SeedStage[stage],
            "age": _int(f"{where}.age", m["age"]),
            "below": _int(f"{where}.below", m["below"]),
            "blueprint": _text(f"{where}.blueprint", m["blueprint"], optional=True),
            "params": _int(f"{where}.params", m["params"]),
            "contribution": _float(f"{where}.contribution", m["contribution"], optional=True),
        }
    return {
        "history": history,
        "decisions": _items("decisions", top["decisions"], decision),
        "outcomes": _items("outcomes", top["outcomes"], outcome),
        "memory": memory,
        "tried": set(_items("tried", top["tried"], tried)),
        "quiet_until": _int("quiet_until", top["quiet_until"]),
        "refusals": _items("refusals", top.get("refusals", []), refusal),
    }
