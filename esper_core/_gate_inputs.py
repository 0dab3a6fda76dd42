"""What a quality gate compares: its thresholds and the evidence it judges.

:class:`GateThresholds` holds every number a gate compares against; :class:`GateEvidence` is
the snapshot a slot gathers when a gate is asked. Both are frozen values whose every field is
checked on construction, so a gate can compare and format them without further checks. Both
are public as :mod:`esper_core.gates` names; this module only keeps them and their field
converters together.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from esper_core._checks import MAX_TEXT, check_bool, check_enum, check_float, check_int, shown
from esper_core.alpha import ALPHA_TOLERANCE, AlphaMode
from esper_core.errors import LifecycleError
from esper_core.stages import SeedStage

__all__ = ["GateEvidence", "GateThresholds"]


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
