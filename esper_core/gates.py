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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import attrs

from esper_core._checks import MAX_TEXT, check_bool, check_enum, check_float, check_int, shown
from esper_core.alpha import ALPHA_TOLERANCE, AlphaMode
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


def _number(name: str, unit: str, minimum: float = 0.0, maximum: float = math.inf) -> Any:
    """A converter to a finite float in ``[minimum, maximum]`` (``unit`` names the scale in errors)."""
    return lambda value: check_float(
        f"gate threshold {name}", value, minimum=minimum, maximum=maximum, unit=unit
    )


def _count(name: str) -> Any:
    return lambda value: check_int(f"gate threshold {name}", value)


@attrs.frozen(kw_only=True)
class GateThresholds:
    """Every number a gate compares against. Accuracies and contributions are in
    percentage points (accuracy on a 0-100 scale)."""

    #: G2 strict: accuracy gained since TRAINING began.
    min_training_improvement: float = attrs.field(
        default=0.5, converter=_number("min_training_improvement", " percentage points", maximum=100.0)
    )
    #: G2 strict: recorded epochs in TRAINING.
    min_training_evaluations: int = attrs.field(default=3, converter=_count("min_training_evaluations"))
    #: G2 permissive: recorded epochs in TRAINING.
    permissive_training_evaluations: int = attrs.field(
        default=1, converter=_count("permissive_training_evaluations")
    )
    #: G2 strict: smoothed seed activity (relative parameter change per epoch, see activity.py).
    min_activity: float = attrs.field(
        default=1e-3, converter=_number("min_activity", " (relative parameter change per epoch)")
    )
    #: G3 strict: recorded epochs in BLENDING.
    min_blending_evaluations: int = attrs.field(default=3, converter=_count("min_blending_evaluations"))
    #: G5 strict: measured counterfactual contribution.
    min_fossilize_contribution: float = attrs.field(
        default=1.0,
        converter=_number("min_fossilize_contribution", " percentage points", minimum=-100.0, maximum=100.0),
    )
    #: G3: how close alpha must be to its target (both policies).
    alpha_tolerance: float = attrs.field(
        default=ALPHA_TOLERANCE, converter=_number("alpha_tolerance", " (alpha units)", maximum=0.5)
    )


def _flag(name: str) -> Any:
    return lambda value: check_bool(f"gate evidence {name}", value)


def _measured(name: str, minimum: float, maximum: float, unit: str = "") -> Any:
    def convert(value: object) -> float | None:
        if value is None:
            return None
        return check_float(f"gate evidence {name}", value, minimum=minimum, maximum=maximum, unit=unit)

    return convert


def _label(name: str) -> Any:
    def convert(value: object) -> str:
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise LifecycleError(
                f"gate evidence {name} must be a str of at most {MAX_TEXT} characters, got {shown(value)}"
            )
        return value

    return convert


def _tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, tuple | list) or not all(isinstance(t, str) and len(t) <= 64 for t in value):
        raise LifecycleError(f"gate evidence nonfinite must be a tuple of short str tags, got {shown(value)}")
    return tuple(value)


@attrs.frozen(kw_only=True)
class GateEvidence:
    """What a slot knows when a gate is asked; ``None`` means "never measured".

    Every field is checked on construction (a gate compares and formats them), so a bad
    value raises :class:`LifecycleError` naming it. Accuracy gains and contributions are in
    percentage points, alpha in [0, 1].
    """

    stage: SeedStage = attrs.field(converter=lambda v: check_enum("gate evidence stage", v, SeedStage))
    seed_id: str = attrs.field(default="", converter=_label("seed_id"))
    blueprint: str = attrs.field(default="", converter=_label("blueprint"))
    shape_preserved: bool = attrs.field(default=True, converter=_flag("shape_preserved"))
    dtype_preserved: bool = attrs.field(default=True, converter=_flag("dtype_preserved"))
    input_preserved: bool = attrs.field(default=True, converter=_flag("input_preserved"))
    evaluations_in_stage: int = attrs.field(
        default=0, converter=lambda v: check_int("gate evidence evaluations_in_stage", v)
    )
    improvement: float | None = attrs.field(
        default=None, converter=_measured("improvement", -100.0, 100.0, " percentage points")
    )
    activity: float | None = attrs.field(default=None, converter=_measured("activity", 0.0, math.inf))
    trainable: bool = attrs.field(default=True, converter=_flag("trainable"))
    alpha: float = attrs.field(
        default=0.0, converter=lambda v: check_float("gate evidence alpha", v, minimum=0.0, maximum=1.0)
    )
    alpha_target: float = attrs.field(
        default=0.0,
        converter=lambda v: check_float("gate evidence alpha_target", v, minimum=0.0, maximum=1.0),
    )
    alpha_mode: AlphaMode = attrs.field(
        default=AlphaMode.HOLD, converter=lambda v: check_enum("gate evidence alpha_mode", v, AlphaMode)
    )
    counterfactual: float | None = attrs.field(
        default=None, converter=_measured("counterfactual", -100.0, 100.0, " percentage points")
    )
    nonfinite: tuple[str, ...] = attrs.field(default=(), converter=_tags)


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


