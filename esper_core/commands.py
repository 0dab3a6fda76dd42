"""Every lifecycle operation as a frozen command value.

A command is what the caller asked for, checked on construction (types, ranges, bounded
integers, non-empty text), before anything else happens: a bad argument raises
:class:`~esper_core.errors.LifecycleError` naming it and what is accepted, and nothing has
changed anywhere. :func:`esper_core.transition.transition` then applies a command to a
:class:`~esper_core.slot_state.SlotState`.

The same values travel between processes: :mod:`esper_core.codec` writes any command as
JSON data, and the distributed command channel sends exactly that, so everything a command
can express locally it can express under ``torch.distributed`` (free-form string options,
any number of options, long reasons).

Commands that change the architecture or the schedule (:data:`MUTATIONS`) are decided on
rank 0 under ``torch.distributed``; measurements (accuracy, contribution, activity, the
seed's output) are local to each rank. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from esper_core._checks import check_bool, check_enum, check_float, check_int, check_mapping, check_text
from esper_core._fields import BOOL, EnumOf, FieldError, Float, Int, Nullable, ScalarMap, Str, entry
from esper_core.alpha import AlphaCurve, BlendAlgorithm
from esper_core.errors import LifecycleError
from esper_core.stages import SeedStage, stage_from_value

__all__ = [
    "COMMANDS",
    "MUTATIONS",
    "Advance",
    "CaptureActivity",
    "Command",
    "Germinate",
    "ObserveOutput",
    "Prune",
    "RecordAccuracy",
    "RecordCounterfactual",
    "SchedulePrune",
    "SetAlphaTarget",
    "StepEpoch",
]

_TEXT = r"(?s).*\S.*"
_NAME = r"[a-z][a-z0-9_]*"


def _text(what: str) -> Any:
    return lambda value: check_text(what, value)


def _optional_text(what: str) -> Any:
    return lambda value: None if value is None else check_text(what, value)


def _epochs(what: str, minimum: int) -> Any:
    return lambda value: check_int(what, value, minimum=minimum)


def _alpha_target(value: object) -> float:
    try:
        return check_float("alpha_target", value, minimum=0.0, maximum=1.0, low_open=True)
    except LifecycleError as exc:
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise LifecycleError(f"{exc} (to remove a seed use schedule_prune or prune)") from None
        raise


def _options(value: object) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, tuple) and all(isinstance(i, tuple) and len(i) == 2 for i in value):
        value = dict(value)
    options = check_mapping("options", value)
    try:  # what the codec writes it must read back: a checkpoint or a peer holds the same values
        return _OPTIONS.decode(options, "options")  # type: ignore[no-any-return]
    except FieldError as exc:
        raise LifecycleError(exc.describe("germinate")) from None


_OPTIONS = ScalarMap()


def _stage(value: object) -> SeedStage | None:
    return None if value is None else stage_from_value(value)


@attrs.frozen(kw_only=True)
class Germinate:
    """Build ``blueprint`` (with ``options``) into a DORMANT slot; G0 decides.

    ``ramp_epochs`` is the length in epochs of the first alpha ramp, ``curve`` its shape and
    ``alpha_target`` where it stops, in (0, 1]. ``seed_id`` defaults to
    ``"<slot_id>-<blueprint>-<n>"``.
    """

    blueprint: str = entry(Str(pattern=_NAME, max_length=64), converter=_text("blueprint"))
    options: tuple[tuple[str, Any], ...] = entry(ScalarMap(), default=(), converter=_options)
    seed_id: str | None = entry(
        Nullable(Str(pattern=_TEXT)), default=None, converter=_optional_text("seed_id")
    )
    algorithm: BlendAlgorithm = entry(
        EnumOf(BlendAlgorithm),
        default=BlendAlgorithm.ADD,
        converter=lambda v: check_enum("algorithm", v, BlendAlgorithm),
    )
    ramp_epochs: int = entry(Int(1), default=5, converter=_epochs("ramp_epochs", 1))
    curve: AlphaCurve = entry(
        EnumOf(AlphaCurve), default=AlphaCurve.LINEAR, converter=lambda v: check_enum("curve", v, AlphaCurve)
    )
    alpha_target: float = entry(Float(0.0, 1.0, low_open=True), default=1.0, converter=_alpha_target)

    @property
    def options_dict(self) -> dict[str, Any]:
        """The options as a plain dict."""
        return dict(self.options)

    @classmethod
    def from_keywords(cls, blueprint: str, /, **keywords: Any) -> Germinate:
        """``Germinate(blueprint=blueprint, **keywords)``, with a clear error for a keyword that is
        not one of its fields (a blueprint option passed bare instead of in ``options={...}``)."""
        check_germinate_keywords({k: v for k, v in keywords.items() if k not in GERMINATE_KEYWORDS})
        return cls(blueprint=blueprint, **keywords)


#: The keywords ``germinate`` takes besides the blueprint (its options go in ``options={...}``).
GERMINATE_KEYWORDS = tuple(f.name for f in attrs.fields(Germinate) if f.name != "blueprint")


def check_germinate_keywords(unexpected: Mapping[str, Any]) -> None:
    """Raise :class:`LifecycleError` for keywords a ``germinate`` call does not take.

    The usual cause is a blueprint option passed as a keyword (``dilation=2``): the message
    points to ``options={...}`` instead of Python's ``TypeError`` about the signature.
    """
    if unexpected:
        names = sorted(unexpected)
        example = ", ".join(f"{name!r}: ..." for name in names[:3])
        raise LifecycleError(
            f"germinate() got unexpected keyword(s) {names}; blueprint options go in options={{...}} "
            f"(e.g. options={{{example}}}); accepted keywords: {list(GERMINATE_KEYWORDS)}"
        )


@attrs.frozen(kw_only=True)
class Advance:
    """Take the gated edge to ``target`` (default: the next stage); the edge's gate decides."""

    target: SeedStage | None = entry(Nullable(EnumOf(SeedStage)), default=None, converter=_stage)


