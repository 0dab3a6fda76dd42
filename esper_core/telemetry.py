"""Typed lifecycle events and their fault-tolerant delivery.

Every event is a frozen attrs value carrying ``slot_id`` and ``seed_id``. Events are
delivered to every ``esper_seed_event`` hook implementation (telemetry sinks are plugins),
one implementation at a time: a sink that raises (anything but ``KeyboardInterrupt``,
``SystemExit`` included) is reported once (a
:class:`TelemetrySinkWarning` naming the plugin and the error) and skipped, so it can
neither break the lifecycle nor starve the other sinks. Under ``ESPER_STRICT_PLUGINS=1``
the exception propagates instead, which is what a test suite for a sink wants.

Events are emitted after the lifecycle change they describe has been committed, so a
strict-mode failure never leaves a slot half-changed.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import attrs

from esper_core._checks import shown
from esper_core.alpha import AlphaCurve, BlendAlgorithm
from esper_core.errors import LifecycleError
from esper_core.gates import GateLevel, GateResult
from esper_core.stages import SeedStage

__all__ = [
    "AlphaTargetSet",
    "GateEvaluated",
    "PruneScheduled",
    "SeedEvent",
    "SeedFossilized",
    "SeedGerminated",
    "SeedPruned",
    "SeedWarning",
    "SlotRestored",
    "StageChanged",
    "TelemetrySinkWarning",
    "emit",
    "reset_reported_failures",
]


class TelemetrySinkWarning(RuntimeWarning):
    """A telemetry sink raised; it is skipped (reported once per sink)."""


@attrs.frozen(kw_only=True)
class SeedEvent:
    """Base of every lifecycle event."""

    slot_id: str
    seed_id: str | None


@attrs.frozen(kw_only=True)
class SeedGerminated(SeedEvent):
    """A seed was built in a DORMANT slot (G0 passed); ``param_count`` counts seed and blend gate."""

    blueprint: str
    topology: str
    dim: int
    options: tuple[tuple[str, Any], ...]
    algorithm: BlendAlgorithm
    curve: AlphaCurve
    ramp_epochs: int
    alpha_target: float
    param_count: int


@attrs.frozen(kw_only=True)
class GateEvaluated(SeedEvent):
    """A quality gate judged an edge (every gate evaluation, passed or not, emits one)."""

    gate: GateLevel
    from_stage: SeedStage
    to_stage: SeedStage
    passed: bool
    score: float
    checks_passed: tuple[str, ...]
    checks_failed: tuple[str, ...]
    message: str
    policy: str

    @classmethod
    def from_result(cls, slot_id: str, seed_id: str | None, result: GateResult) -> GateEvaluated:
        """The event of ``result`` for ``slot_id`` / ``seed_id``."""
        return cls(
            slot_id=slot_id,
            seed_id=seed_id,
            gate=result.gate,
            from_stage=result.edge[0],
            to_stage=result.edge[1],
            passed=result.passed,
            score=result.score,
            checks_passed=result.checks_passed,
            checks_failed=result.checks_failed,
            message=result.message,
            policy=result.policy,
        )


@attrs.frozen(kw_only=True)
class StageChanged(SeedEvent):
    """The slot moved from ``from_stage`` to ``to_stage`` (every change except germination)."""

    from_stage: SeedStage
    to_stage: SeedStage
    alpha: float
    epochs_in_stage: int
    """Epochs (``step_epoch`` calls) spent in the stage being left."""


@attrs.frozen(kw_only=True)
class AlphaTargetSet(SeedEvent):
    """Alpha was retargeted (``set_alpha_target``), possibly switching the blend algorithm."""

    target: float
    epochs: int
    curve: AlphaCurve
    algorithm: BlendAlgorithm
    previous_algorithm: BlendAlgorithm
    parameters_changed: bool
    """True when the switch of algorithm added or removed the gate module's parameters."""


