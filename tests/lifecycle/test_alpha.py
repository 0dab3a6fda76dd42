"""AlphaSchedule: pure schedule, property-tested."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from esper_core.alpha import AlphaCurve, AlphaMode, AlphaSchedule, curve_progress
from esper_core.codec import from_data, to_data
from esper_core.errors import CheckpointError, LifecycleError

unit = hs.floats(min_value=0.0, max_value=1.0, allow_nan=False)
steps = hs.integers(min_value=1, max_value=12)
curves = hs.sampled_from(list(AlphaCurve))
steepness = hs.floats(min_value=0.1, max_value=60.0)


def ramp(start: float, target: float, n: int, curve: AlphaCurve, k: float) -> AlphaSchedule:
    return AlphaSchedule(alpha=start, start=start, target=start, curve=curve, steepness=k).retarget(target, n)


@settings(max_examples=60)
@given(unit, unit, steps, curves, steepness)
def test_never_overshoots_is_monotone_and_arrives_exactly(
    start: float, target: float, n: int, curve: AlphaCurve, k: float
) -> None:
    c = ramp(start, target, n, curve, k)
    low, high = min(start, target), max(start, target)
    values = [c.alpha]
    for _ in range(n):
        c = c.step()
        values.append(c.alpha)
        assert low <= c.alpha <= high
    assert c.alpha == target
    assert c.mode is AlphaMode.HOLD
    sign = 1 if target >= start else -1
    assert all(sign * (b - a) >= 0 for a, b in itertools.pairwise(values))
    assert c.step() == c  # at rest nothing changes


@settings(max_examples=40)
@given(unit, unit, steps, curves, steepness, hs.integers(min_value=0, max_value=12))
def test_round_trip_mid_ramp_continues_on_the_same_trajectory(
    start: float, target: float, n: int, curve: AlphaCurve, k: float, cut: int
) -> None:
    c = ramp(start, target, n, curve, k)
    for _ in range(min(cut, n)):
        c = c.step()
    resumed = from_data(AlphaSchedule, to_data(c))
    assert resumed == c
    for _ in range(n + 1):
        c, resumed = c.step(), resumed.step()
        assert resumed.alpha == c.alpha


@settings(max_examples=30)
@given(unit, unit, curves)
def test_zero_steps_jumps(start: float, target: float, curve: AlphaCurve) -> None:
    c = AlphaSchedule(alpha=start, start=start, target=start).retarget(target, 0, curve)
    assert (c.alpha, c.mode) == (target, AlphaMode.HOLD)


def test_retarget_only_from_hold() -> None:
    c = AlphaSchedule().retarget(1.0, 4).step()
    assert c.mode is AlphaMode.UP
    with pytest.raises(LifecycleError, match="only allowed from HOLD"):
        c.retarget(0.5, 2)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, True, "1"])
def test_bad_targets_raise(bad: object) -> None:
    with pytest.raises(LifecycleError):
        AlphaSchedule().retarget(bad, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_steps_raise(bad: object) -> None:
    with pytest.raises(LifecycleError):
        AlphaSchedule().retarget(1.0, bad)  # type: ignore[arg-type]


def test_curves_follow_their_formulas() -> None:
    for t in (0.0, 0.1, 0.25, 0.5, 0.8, 1.0):
        assert curve_progress(AlphaCurve.LINEAR, t) == t
        assert curve_progress(AlphaCurve.COSINE, t) == pytest.approx((1 - math.cos(math.pi * t)) / 2)
        k = 7.0
        sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
        expected = (sig(k * (t - 0.5)) - sig(-k / 2)) / (sig(k / 2) - sig(-k / 2))
        assert curve_progress(AlphaCurve.SIGMOID, t, k) == pytest.approx(expected, abs=1e-12)


def test_steep_sigmoid_does_not_overflow() -> None:
    assert curve_progress(AlphaCurve.SIGMOID, 0.0, 5000.0) == 0.0
    assert curve_progress(AlphaCurve.SIGMOID, 1.0, 5000.0) == 1.0


def test_steepness_is_validated_and_persisted() -> None:
    with pytest.raises(LifecycleError, match="steepness"):
        AlphaSchedule(steepness=0.01)
    c = AlphaSchedule(steepness=3.5, curve=AlphaCurve.SIGMOID).retarget(1.0, 4)
    assert from_data(AlphaSchedule, to_data(c)).steepness == 3.5


def test_last_tick_snaps_to_target() -> None:
    c = AlphaSchedule().retarget(0.7, 3, AlphaCurve.SIGMOID)
    c = c.step().step().step()
    assert c.alpha == 0.7 and c.epochs_done == 3


def test_from_dict_is_strict() -> None:
    good = to_data(AlphaSchedule().retarget(1.0, 3).step())
    for key in good:
        broken = dict(good)
        del broken[key]
        with pytest.raises(CheckpointError, match=key):
            from_data(AlphaSchedule, broken)
    with pytest.raises(CheckpointError, match="unexpected"):
        from_data(AlphaSchedule, {**good, "extra": 1})
    with pytest.raises(CheckpointError, match="mode"):
        from_data(AlphaSchedule, {**good, "mode": "sideways"})
    with pytest.raises(CheckpointError, match="curve"):
        from_data(AlphaSchedule, {**good, "curve": 2})
    with pytest.raises(CheckpointError):
        from_data(AlphaSchedule, {**good, "epochs_done": 9})
    with pytest.raises(CheckpointError):
        from_data(AlphaSchedule, [])
    assert all(type(v) in (int, float, str) for v in good.values())


def test_inconsistent_controllers_cannot_be_built() -> None:
    with pytest.raises(LifecycleError):
        AlphaSchedule(alpha=0.3, target=0.5, mode=AlphaMode.HOLD)
    with pytest.raises(LifecycleError):
        AlphaSchedule(alpha=0.3, start=0.3, target=0.1, mode=AlphaMode.UP, epochs_total=3)
