"""Quality gates: whether a seed may take one step along the lifecycle.

Gates are looked up by **edge** ``(from, to)``, never by target stage alone, and the table
is closed: an edge that has no gate raises :class:`~esper_core.errors.MissingGateError`.
There is no catch-all that passes. Edges driven by explicit API calls (prune, retarget
from HOLDING back to BLENDING) or by the cooldown clock have no gate on purpose.

A gate judges a :class:`GateEvidence` snapshot, so evaluating is a pure function: the
slot gathers the evidence, the gate decides, the slot (through its ``decider``) commits.

Two policies share one set of thresholds:

* ``strict``: quality and safety (improvement, dwell time, measured activity, full ramp,
  counterfactual contribution above a threshold).
* ``permissive``: safety and structure only, for a learning controller that discovers
  quality thresholds from rewards. Safety still applies: a seed that cannot learn fails
  G2, and an unhealthy seed (non-finite output or gradients, or a negative measured
  contribution) can never fossilize under either policy.

Layout: :class:`GateThresholds` and :class:`GateEvidence` are defined in
``esper_core._gate_inputs`` and each gate's checks in ``esper_core._gate_checks``; import
every name from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import attrs

from esper_core._checks import shown
from esper_core._gate_checks import Checks, Judge, judge_g0, judge_g1, judge_g2, judge_g3, judge_g5
from esper_core._gate_inputs import GateEvidence, GateThresholds
from esper_core.errors import LifecycleError, MissingGateError
from esper_core.stages import SeedStage

__all__ = [
    "EDGE_GATES",
    "POLICIES",
    "GateEvidence",
    "GateLevel",
    "GateResult",
    "GateThresholds",
    "QualityGates",
    "gate_for_edge",
]

# Public where users import them (reprs, pickles and docs name esper_core.gates).
GateEvidence.__module__ = GateThresholds.__module__ = __name__


class GateLevel(IntEnum):
    """The gates. 4 is skipped on purpose: it belonged to a retired stage."""

    G0 = 0
    G1 = 1
    G2 = 2
    G3 = 3
    G5 = 5


_S = SeedStage
EDGE_GATES: Mapping[tuple[SeedStage, SeedStage], GateLevel] = MappingProxyType(
    {
        (_S.DORMANT, _S.GERMINATED): GateLevel.G0,
        (_S.GERMINATED, _S.TRAINING): GateLevel.G1,
        (_S.TRAINING, _S.BLENDING): GateLevel.G2,
        (_S.BLENDING, _S.HOLDING): GateLevel.G3,
        (_S.HOLDING, _S.FOSSILIZED): GateLevel.G5,
    }
)

POLICIES = ("strict", "permissive")

# The checks of each gate (pure functions, in esper_core._gate_checks).
_JUDGES: Mapping[GateLevel, Judge] = MappingProxyType(
    {
        GateLevel.G0: judge_g0,
        GateLevel.G1: judge_g1,
        GateLevel.G2: judge_g2,
        GateLevel.G3: judge_g3,
        GateLevel.G5: judge_g5,
    }
)


def gate_for_edge(edge: tuple[SeedStage, SeedStage]) -> GateLevel:
    """The gate guarding ``edge``; raises :class:`MissingGateError` for any other edge."""
    level = EDGE_GATES.get(edge) if isinstance(edge, tuple) and len(edge) == 2 else None
    if level is None:
        gated = ", ".join(f"{a.name}->{b.name}" for a, b in EDGE_GATES)
        text = (
            "->".join(getattr(s, "name", shown(s)) for s in edge) if isinstance(edge, tuple) else shown(edge)
        )
        raise MissingGateError(f"no quality gate guards the edge {shown(text, 200)}; gated edges: {gated}")
    return level


@attrs.frozen
class GateResult:
    """One gate decision. ``checks_*`` are short tags such as ``"seed_trainable"``."""

    gate: GateLevel
    edge: tuple[SeedStage, SeedStage]
    passed: bool
    score: float
    checks_passed: tuple[str, ...]
    checks_failed: tuple[str, ...]
    message: str
    policy: str

    @property
    def target(self) -> SeedStage:
        return self.edge[1]

    def describe(self) -> str:
        """This result as one line: ``"G2 TRAINING->BLENDING: <message>"`` (the message names
        every failed check with the measured value and the threshold in their units)."""
        a, b = self.edge
        return f"{self.gate.name} {a.name}->{b.name}: {self.message}"


class QualityGates:
    """The gates under one policy and one set of thresholds. Immutable and stateless.

    ``QualityGates("strict", min_activity=0.01)`` overrides single thresholds;
    ``thresholds=GateThresholds(...)`` replaces them all.
    """

    __slots__ = ("_policy", "_thresholds")

    def __init__(
        self, policy: str = "strict", thresholds: GateThresholds | None = None, **overrides: Any
    ) -> None:
        if not isinstance(policy, str) or policy not in POLICIES:
            raise LifecycleError(f"unknown gate policy {shown(policy)}; accepted: {list(POLICIES)}")
        base = GateThresholds() if thresholds is None else thresholds
        if not isinstance(base, GateThresholds):
            raise LifecycleError(
                f"thresholds must be a GateThresholds, got {shown(base)} ({type(base).__name__})"
            )
        known = [a.name for a in attrs.fields(GateThresholds)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise LifecycleError(f"unknown gate threshold(s) {unknown}; accepted: {known}")
        object.__setattr__(self, "_policy", policy)
        object.__setattr__(self, "_thresholds", attrs.evolve(base, **overrides))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("QualityGates is immutable; build a new one")

    # Immutable, so copies may share it; pickling rebuilds it through __init__ (the default
    # protocol would restore the slots with setattr, which is blocked above).
    def __copy__(self) -> QualityGates:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> QualityGates:
        return self

    def __reduce__(self) -> tuple[type[QualityGates], tuple[str, GateThresholds]]:
        return (QualityGates, (self._policy, self._thresholds))

    @property
    def policy(self) -> str:
        return self._policy

    @property
    def thresholds(self) -> GateThresholds:
        return self._thresholds

    @property
    def strict(self) -> bool:
        return self._policy == "strict"

    def __repr__(self) -> str:
        return f"QualityGates({self._policy!r}, {self._thresholds!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QualityGates):
            return NotImplemented
        return (self._policy, self._thresholds) == (other._policy, other._thresholds)

    def __hash__(self) -> int:
        return hash((self._policy, self._thresholds))

    # ---- evaluation -------------------------------------------------------------------------

    def evaluate(self, edge: tuple[SeedStage, SeedStage], evidence: GateEvidence) -> GateResult:
        """Judge ``evidence`` for ``edge``. Pure: no state is read or written elsewhere."""
        level = gate_for_edge(edge)
        if evidence.stage is not edge[0]:
            raise LifecycleError(
                f"evidence is for stage {evidence.stage.name} but the edge starts at {edge[0].name}"
            )
        checks = Checks()
        score, title, detail = _JUDGES[level](evidence, self._thresholds, self._policy, checks)
        message = checks.message(title, detail)
        return GateResult(
            gate=level,
            edge=edge,
            passed=not checks.failed,
            score=float(min(1.0, max(0.0, score))),
            checks_passed=tuple(checks.passed),
            checks_failed=tuple(checks.failed),
            message=message,
            policy=self._policy,
        )
