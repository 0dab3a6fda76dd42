"""Per-seed measurements and the slot's typed report (pure values, no torch).

:class:`SeedMetrics` and :class:`ActivityState` are immutable records updated by pure
methods that return a new record, so a lifecycle transition can compute a new measurement
before anything is committed. "Never measured" is ``None`` everywhere (an accuracy of 0.0
and "no accuracy yet" are different facts).

**Units.** Accuracies and contributions are percentage points on a 0-100 scale
(``record_accuracy(93.1)``, not ``0.931``). Activity is a relative parameter change per
interval (dimensionless, see :mod:`esper_core.activity`).
"""

from __future__ import annotations

from typing import Any

import attrs

from esper_core._checks import INT32_MAX, check_float
from esper_core._fields import Float, Int, InvalidState, Nullable, entry
from esper_core.alpha import AlphaCurve, AlphaMode, BlendAlgorithm
from esper_core.errors import LifecycleError
from esper_core.stages import SeedStage

__all__ = [
    "DEFAULT_ACTIVITY_DECAY",
    "VELOCITY_SMOOTHING",
    "ActivityState",
    "SeedMetrics",
    "SlotReport",
    "check_accuracy",
    "check_activity_decay",
    "check_contribution",
]

#: Weight of the newest contribution change in the velocity EMA.
VELOCITY_SMOOTHING = 0.3

#: Weight of the previous EMA value when a new activity reading arrives.
DEFAULT_ACTIVITY_DECAY = 0.5

_ACC = Nullable(Float(0.0, 100.0))
_CONTRIB = Nullable(Float(-100.0, 100.0))


def check_activity_decay(value: object) -> float:
    """The weight of the previous EMA value, in ``[0, 1)``."""
    return check_float("activity_decay", value, minimum=0.0, maximum=1.0, high_open=True)


def check_accuracy(value: object) -> float:
    """An accuracy in percentage points, 0 to 100 (a 0-dim tensor or numpy scalar is read as a number)."""
    return check_float("accuracy", value, minimum=0.0, maximum=100.0, unit=" (percentage points)")


def check_contribution(value: object) -> float:
    """A counterfactual contribution in percentage points, -100 to 100."""
    return check_float("contribution", value, minimum=-100.0, maximum=100.0, unit=" (percentage points)")


@attrs.frozen(kw_only=True)
class SeedMetrics:
    """Accuracy history and counterfactual contribution of one seed."""

    evaluations_total: int = entry(Int(), default=0)
    evaluations_in_stage: int = entry(Int(), default=0)
    initial_accuracy: float | None = entry(_ACC, default=None)
    current_accuracy: float | None = entry(_ACC, default=None)
    best_accuracy: float | None = entry(_ACC, default=None)
    accuracy_at_stage_start: float | None = entry(_ACC, default=None)
    accuracy_at_blending_start: float | None = entry(_ACC, default=None)
    counterfactual: float | None = entry(_CONTRIB, default=None)
    previous_counterfactual: float | None = entry(_CONTRIB, default=None)
    contribution_velocity: float | None = entry(Nullable(Float(-200.0, 200.0)), default=None)

    def __attrs_post_init__(self) -> None:
        if self.evaluations_in_stage > self.evaluations_total:
            raise InvalidState(
                "evaluations_in_stage",
                f"got {self.evaluations_in_stage}; accepted: at most evaluations_total ({self.evaluations_total})",
            )
        measured = {self.initial_accuracy is None, self.current_accuracy is None, self.best_accuracy is None}
        if len(measured) != 1:
            raise InvalidState(
                "current_accuracy",
                "initial, current and best accuracy must be all None (never measured) or all numbers; got "
                f"{self.initial_accuracy!r}, {self.current_accuracy!r}, {self.best_accuracy!r}",
            )

    # ---- derived ----------------------------------------------------------------------------

    @property
    def total_improvement(self) -> float | None:
        """Current minus first recorded accuracy (pp), or None."""
        if self.current_accuracy is None or self.initial_accuracy is None:
            return None
        return self.current_accuracy - self.initial_accuracy

    @property
    def improvement_since_stage_start(self) -> float | None:
        """Current accuracy minus the accuracy when the stage began (pp; what G2 judges), or None."""
        if self.current_accuracy is None or self.accuracy_at_stage_start is None:
            return None
        return self.current_accuracy - self.accuracy_at_stage_start

    @property
    def blending_delta(self) -> float | None:
        """Accuracy change since blending began (host drift included; telemetry only)."""
        if self.current_accuracy is None or self.accuracy_at_blending_start is None:
            return None
        return self.current_accuracy - self.accuracy_at_blending_start

    # ---- updates (pure) ----------------------------------------------------------------------

    def record_accuracy(self, accuracy: object) -> SeedMetrics:
        """One epoch's validation accuracy. The first one ever is also the baseline."""
        acc = check_accuracy(accuracy)
        first = self.initial_accuracy is None
        return attrs.evolve(
            self,
            evaluations_total=min(self.evaluations_total + 1, INT32_MAX),
            evaluations_in_stage=min(self.evaluations_in_stage + 1, INT32_MAX),
            initial_accuracy=acc if first else self.initial_accuracy,
            accuracy_at_stage_start=acc
            if self.accuracy_at_stage_start is None
            else self.accuracy_at_stage_start,
            current_accuracy=acc,
            best_accuracy=acc if self.best_accuracy is None else max(self.best_accuracy, acc),
        )

    def enter_stage(self, *, blending: bool = False, holding: bool = False) -> SeedMetrics:
        """Reset the per-stage baseline; at BLENDING entry also snapshot the accuracy.

        At HOLDING entry the last contribution (measured while alpha was still ramping)
        becomes the previous one: G5 judges a contribution measured at full strength.
        """
        return attrs.evolve(
            self,
            evaluations_in_stage=0,
            accuracy_at_stage_start=self.current_accuracy,
            accuracy_at_blending_start=self.current_accuracy if blending else self.accuracy_at_blending_start,
            counterfactual=None if holding else self.counterfactual,
            previous_counterfactual=self.counterfactual if holding else self.previous_counterfactual,
        )

    def record_counterfactual(
        self, contribution: object, smoothing: float = VELOCITY_SMOOTHING
    ) -> SeedMetrics:
        """A new leave-one-out contribution; velocity is an EMA of its changes."""
        c = check_contribution(contribution)
        previous = self.counterfactual
        if previous is None:
            velocity = self.contribution_velocity
        else:
            change = c - previous
            old = self.contribution_velocity
            velocity = change if old is None else (1.0 - smoothing) * old + smoothing * change
        return attrs.evolve(
            self, counterfactual=c, previous_counterfactual=previous, contribution_velocity=velocity
        )