@attrs.frozen(kw_only=True)
class PruneScheduled(SeedEvent):
    """Alpha ramps down to 0 over ``epochs`` epochs, then the seed is pruned."""

    epochs: int
    curve: AlphaCurve
    reason: str
    initiator: str


@attrs.frozen(kw_only=True)
class SeedFossilized(SeedEvent):
    """The seed was kept for good (G5 passed)."""

    blueprint: str
    param_count: int
    counterfactual: float | None
    total_improvement: float | None
    evaluations_total: int


@attrs.frozen(kw_only=True)
class SeedPruned(SeedEvent):
    """The seed was removed; the slot starts its cooldown."""

    blueprint: str
    from_stage: SeedStage
    reason: str
    initiator: str
    counterfactual: float | None
    total_improvement: float | None
    evaluations_total: int


@attrs.frozen(kw_only=True)
class SeedWarning(SeedEvent):
    """Something the operator should know; emitted once per seed and code."""

    code: str
    message: str


@attrs.frozen(kw_only=True)
class SlotRestored(SeedEvent):
    """A checkpoint changed the slot's lifecycle state (and, when live, rebuilt its modules)."""

    stage: SeedStage


_reported: set[str] = set()
_reported_lock = threading.Lock()


def reset_reported_failures() -> None:
    """Forget which sinks were reported, so the next failure of each is reported again."""
    with _reported_lock:
        _reported.clear()


def _report(plugin: str, exc: BaseException) -> None:
    with _reported_lock:
        if plugin in _reported:
            return
        _reported.add(plugin)
    warnings.warn(
        f"esper: telemetry sink {plugin!r} raised {type(exc).__name__}: {exc}; it is skipped "
        "(reported once; set ESPER_STRICT_PLUGINS=1 to make this an error)",
        TelemetrySinkWarning,
        stacklevel=3,
    )


def emit(event: SeedEvent) -> None:
    """Deliver ``event`` to every ``esper_seed_event`` implementation, isolating failures."""
    from esper_core.plugins import is_strict
    from esper_core.registry import get_plugin_manager

    caller = get_plugin_manager().hook.esper_seed_event
    impls = caller.get_hookimpls()
    if not impls:
        return
    strict = is_strict()
    if any(getattr(i, "hookwrapper", False) or getattr(i, "wrapper", False) for i in impls):
        # Wrappers need pluggy's own call machinery; isolate the call as a whole.
        try:
            caller(event=event)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a sink must never end the host
            if strict:
                raise
            _report("esper_seed_event wrappers", exc)
        return
    for impl in reversed(impls):  # pluggy's own order: last registered first
        try:
            impl.function(**{name: event for name in impl.argnames})
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a sink must never end the host
            if strict:
                raise
            _report(impl.plugin_name, exc)


class Observers:
    """The observers of one slot: ``fn(event)`` for each of its events, synchronously, after the
    change is committed; then the ``esper_seed_event`` hook (:func:`emit`).

    An observer belongs to whoever registered it (an optimizer binding, a distributed
    lifecycle): a copy or a pickle of the slot starts with none.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._fns: list[Callable[[SeedEvent], None]] = []

    def add(self, fn: Callable[[SeedEvent], None]) -> None:
        """Call ``fn(event)`` for every event; :class:`LifecycleError` when ``fn`` is not callable."""
        if not callable(fn):
            raise LifecycleError(f"an observer must be callable, got {shown(fn)}")
        self._fns.append(fn)

    def remove(self, fn: Callable[[SeedEvent], None]) -> None:
        """Stop calling ``fn``; :class:`LifecycleError` when it was not registered."""
        try:
            self._fns.remove(fn)
        except ValueError:
            raise LifecycleError(f"observer {shown(fn)} is not registered on slot {self.owner!r}") from None

    def emit(self, event: SeedEvent) -> None:
        """Every observer, in registration order, then the hook."""
        for fn in list(self._fns):
            fn(event)
        emit(event)

    def __getstate__(self) -> str:
        return self.owner

    def __setstate__(self, owner: str) -> None:
        self.__init__(owner)  # type: ignore[misc]
