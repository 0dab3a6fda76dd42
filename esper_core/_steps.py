"""The building blocks every lifecycle transition is made of (pure functions over state values)."""

from __future__ import annotations

import attrs

from esper_core import stages as st
from esper_core.errors import LifecycleError
from esper_core.evidence import Decide, Evidence
from esper_core.gates import GateEvidence, GateResult
from esper_core.slot_state import HISTORY_BOUND, SeedState, SlotConfig, SlotState
from esper_core.stages import SeedStage
from esper_core.telemetry import (
    SeedEvent,
    SeedWarning,
    StageChanged,
)

_S = SeedStage


def seed_of(state: SlotState) -> SeedState:
    assert state.seed is not None  # invariant: every non-DORMANT state has a seed state
    return state.seed


def judge(
    config: SlotConfig, edge: tuple[SeedStage, SeedStage], ev: GateEvidence, decide: Decide
) -> GateResult:
    result = config.gates.evaluate(edge, ev)
    verdict = decide(result)
    if not isinstance(verdict, bool):
        raise LifecycleError(f"a decider must return a bool, got {verdict!r}")
    if verdict == result.passed:
        return result
    return attrs.evolve(
        result, passed=verdict, message=f"{result.message} (decider: {verdict}, local: {result.passed})"
    )


def gate_evidence(state: SlotState, evidence: Evidence) -> GateEvidence:
    seed = seed_of(state)
    m, a = seed.metrics, seed.schedule
    return GateEvidence(
        stage=state.stage,
        seed_id=seed.seed_id,
        blueprint=seed.blueprint,
        evaluations_in_stage=m.evaluations_in_stage,
        improvement=m.improvement_since_stage_start,
        activity=seed.activity.ema,
        trainable=evidence.trainable_params and seed.output_requires_grad is not False,
        alpha=a.alpha,
        alpha_target=a.target,
        alpha_mode=a.mode,
        counterfactual=m.counterfactual,
        nonfinite=seed.health_issues,
    )


def stage_changed(
    config: SlotConfig, state: SlotState, new: SeedStage, alpha: float | None = None
) -> StageChanged:
    """The event for leaving ``state`` for ``new`` (alpha: the leaving one unless given)."""
    seed = seed_of(state)
    return StageChanged(
        slot_id=config.slot_id,
        seed_id=seed.seed_id,
        from_stage=state.stage,
        to_stage=new,
        alpha=seed.schedule.alpha if alpha is None else alpha,
        epochs_in_stage=state.epochs_in_stage,
    )


def enter(state: SlotState, stage: SeedStage, seed: SeedState) -> SlotState:
    """``state`` moved into ``stage`` with ``seed`` (history appended, clock reset)."""
    history = (*seed.history, stage)[-HISTORY_BOUND:]
    return SlotState(
        stage=stage,
        previous_stage=state.stage,
        epochs_in_stage=0,
        germinations=state.germinations,
        seed=attrs.evolve(seed, history=history),
    )


def warn_once(
    config: SlotConfig, seed: SeedState, code: str, message: str
) -> tuple[SeedState, tuple[SeedEvent, ...]]:
    """Record a one-time warning: an event the first time ``code`` is seen for this seed."""
    if code in seed.warned:
        return seed, ()
    event = SeedWarning(slot_id=config.slot_id, seed_id=seed.seed_id, code=code, message=message)
    return attrs.evolve(seed, warned=tuple(sorted({*seed.warned, code}))), (event,)


def require_live(state: SlotState, config: SlotConfig, what: str) -> SeedState:
    if state.stage not in st.LIVE:
        raise LifecycleError(
            f"slot {config.slot_id!r}: {what} needs a live seed (GERMINATED..FOSSILIZED); stage is {state.stage.name}"
        )
    return seed_of(state)


def advance_edge(
    state: SlotState, config: SlotConfig, target: SeedStage | None
) -> tuple[SeedStage, SeedStage]:
    stage = state.stage
    if stage is _S.DORMANT:
        raise LifecycleError(f"slot {config.slot_id!r} is empty (DORMANT); use germinate() to start a seed")
    if st.is_failure(stage):
        raise LifecycleError(
            f"slot {config.slot_id!r} is cooling down ({stage.name}); the cooldown advances through step_epoch()"
        )
    if st.is_terminal(stage):
        raise LifecycleError(f"slot {config.slot_id!r} is FOSSILIZED, which is terminal")
    chosen = st.default_successor(stage) if target is None else st.stage_from_value(target)
    assert chosen is not None  # every live non-terminal stage has one
    if st.is_failure(chosen):
        raise LifecycleError(f"advance() cannot target {chosen.name}; use prune() and the cooldown pipeline")
    if not st.is_legal_transition(stage, chosen):
        legal = [s.name for s in st.TRANSITIONS[stage]]
        raise LifecycleError(f"illegal transition {stage.name}->{chosen.name}; from {stage.name}: {legal}")
    return stage, chosen


def require_dormant(state: SlotState, config: SlotConfig) -> None:
    if state.stage is not _S.DORMANT:
        raise LifecycleError(
            f"slot {config.slot_id!r} is unavailable for germination: stage is {state.stage.name}, "
            "germination needs DORMANT (a pruned slot becomes DORMANT after its cooldown)"
        )
