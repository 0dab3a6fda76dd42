"""Alpha, the blend amplitude, and its schedule: an immutable value ticked once per epoch; the blend algorithms.

:class:`AlphaSchedule` is a frozen value. ``step()`` and ``retarget()`` return a new
controller instead of mutating, so a slot can compute the next schedule, validate it and
only then commit it (a rejected call leaves nothing half-changed), and two controllers
compare equal exactly when they will produce the same future.

The value at tick ``k`` of an ``n``-tick ramp is computed from the ramp's start, not
accumulated tick by tick: ``start + (target - start) * curve(k / n)``. That makes the
trajectory independent of how often it was serialised in between (a round trip mid-ramp
continues on the same values) and avoids floating-point drift. The last tick snaps to the
target exactly and puts the controller back in HOLD.
"""

from __future__ import annotations

import math
from enum import Enum

import attrs

from esper_core._checks import check_float, check_int, shown
from esper_core._fields import EnumOf, Float, Int, entry
from esper_core.errors import LifecycleError

__all__ = [
    "ALPHA_TOLERANCE",
    "DEFAULT_STEEPNESS",
    "MIN_STEEPNESS",
    "AlphaCurve",
    "AlphaMode",
    "AlphaSchedule",
    "BlendAlgorithm",
    "curve_progress",
]

#: Two alphas closer than this are considered equal (gate checks, "at target").
ALPHA_TOLERANCE = 1e-6
#: Default steepness of the sigmoid curve.
DEFAULT_STEEPNESS = 12.0
#: Below this the sigmoid is practically linear and the renormalisation loses precision.
MIN_STEEPNESS = 0.1
#: Above this the sigmoid is practically a step (and exp() of it would overflow in float).
MAX_STEEPNESS = 1000.0


class BlendAlgorithm(Enum):
    """How seed and host features are combined (orthogonal to the alpha curve); see :mod:`.blend`."""

    ADD = "add"
    MULTIPLY = "multiply"
    GATE = "gate"


class AlphaMode(Enum):
    """Whether the schedule rests, ramps up or ramps down."""

    HOLD = "hold"
    UP = "up"
    DOWN = "down"


class AlphaCurve(Enum):
    """The shape of a ramp, as progress ``p(t)`` for ``t`` in [0, 1] with p(0)=0, p(1)=1."""

    LINEAR = "linear"
    COSINE = "cosine"
    SIGMOID = "sigmoid"


def _logistic(z: float) -> float:
    # Branching keeps exp() from overflowing for large |z| (steep curves).
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def curve_progress(curve: AlphaCurve, t: float, steepness: float = DEFAULT_STEEPNESS) -> float:
    """Progress in [0, 1] along ``curve`` at time ``t`` (clamped to [0, 1]); monotone in ``t``.

    The sigmoid is a logistic of slope ``steepness`` centred at 0.5, rescaled so that it
    hits 0 and 1 exactly at the ends; cosine has zero slope at both ends.
    """
    t = min(1.0, max(0.0, float(t)))
    if curve is AlphaCurve.LINEAR:
        return t
    if curve is AlphaCurve.COSINE:
        return 0.5 * (1.0 - math.cos(math.pi * t))
    if curve is AlphaCurve.SIGMOID:
        low = _logistic(-steepness / 2.0)
        high = _logistic(steepness / 2.0)
        return min(1.0, max(0.0, (_logistic(steepness * (t - 0.5)) - low) / (high - low)))
    raise LifecycleError(f"unknown alpha curve {shown(curve)}; accepted: {[c.value for c in AlphaCurve]}")


_UNIT = Float(0.0, 1.0)


def _unit(name: str, value: object) -> float:
    return check_float(name, value, minimum=0.0, maximum=1.0)


def _epochs(name: str, value: object) -> int:
    return check_int(name, value)