@attrs.frozen(kw_only=True)
class Prune:
    """Remove the seed now; the slot cools down (PRUNED -> EMBARGOED -> RESETTING -> DORMANT)."""

    reason: str = entry(Str(pattern=_TEXT), converter=_text("reason"))
    initiator: str = entry(Str(pattern=_TEXT), converter=_text("initiator"))


@attrs.frozen(kw_only=True)
class SchedulePrune:
    """Ramp alpha down to 0 over ``epochs`` epochs, then prune (immediately when nothing is blended in)."""

    epochs: int = entry(Int(), converter=_epochs("epochs", 0))
    curve: AlphaCurve = entry(
        EnumOf(AlphaCurve), default=AlphaCurve.LINEAR, converter=lambda v: check_enum("curve", v, AlphaCurve)
    )
    reason: str = entry(Str(pattern=_TEXT), converter=_text("reason"))
    initiator: str = entry(Str(pattern=_TEXT), converter=_text("initiator"))


@attrs.frozen(kw_only=True)
class SetAlphaTarget:
    """Retarget alpha (BLENDING or HOLDING, schedule at rest), optionally switching the blend algorithm."""

    target: float = entry(Float(0.0, 1.0, low_open=True), converter=_alpha_target)
    epochs: int = entry(Int(), converter=_epochs("epochs", 0))
    curve: AlphaCurve = entry(
        EnumOf(AlphaCurve), default=AlphaCurve.LINEAR, converter=lambda v: check_enum("curve", v, AlphaCurve)
    )
    algorithm: BlendAlgorithm | None = entry(
        Nullable(EnumOf(BlendAlgorithm)),
        default=None,
        converter=lambda v: None if v is None else check_enum("algorithm", v, BlendAlgorithm),
    )


@attrs.frozen
class StepEpoch:
    """One tick of the lifecycle clock: ramp alpha, finish a scheduled prune, cool down, auto-advance."""


@attrs.frozen(kw_only=True)
class RecordAccuracy:
    """One epoch's validation accuracy in percentage points (0-100, not a fraction)."""

    accuracy: float = entry(
        Float(0.0, 100.0),
        converter=lambda v: check_float("accuracy", v, minimum=0.0, maximum=100.0, unit=" percentage points"),
    )


@attrs.frozen(kw_only=True)
class RecordCounterfactual:
    """A measured leave-one-out contribution in percentage points (-100 to 100)."""

    contribution: float = entry(
        Float(-100.0, 100.0),
        converter=lambda v: check_float(
            "contribution", v, minimum=-100.0, maximum=100.0, unit=" percentage points"
        ),
    )


@attrs.frozen
class CaptureActivity:
    """Fold the activity measured by the slot (its evidence) into the seed's state."""


@attrs.frozen(kw_only=True)
class ObserveOutput:
    """What ``forward`` saw of the seed's output once per stage: does it require grad?"""

    requires_grad: bool = entry(BOOL, converter=lambda v: check_bool("requires_grad", v))


#: Any of the command classes (the type :func:`esper_core.transition.transition` takes).
Command = (
    Germinate
    | Advance
    | Prune
    | SchedulePrune
    | SetAlphaTarget
    | StepEpoch
    | RecordAccuracy
    | RecordCounterfactual
    | CaptureActivity
    | ObserveOutput
)

#: Every command class by its codec name.
COMMANDS: Mapping[str, type] = {
    "germinate": Germinate,
    "advance": Advance,
    "prune": Prune,
    "schedule_prune": SchedulePrune,
    "set_alpha_target": SetAlphaTarget,
    "step_epoch": StepEpoch,
    "record_accuracy": RecordAccuracy,
    "record_counterfactual": RecordCounterfactual,
    "capture_activity": CaptureActivity,
    "observe_output": ObserveOutput,
}

#: Commands that change the architecture or the schedule: decided on rank 0 under torch.distributed.
MUTATIONS: tuple[type, ...] = (Germinate, Advance, Prune, SchedulePrune, SetAlphaTarget)