@attrs.frozen
class ActivityState:
    """Smoothed seed activity (see :mod:`esper_core.activity`). ``ema is None``: never measured."""

    ema: float | None = entry(Nullable(Float(0.0, 2.0)), default=None)
    last: float | None = entry(Nullable(Float(0.0, 2.0)), default=None)
    samples: int = entry(Int(), default=0)

    def __attrs_post_init__(self) -> None:
        if (self.ema is None) != (self.samples == 0) or (self.last is None) != (self.samples == 0):
            raise LifecycleError(
                f"activity ema {self.ema!r} and last {self.last!r} must be None exactly when samples is 0 "
                f"(never measured); samples is {self.samples}"
            )

    @property
    def measured(self) -> bool:
        """False until the first reading."""
        return self.ema is not None

    def update(self, reading: float, decay: float = DEFAULT_ACTIVITY_DECAY) -> ActivityState:
        """Fold one finite reading into the EMA (the first reading is taken as is)."""
        value = check_float("an activity reading", reading, minimum=0.0, maximum=2.0)
        decay = check_activity_decay(decay)
        ema = value if self.ema is None else decay * self.ema + (1.0 - decay) * value
        return ActivityState(ema=ema, last=value, samples=min(self.samples + 1, INT32_MAX))


@attrs.frozen(kw_only=True)
class SlotReport:
    """A snapshot of one slot for controllers, observations and telemetry.

    ``alpha`` is the amplitude schedule (what the controller steers), not the
    realised per-sample weight of a gated blend. Parameter counts include every parameter
    whether or not it currently requires grad, so a temporary freeze never changes rent.
    """

    slot_id: str
    topology: str
    dim: int
    stage: SeedStage
    previous_stage: SeedStage
    epochs_in_stage: int
    seed_id: str | None
    blueprint: str | None
    options: tuple[tuple[str, Any], ...]
    algorithm: BlendAlgorithm | None
    alpha: float
    alpha_target: float
    alpha_mode: AlphaMode
    alpha_curve: AlphaCurve
    alpha_epochs_done: int
    alpha_epochs_total: int
    isolated: bool
    metrics: SeedMetrics
    activity: float | None
    trainable: bool
    healthy: bool
    health_issues: tuple[str, ...]
    seed_param_count: int
    gate_param_count: int
    pending_prune: bool
    warnings: tuple[str, ...] = ()
    """One-time warning codes emitted for this seed so far (e.g. ``accuracy_looks_like_a_fraction``;
    each was a :class:`~esper_core.telemetry.SeedWarning` event with the full message)."""
    last_gate: str | None = attrs.field(default=None, eq=False)
    """The most recent gate judgement of this seed (``advance``, ``evaluate`` or an automatic
    advance) as one line: gate, edge, verdict and, when it failed, every failed check with the
    measured value and the threshold in their units. Runtime only: not kept in checkpoints,
    and not part of a report's equality."""

    @property
    def param_count(self) -> int:
        """Seed plus gate parameters: the rent this slot pays."""
        return self.seed_param_count + self.gate_param_count

    @property
    def contribution_velocity(self) -> float | None:
        """EMA of the changes of the measured contribution (pp per evaluation), or None."""
        return self.metrics.contribution_velocity
