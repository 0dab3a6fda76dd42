"""Seed lifecycle stages, the transition table and the predicates built on it.

The numeric values are part of the checkpoint and wire format (checkpoints and the
distributed command stream carry them as integers), so they are fixed: value 5 belonged
to a retired stage and is reserved, which is why :func:`stage_from_value` rejects it
instead of silently mapping it to a neighbour.

The table lists, for every stage, the stages it may move to, in preference order: the
first entry that is not a failure stage is where ``advance()`` goes when no target is
named. Who may trigger an edge (a gate, a direct API call, or the cooldown clock) is
decided in :mod:`esper_core.gates` and :mod:`esper_core.slot`, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType

from esper_core._checks import shown
from esper_core.errors import LifecycleError

__all__ = [
    "BLENDED",
    "FAILURE",
    "LIVE",
    "PROBATION",
    "RESERVED_STAGE_VALUES",
    "RUNS_SEED",
    "STAGE_SCHEMA_VERSION",
    "TRANSITIONS",
    "SeedStage",
    "default_successor",
    "has_seed_module",
    "is_failure",
    "is_legal_transition",
    "is_terminal",
    "isolated_in",
    "runs_seed",
    "stage_from_value",
    "stage_index",
]


class SeedStage(IntEnum):
    """Where a slot is in its lifecycle. Values are persisted; 5 is reserved."""

    UNKNOWN = 0
    DORMANT = 1
    GERMINATED = 2
    TRAINING = 3
    BLENDING = 4
    HOLDING = 6
    FOSSILIZED = 7
    PRUNED = 8
    EMBARGOED = 9
    RESETTING = 10


#: Values that once meant a stage and must never be reused or accepted.
RESERVED_STAGE_VALUES: frozenset[int] = frozenset({5})

#: Bumped whenever the set of stages or their order in :func:`stage_index` changes.
STAGE_SCHEMA_VERSION = 1

_S = SeedStage
#: Read-only mapping stage -> allowed successors, in preference order (the concepts diagram draws it).
TRANSITIONS: Mapping[SeedStage, tuple[SeedStage, ...]] = MappingProxyType(
    {
        _S.UNKNOWN: (_S.DORMANT,),
        _S.DORMANT: (_S.GERMINATED,),
        _S.GERMINATED: (_S.TRAINING, _S.PRUNED),
        _S.TRAINING: (_S.BLENDING, _S.PRUNED),
        _S.BLENDING: (_S.HOLDING, _S.PRUNED),
        _S.HOLDING: (_S.FOSSILIZED, _S.BLENDING, _S.PRUNED),
        _S.FOSSILIZED: (),
        _S.PRUNED: (_S.EMBARGOED,),
        _S.EMBARGOED: (_S.RESETTING,),
        _S.RESETTING: (_S.DORMANT,),
    }
)

# ---- stage sets: defined here and nowhere else ------------------------------------------------

#: The cooldown after a prune: the seed module is gone and the slot cannot be used yet.
FAILURE: frozenset[SeedStage] = frozenset({_S.PRUNED, _S.EMBARGOED, _S.RESETTING})
#: Stages in which ``forward`` runs the seed (GERMINATED holds a seed but does not run it).
RUNS_SEED: frozenset[SeedStage] = frozenset({_S.TRAINING, _S.BLENDING, _S.HOLDING, _S.FOSSILIZED})
#: Stages in which the seed's output is blended into the model's output (TRAINING runs the
#: seed but passes the host's features on unchanged): where a contribution can be measured.
BLENDED: frozenset[SeedStage] = RUNS_SEED - {_S.TRAINING}
#: Stages in which the slot holds a live seed module (and so pays its parameters as rent).
LIVE: frozenset[SeedStage] = frozenset({_S.GERMINATED, *RUNS_SEED})
#: Live stages before the seed is kept for good: the seed is still on probation.
PROBATION: frozenset[SeedStage] = LIVE - {_S.FOSSILIZED}

_FAILURE = FAILURE
_RUNS_SEED = RUNS_SEED
_HAS_MODULE = LIVE
_INDEX = {stage: i for i, stage in enumerate(SeedStage)}


def stage_from_value(value: object) -> SeedStage:
    """The stage ``value`` names: a :class:`SeedStage`, its name (``"TRAINING"``, any case) or
    its integer value (not ``bool``), as read from a checkpoint or a command. The reserved
    value 5 and anything else raise :class:`LifecycleError` listing the stages."""
    if isinstance(value, SeedStage):
        return value
    if isinstance(value, str):
        stage = SeedStage.__members__.get(value.strip().upper())
        if stage is None:
            raise LifecycleError(f"unknown stage name {shown(value)}; accepted: {_accepted()}")
        return stage
    if isinstance(value, bool) or not isinstance(value, int):
        raise LifecycleError(
            f"a stage is a SeedStage (e.g. SeedStage.TRAINING), its name or its value; got {shown(value)}; "
            f"accepted: {_accepted()}"
        )
    if value in RESERVED_STAGE_VALUES:
        raise LifecycleError(f"stage value {value} is reserved (retired stage); accepted: {_accepted()}")
    try:
        return SeedStage(value)
    except ValueError:
        raise LifecycleError(f"unknown stage value {shown(value)}; accepted: {_accepted()}") from None


def _accepted() -> str:
    return ", ".join(f"{s.value}={s.name}" for s in SeedStage)


def is_legal_transition(source: SeedStage, target: SeedStage) -> bool:
    """Whether the table allows ``source -> target`` (a stage never moves to itself)."""
    return target in TRANSITIONS[source]


def default_successor(stage: SeedStage) -> SeedStage | None:
    """Where ``advance()`` without a target goes: the first non-failure successor, if any."""
    for candidate in TRANSITIONS[stage]:
        if candidate not in _FAILURE:
            return candidate
    return None


def is_terminal(stage: SeedStage) -> bool:
    """Only FOSSILIZED is terminal: nothing leaves it, not even a prune."""
    return stage is SeedStage.FOSSILIZED


def is_failure(stage: SeedStage) -> bool:
    """PRUNED, EMBARGOED and RESETTING: the seed is gone and the slot is cooling down."""
    return stage in _FAILURE


def runs_seed(stage: SeedStage) -> bool:
    """Whether ``forward`` calls the seed in this stage. GERMINATED does not."""
    return stage in _RUNS_SEED


def has_seed_module(stage: SeedStage) -> bool:
    """Whether a slot in this stage holds a live seed module (GERMINATED..FOSSILIZED)."""
    return stage in _HAS_MODULE


def stage_index(stage: SeedStage) -> int:
    """A contiguous index 0..9 over the valid stages (for one-hot features)."""
    return _INDEX[stage_from_value(stage)]


def isolated_in(stage: SeedStage, *, isolate_blending: bool) -> bool:
    """Whether the seed input is gradient-isolated from the host in ``stage``.

    Always in TRAINING (the incubator); in BLENDING when the slot's ``isolate_blending`` says
    so (by default for topologies without a sequence axis); never from HOLDING on, so layers
    upstream of a fully blended seed keep learning (see :mod:`esper_core.isolation`).
    """
    if stage is SeedStage.TRAINING:
        return True
    if stage is SeedStage.BLENDING:
        return isolate_blending
    return False