class _Checks:
    """Collects pass/fail tags for one gate evaluation, and for each failure a sentence that
    names the measured value and the threshold with their units (the result's message)."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.reasons: list[str] = []

    def add(self, ok: bool, good: str, bad: str, why: str) -> None:
        (self.passed if ok else self.failed).append(good if ok else bad)
        if not ok:
            self.reasons.append(why)

    def message(self, title: str, detail: str = "") -> str:
        if self.failed:
            return f"{title} failed: {'; '.join(self.reasons)}"
        return f"{title} passed{': ' + detail if detail else ''}"


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
        judge = {
            GateLevel.G0: self._g0,
            GateLevel.G1: self._g1,
            GateLevel.G2: self._g2,
            GateLevel.G3: self._g3,
            GateLevel.G5: self._g5,
        }[level]
        checks = _Checks()
        score, title, detail = judge(evidence, checks)
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

    def _g0(self, ev: GateEvidence, c: _Checks) -> tuple[float, str, str]:
        c.add(bool(ev.seed_id), "seed_id_present", "seed_id_missing", "the seed has no id")
        c.add(bool(ev.blueprint), "blueprint_present", "blueprint_missing", "no blueprint was named")
        c.add(
            ev.shape_preserved,
            "shape_preserved",
            "shape_changed",
            "the seed's output shape differs from its input's",
        )
        c.add(
            ev.dtype_preserved,
            "dtype_preserved",
            "dtype_changed",
            "the seed's output dtype differs from its input's",
        )
        c.add(
            ev.input_preserved,
            "input_preserved",
            "input_modified_in_place",
            "the seed wrote into its input tensor (it would change the host's features)",
        )
        return (0.0 if c.failed else 1.0), "G0 germination sanity", ""

    def _finite(self, ev: GateEvidence, c: _Checks) -> None:
        found = ", ".join(ev.nonfinite)
        c.add(
            not ev.nonfinite,
            "finite",
            "nonfinite_" + "_".join(ev.nonfinite),
            f"the seed is unhealthy ({found})",
        )

    def _g1(self, ev: GateEvidence, c: _Checks) -> tuple[float, str, str]:
        c.add(ev.stage is SeedStage.GERMINATED, "germinated", "not_germinated", f"stage is {ev.stage.name}")
        self._finite(ev, c)
        return (0.0 if c.failed else 1.0), "G1 training readiness", ""

    def _g2(self, ev: GateEvidence, c: _Checks) -> tuple[float, str, str]:
        t = self._thresholds
        imp = ev.improvement
        c.add(
            ev.trainable,
            "seed_trainable",
            "seed_not_trainable",
            "the seed cannot learn (no parameter requires grad, or its output does not)",
        )
        self._finite(ev, c)
        if self.strict:
            if imp is None:
                c.add(
                    False, "", "improvement_unmeasured",
                    "no accuracy recorded since TRAINING began (record_accuracy, in percentage points 0-100)",
                )  # fmt: skip
            else:
                c.add(
                    imp >= t.min_training_improvement,
                    f"improvement_{imp:.2f}pp",
                    f"improvement_insufficient_{imp:.2f}pp_below_{t.min_training_improvement:.2f}pp",
                    f"accuracy improved {imp:.2f} pp since TRAINING began, below min_training_improvement "
                    f"{t.min_training_improvement:.2f} pp (accuracies are percentage points, 0-100: 93.1, not 0.931)",
                )
            c.add(
                ev.evaluations_in_stage >= t.min_training_evaluations,
                "training_dwell_met",
                f"training_dwell_{ev.evaluations_in_stage}_of_{t.min_training_evaluations}",
                f"{ev.evaluations_in_stage} evaluations recorded in TRAINING, below min_training_evaluations "
                f"{t.min_training_evaluations}",
            )
            if ev.activity is None:
                c.add(
                    False, "", "activity_unmeasured",
                    "seed activity not measured yet (it is taken by record_accuracy while the seed runs)",
                )  # fmt: skip
            else:
                c.add(
                    ev.activity >= t.min_activity,
                    f"seed_active_{ev.activity:.2e}",
                    f"seed_inactive_{ev.activity:.2e}_below_{t.min_activity:.2e}",
                    f"seed activity {ev.activity:.2e} (relative parameter change per epoch), below min_activity "
                    f"{t.min_activity:.2e}",
                )
        else:
            c.add(
                ev.evaluations_in_stage >= t.permissive_training_evaluations,
                "training_dwell_met",
                f"training_dwell_{ev.evaluations_in_stage}_of_{t.permissive_training_evaluations}",
                f"{ev.evaluations_in_stage} evaluations recorded in TRAINING, below permissive_training_evaluations "
                f"{t.permissive_training_evaluations}",
            )
        score = 0.0 if imp is None or imp <= 0 else min(1.0, imp / 5.0)
        measured = "improvement unmeasured" if imp is None else f"improvement {imp:.2f} pp"
        return score, f"G2 blending readiness ({self._policy})", measured

    def _g3(self, ev: GateEvidence, c: _Checks) -> tuple[float, str, str]:
        t = self._thresholds
        c.add(
            ev.alpha_target >= 1.0 - t.alpha_tolerance,
            "alpha_target_full",
            f"alpha_target_not_full_{ev.alpha_target:.4f}",
            f"alpha target {ev.alpha_target:.4f}, below full alpha (1 - alpha_tolerance {t.alpha_tolerance:g})",
        )
        c.add(
            ev.alpha_mode is AlphaMode.HOLD and abs(ev.alpha - ev.alpha_target) <= t.alpha_tolerance,
            "alpha_target_reached",
            f"alpha_ramping_{ev.alpha:.4f}_to_{ev.alpha_target:.4f}_{ev.alpha_mode.name}",
            f"alpha {ev.alpha:.4f} has not reached its target {ev.alpha_target:.4f} (schedule {ev.alpha_mode.name})",
        )
        self._finite(ev, c)
        if self.strict:
            c.add(
                ev.evaluations_in_stage >= t.min_blending_evaluations,
                "blending_dwell_met",
                f"blending_dwell_{ev.evaluations_in_stage}_of_{t.min_blending_evaluations}",
                f"{ev.evaluations_in_stage} evaluations recorded in BLENDING, below min_blending_evaluations "
                f"{t.min_blending_evaluations}",
            )
        return ev.alpha, f"G3 holding readiness ({self._policy})", f"alpha {ev.alpha:.4f}"

    def _g5(self, ev: GateEvidence, c: _Checks) -> tuple[float, str, str]:
        t = self._thresholds
        cf = ev.counterfactual
        title = f"G5 fossilization readiness ({self._policy})"
        if cf is None:
            c.add(
                False, "", "counterfactual_unmeasured",
                "no counterfactual contribution measured (record_counterfactual, in percentage points)",
            )  # fmt: skip
            return 0.0, title, ""
        self._finite(ev, c)
        c.add(
            cf >= 0.0,
            f"contribution_non_negative_{cf:.2f}pp",
            f"contribution_negative_{cf:.2f}pp",
            f"contribution {cf:.2f} pp is negative (the model is better without the seed)",
        )
        if self.strict:
            c.add(
                cf >= t.min_fossilize_contribution,
                f"contribution_sufficient_{cf:.2f}pp",
                f"contribution_insufficient_{cf:.2f}pp_below_{t.min_fossilize_contribution:.2f}pp",
                f"contribution {cf:.2f} pp, below min_fossilize_contribution {t.min_fossilize_contribution:.2f} pp",
            )
        score = 0.0 if cf <= 0 else min(1.0, cf / 10.0)
        return score, title, f"contribution {cf:.2f} pp"