@attrs.frozen
class AlphaSchedule:
    """An immutable alpha schedule. Build new ones with :meth:`retarget` and :meth:`step`.

    ``alpha`` is the schedule's value (what ``forward`` blends with), not the realised
    per-sample weight of a gated blend (which multiplies it by the blend gate).
    """

    alpha: float = entry(_UNIT, default=0.0, converter=lambda v: _unit("alpha", v))
    start: float = entry(_UNIT, default=0.0, converter=lambda v: _unit("start", v))
    target: float = entry(_UNIT, default=0.0, converter=lambda v: _unit("target", v))
    mode: AlphaMode = entry(
        EnumOf(AlphaMode), default=AlphaMode.HOLD, validator=attrs.validators.instance_of(AlphaMode)
    )
    curve: AlphaCurve = entry(
        EnumOf(AlphaCurve), default=AlphaCurve.LINEAR, validator=attrs.validators.instance_of(AlphaCurve)
    )
    steepness: float = entry(
        Float(MIN_STEEPNESS, MAX_STEEPNESS),
        default=DEFAULT_STEEPNESS,
        converter=lambda v: check_float("steepness", v, minimum=MIN_STEEPNESS, maximum=MAX_STEEPNESS),
    )
    epochs_total: int = entry(Int(), default=0, converter=lambda v: _epochs("epochs_total", v))
    epochs_done: int = entry(Int(), default=0, converter=lambda v: _epochs("epochs_done", v))

    def __attrs_post_init__(self) -> None:
        if self.epochs_done > self.epochs_total:
            raise LifecycleError(
                f"epochs_done ({self.epochs_done}) must not exceed epochs_total ({self.epochs_total})"
            )
        if self.mode is AlphaMode.HOLD and abs(self.alpha - self.target) > ALPHA_TOLERANCE:
            raise LifecycleError(
                f"a HOLD controller rests at its target; alpha {self.alpha} != {self.target}"
            )
        expected = AlphaMode.UP if self.target > self.start else AlphaMode.DOWN
        if self.mode is not AlphaMode.HOLD and (
            self.mode is not expected or self.epochs_done >= self.epochs_total
        ):
            raise LifecycleError(
                f"inconsistent ramp: mode {self.mode.name} from {self.start} to {self.target} "
                f"at step {self.epochs_done}/{self.epochs_total}"
            )

    # ---- queries --------------------------------------------------------------------------

    @property
    def at_rest(self) -> bool:
        """True in HOLD: the only mode from which the schedule may be retargeted."""
        return self.mode is AlphaMode.HOLD

    @property
    def remaining_epochs(self) -> int:
        """Epochs left in the current ramp (0 at rest)."""
        return 0 if self.at_rest else self.epochs_total - self.epochs_done

    # ---- transitions (pure) ------------------------------------------------------------------

    def retarget(
        self, target: float, epochs: int, curve: AlphaCurve | None = None, steepness: float | None = None
    ) -> AlphaSchedule:
        """A schedule ramping from the current alpha to ``target`` over ``epochs`` epochs.

        Only allowed at rest (HOLD): changing course mid-ramp would make the schedule
        dither. ``epochs == 0`` or ``target == alpha`` jumps straight to HOLD at ``target``.
        """
        if not self.at_rest:
            raise LifecycleError(
                f"retarget is only allowed from HOLD; the controller is ramping {self.mode.name} "
                f"to {self.target} ({self.remaining_epochs} epochs left)"
            )
        target = _unit("target", target)
        epochs = _epochs("epochs", epochs)
        if curve is not None and not isinstance(curve, AlphaCurve):
            raise LifecycleError(
                f"curve must be an AlphaCurve, got {shown(curve)}; accepted: {list(AlphaCurve)}"
            )
        new_curve = self.curve if curve is None else curve
        new_steepness = self.steepness if steepness is None else steepness
        if epochs == 0 or abs(target - self.alpha) <= ALPHA_TOLERANCE:
            return AlphaSchedule(
                alpha=target, start=target, target=target, mode=AlphaMode.HOLD, curve=new_curve,
                steepness=new_steepness, epochs_total=epochs, epochs_done=epochs,
            )  # fmt: skip
        mode = AlphaMode.UP if target > self.alpha else AlphaMode.DOWN
        return AlphaSchedule(
            alpha=self.alpha, start=self.alpha, target=target, mode=mode, curve=new_curve,
            steepness=new_steepness, epochs_total=epochs, epochs_done=0,
        )  # fmt: skip

    def step(self) -> AlphaSchedule:
        """The schedule one epoch later. At rest, the same schedule."""
        if self.at_rest:
            return self
        done = self.epochs_done + 1
        if done >= self.epochs_total:
            return attrs.evolve(self, alpha=self.target, epochs_done=self.epochs_total, mode=AlphaMode.HOLD)
        p = curve_progress(self.curve, done / self.epochs_total, self.steepness)
        value = self.start + (self.target - self.start) * p
        low, high = sorted((self.start, self.target))
        return attrs.evolve(self, alpha=min(high, max(low, value)), epochs_done=done)
