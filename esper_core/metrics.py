"""Per-seed measurements and the slot's typed report.

:class:`SeedMetrics` is an immutable record updated by pure methods that return a new
record, so the slot can validate a new measurement before committing it. "Never
measured" is ``None`` everywhere (an accuracy of 0.0 and "no accuracy yet" are different
facts), and :meth:`SeedMetrics.to_dict`/:meth:`SeedMetrics.from_dict` require every key.

Accuracies and contributions are percentage points on a 0-100 scale.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from esper_core.alpha import AlphaCurve, AlphaMode
from esper_core.blend import BlendAlgorithm
from esper_core.errors import CheckpointError, LifecycleError
from esper_core.stages import SeedStage

__all__ = ["VELOCITY_SMOOTHING", "SeedMetrics", "SlotReport", "check_accuracy", "check_contribution"]

#: Weight of the newest contribution change in the velocity EMA.
VELOCITY_SMOOTHING = 0.3

_OPTIONAL_FLOATS = (
    "initial_accuracy",
    "current_accuracy",
    "best_accuracy",
    "accuracy_at_stage_start",
    "accuracy_at_blending_start",
    "counterfactual",
    "previous_counterfactual",
    "contribution_velocity",
)


def _as_float(name: str, value: object) -> float:
    if hasattr(value, "item") and callable(value.item):  # a 0-dim tensor or numpy scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LifecycleError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_accuracy(value: object) -> float:
    """An accuracy in percentage points, 0 to 100 (tensors are read with ``.item()``)."""
    acc = _as_float("accuracy", value)
    if not 0.0 <= acc <= 100.0:
        raise LifecycleError(f"accuracy is in percentage points and must lie in [0, 100], got {acc!r}")
    return acc


def check_contribution(value: object) -> float:
    """A counterfactual contribution in percentage points, -100 to 100."""
    c = _as_float("contribution", value)
    if not -100.0 <= c <= 100.0:
        raise LifecycleError(f"contribution is in percentage points and must lie in [-100, 100], got {c!r}")
    return c


@attrs.frozen(kw_only=True)
class SeedMetrics:
    """Accuracy history and counterfactual contribution of one seed."""

    epochs_total: int = 0
    epochs_in_stage: int = 0
    initial_accuracy: float | None = None
    current_accuracy: float | None = None
    best_accuracy: float | None = None
    accuracy_at_stage_start: float | None = None
    accuracy_at_blending_start: float | None = None
    counterfactual: float | None = None
    previous_counterfactual: float | None = None
    contribution_velocity: float | None = None

    # ---- derived ----------------------------------------------------------------------------

    @property
    def total_improvement(self) -> float | None:
        if self.current_accuracy is None or self.initial_accuracy is None:
            return None
        return self.current_accuracy - self.initial_accuracy

    @property
    def improvement_since_stage_start(self) -> float | None:
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
            epochs_total=self.epochs_total + 1,
            epochs_in_stage=self.epochs_in_stage + 1,
            initial_accuracy=acc if first else self.initial_accuracy,
            accuracy_at_stage_start=acc
            if self.accuracy_at_stage_start is None
            else self.accuracy_at_stage_start,
            current_accuracy=acc,
            best_accuracy=acc if self.best_accuracy is None else max(self.best_accuracy, acc),
        )

    def enter_stage(self, *, blending: bool = False) -> SeedMetrics:
        """Reset the per-stage baseline; at BLENDING entry also snapshot the accuracy."""
        return attrs.evolve(
            self,
            epochs_in_stage=0,
            accuracy_at_stage_start=self.current_accuracy,
            accuracy_at_blending_start=self.current_accuracy if blending else self.accuracy_at_blending_start,
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

    # ---- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> SeedMetrics:
        """Strict: exactly the keys :meth:`to_dict` writes, ints and floats-or-None."""
        expected = {a.name for a in attrs.fields(cls)}
        if not isinstance(data, dict) or set(data) != expected:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(f"seed metrics need exactly the keys {sorted(expected)}; got {got}")
        for key in ("epochs_total", "epochs_in_stage"):
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CheckpointError(f"seed metrics field {key!r} must be an int >= 0, got {value!r}")
        for key in _OPTIONAL_FLOATS:
            value = data[key]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            ):
                raise CheckpointError(
                    f"seed metrics field {key!r} must be a finite number or None, got {value!r}"
                )
        return cls(
            **{k: (float(v) if k in _OPTIONAL_FLOATS and v is not None else v) for k, v in data.items()}
        )


@attrs.frozen(kw_only=True)
class SlotReport:
    """A snapshot of one slot for controllers, observations and telemetry.

    ``blending_progress`` is the amplitude schedule (what the controller steers), not the
    realised per-sample weight of a gated blend. Parameter counts include every parameter
    whether or not it currently requires grad, so a temporary freeze never changes rent.
    """

    slot_id: str
    topology: str
    dim: int
    stage: SeedStage
    previous_stage: SeedStage
    ticks_in_stage: int
    seed_id: str | None
    blueprint: str | None
    options: tuple[tuple[str, Any], ...]
    algorithm: BlendAlgorithm | None
    blending_progress: float
    alpha_target: float
    alpha_mode: AlphaMode
    alpha_curve: AlphaCurve
    alpha_steps_done: int
    alpha_steps_total: int
    isolated: bool
    metrics: SeedMetrics
    activity: float | None
    trainable: bool
    healthy: bool
    health_issues: tuple[str, ...]
    seed_param_count: int
    gate_param_count: int
    pending_prune: bool

    @property
    def param_count(self) -> int:
        """Seed plus gate parameters: the rent this slot pays."""
        return self.seed_param_count + self.gate_param_count

    @property
    def contribution_velocity(self) -> float | None:
        return self.metrics.contribution_velocity
