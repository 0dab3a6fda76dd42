"""The lifecycle as one pure function: (state, config, command, evidence, decide) -> outcome.

:func:`transition` applies one :mod:`command <esper_core.commands>` to a
:class:`~esper_core.slot_state.SlotState` and returns the new state, the events that describe
the change and, when a quality gate was asked, its result; or it raises the library's error
and nothing has changed. It imports no torch and touches no module: what only the slot can
measure (the probe of a candidate seed, whether the seed can learn, its parameter count,
the activity meter's reading) is gathered by the slot beforehand and passed in as
:class:`Evidence`. ``decide`` turns a gate result into the verdict that is committed (the
slot's ``decider``: under ``torch.distributed`` rank 0's verdict).

The rules are the design's: a gate is looked up by edge and an edge without a gate is an
error; a failed gate changes nothing; events are returned, never sent, so the caller emits
them only after it has committed the new state.
"""

from __future__ import annotations

from collections.abc import Callable

from esper_core import _edges, _measure
from esper_core._checks import shown
from esper_core._steps import advance_edge, gate_evidence, require_dormant
from esper_core.commands import (
    Advance,
    CaptureActivity,
    Germinate,
    ObserveOutput,
    Prune,
    RecordAccuracy,
    RecordCounterfactual,
    SchedulePrune,
    SetAlphaTarget,
    StepEpoch,
)
from esper_core.errors import LifecycleError
from esper_core.evidence import NO_EVIDENCE, Decide, Evidence, Outcome
from esper_core.gates import GateResult
from esper_core.slot_state import SlotConfig, SlotState
from esper_core.stages import SeedStage

__all__ = ["evaluate", "precheck", "transition"]

_S = SeedStage


def _agree(result: GateResult) -> bool:
    return result.passed


def transition(
    state: SlotState,
    config: SlotConfig,
    command: object,
    evidence: Evidence = NO_EVIDENCE,
    decide: Decide | None = None,
) -> Outcome:
    """Apply ``command`` to ``state``; raise :class:`~esper_core.errors.LifecycleError` if not allowed."""
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise LifecycleError(
            f"not a lifecycle command: {shown(command)}; accepted: {sorted(c.__name__ for c in _HANDLERS)}"
        )
    return handler(state, config, command, evidence, decide or _agree)


def precheck(state: SlotState, config: SlotConfig, command: object) -> None:
    """Raise now if ``command`` cannot apply to ``state`` whatever the evidence (before any module is built)."""
    if isinstance(command, Germinate):
        require_dormant(state, config)
    if isinstance(command, Advance):
        advance_edge(state, config, command.target)


def evaluate(
    state: SlotState, config: SlotConfig, target: SeedStage | None, evidence: Evidence
) -> GateResult:
    """The gate result of the edge to ``target`` (default: the next stage), committing nothing."""
    edge = advance_edge(state, config, target)
    return config.gates.evaluate(edge, gate_evidence(state, evidence))


_HANDLERS: dict[type, Callable[..., Outcome]] = {
    Germinate: _edges.germinate,
    Advance: _edges.advance,
    Prune: _edges.prune,
    SchedulePrune: _edges.schedule_prune,
    SetAlphaTarget: _edges.set_alpha_target,
    StepEpoch: _edges.step_epoch,
    RecordAccuracy: _measure.record_accuracy,
    RecordCounterfactual: _measure.record_counterfactual,
    CaptureActivity: _measure.capture_activity,
    ObserveOutput: _measure.observe_output,
}
