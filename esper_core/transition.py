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

import attrs

from esper_core import stages as st
from esper_core._checks import INT32_MAX
from esper_core.alpha import ALPHA_TOLERANCE, AlphaController
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
from esper_core.gates import EDGE_GATES, GateEvidence, GateResult
from esper_core.slot_state import HISTORY_BOUND, PendingPrune, Provenance, SeedState, SlotConfig, SlotState
from esper_core.stages import SeedStage
from esper_core.telemetry import (
    AlphaTargetSet,
    GateEvaluated,
    PruneScheduled,
    SeedEvent,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    SeedWarning,
    StageChanged,
)

__all__ = ["ActivityEvidence", "Evidence", "Outcome", "Probe", "evaluate", "precheck", "transition"]

_S = SeedStage
_PRUNABLE = frozenset({_S.GERMINATED, _S.TRAINING, _S.BLENDING, _S.HOLDING})
_RETARGETABLE = frozenset({_S.BLENDING, _S.HOLDING})
Decide = Callable[[GateResult], bool]


@attrs.frozen(kw_only=True)
class Probe:
    """G0's evidence: the candidate seed run once on a random input of the slot's layout."""

    shape_preserved: bool
    dtype_preserved: bool
    input_preserved: bool = True
    """False when the seed wrote into its input tensor (it would change the host's tensor)."""


@attrs.frozen(kw_only=True)
class ActivityEvidence:
    """One activity-meter reading (relative parameter change) and what it found non-finite."""

    value: float | None = None
    nonfinite_parameters: bool = False
    nonfinite_gradients: bool = False
    nonfinite_output: bool = False


@attrs.frozen(kw_only=True)
class Evidence:
    """What only the slot can measure, gathered before the call (defaults: nothing measured)."""

    trainable_params: bool = False
    """Some seed parameter requires grad."""
    param_count: int = 0
    """Seed plus blend-gate parameters (for germinate: of the candidate modules)."""
    probe: Probe | None = None
    activity: ActivityEvidence | None = None
    provenance: Provenance | None = None


NO_EVIDENCE = Evidence()


@attrs.frozen
class Outcome:
    """A transition's result: the new state, its events (to emit after commit), a gate result."""

    state: SlotState
    events: tuple[SeedEvent, ...] = ()
    result: GateResult | None = None


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
            f"not a lifecycle command: {command!r}; accepted: {sorted(c.__name__ for c in _HANDLERS)}"
        )
    return handler(state, config, command, evidence, decide or _agree)


def precheck(state: SlotState, config: SlotConfig, command: object) -> None:
    """Raise now if ``command`` cannot apply to ``state`` whatever the evidence (before any module is built)."""
    if isinstance(command, Germinate) and state.stage is not _S.DORMANT:
        raise LifecycleError(
            f"slot {config.slot_id!r} is unavailable for germination: stage is {state.stage.name}, "
            "germination needs DORMANT (a pruned slot becomes DORMANT after its cooldown)"
        )
    if isinstance(command, Advance):
        _advance_edge(state, config, command.target)


def evaluate(
    state: SlotState, config: SlotConfig, target: SeedStage | None, evidence: Evidence
) -> GateResult:
    """The gate result of the edge to ``target`` (default: the next stage), committing nothing."""
    edge = _advance_edge(state, config, target)
    return config.gates.evaluate(edge, _gate_evidence(state, evidence))


# ---- helpers ------------------------------------------------------------------------------------


def _seed(state: SlotState) -> SeedState:
    assert state.seed is not None  # invariant: every non-DORMANT state has a seed state
    return state.seed


def _judge(
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


def _gate_evidence(state: SlotState, evidence: Evidence) -> GateEvidence:
    seed = _seed(state)
    m, a = seed.metrics, seed.alpha
    return GateEvidence(
        stage=state.stage,
        seed_id=seed.seed_id,
        blueprint=seed.blueprint,
        epochs_in_stage=m.epochs_in_stage,
        improvement=m.improvement_since_stage_start,
        activity=seed.activity.ema,
        trainable=evidence.trainable_params and seed.output_requires_grad is not False,
        alpha=a.alpha,
        alpha_target=a.target,
        alpha_mode=a.mode,
        counterfactual=m.counterfactual,
        nonfinite=seed.health_issues,
    )


def _changed(
    config: SlotConfig, state: SlotState, new: SeedStage, epochs: int, alpha: float | None = None
) -> StageChanged:
    """The event for leaving ``state`` for ``new`` (alpha: the leaving one unless given)."""
    seed = _seed(state)
    return StageChanged(
        slot_id=config.slot_id,
        seed_id=seed.seed_id,
        from_stage=state.stage,
        to_stage=new,
        blending_progress=seed.alpha.alpha if alpha is None else alpha,
        epochs_in_stage=epochs,
    )


def _enter(state: SlotState, stage: SeedStage, seed: SeedState) -> SlotState:
    """``state`` moved into ``stage`` with ``seed`` (history appended, clock reset)."""
    history = (*seed.history, stage)[-HISTORY_BOUND:]
    return SlotState(
        stage=stage,
        previous_stage=state.stage,
        ticks_in_stage=0,
        germinations=state.germinations,
        seed=attrs.evolve(seed, history=history),
    )


def _warn(
    config: SlotConfig, seed: SeedState, code: str, message: str
) -> tuple[SeedState, tuple[SeedEvent, ...]]:
    """Record a one-time warning: an event the first time ``code`` is seen for this seed."""
    if code in seed.warned:
        return seed, ()
    event = SeedWarning(slot_id=config.slot_id, seed_id=seed.seed_id, code=code, message=message)
    return attrs.evolve(seed, warned=tuple(sorted({*seed.warned, code}))), (event,)


def _require_live(state: SlotState, config: SlotConfig, what: str) -> SeedState:
    if state.stage not in st.LIVE:
        raise LifecycleError(
            f"slot {config.slot_id!r}: {what} needs a live seed (GERMINATED..FOSSILIZED); stage is {state.stage.name}"
        )
    return _seed(state)


# ---- germination and gated edges ----------------------------------------------------------------------


def _germinate(state: SlotState, config: SlotConfig, cmd: Germinate, ev: Evidence, decide: Decide) -> Outcome:
    precheck(state, config, cmd)
    if ev.probe is None:
        raise LifecycleError("germinate needs the probe of the candidate seed as evidence (Evidence.probe)")
    sid = (
        cmd.seed_id
        if cmd.seed_id is not None
        else f"{config.slot_id}-{cmd.blueprint}-{state.germinations + 1}"
    )
    probe = ev.probe
    evidence = GateEvidence(
        stage=_S.DORMANT,
        seed_id=sid,
        blueprint=cmd.blueprint,
        shape_preserved=probe.shape_preserved,
        dtype_preserved=probe.dtype_preserved,
        input_preserved=probe.input_preserved,
    )
    result = _judge(config, (_S.DORMANT, _S.GERMINATED), evidence, decide)
    verdict = GateEvaluated.from_result(config.slot_id, sid, result)
    if not result.passed:
        return Outcome(state, (verdict,), result)
    seed = SeedState(
        seed_id=sid,
        blueprint=cmd.blueprint,
        options=cmd.options,
        provenance=ev.provenance,
        algorithm=cmd.algorithm,
        tempo=cmd.tempo,
        curve=cmd.curve,
        germination_target=cmd.alpha_target,
        alpha=AlphaController(curve=cmd.curve),
        history=(_S.GERMINATED,),
    )
    new = SlotState(
        stage=_S.GERMINATED,
        previous_stage=state.stage,
        germinations=min(state.germinations + 1, INT32_MAX),
        seed=seed,
    )
    germinated = SeedGerminated(
        slot_id=config.slot_id,
        seed_id=sid,
        blueprint=cmd.blueprint,
        topology=config.topology,
        dim=config.dim,
        options=cmd.options,
        algorithm=cmd.algorithm,
        curve=cmd.curve,
        tempo=cmd.tempo,
        alpha_target=cmd.alpha_target,
        param_count=ev.param_count,
    )
    return Outcome(new, (verdict, germinated), result)


def _advance_edge(
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


def _advance(state: SlotState, config: SlotConfig, cmd: Advance, ev: Evidence, decide: Decide) -> Outcome:
    edge = _advance_edge(state, config, cmd.target)
    result = _judge(config, edge, _gate_evidence(state, ev), decide)
    verdict = GateEvaluated.from_result(config.slot_id, _seed(state).seed_id, result)
    if not result.passed:
        return Outcome(state, (verdict,), result)
    new, events = _gated_entry(state, config, edge[1], ev)
    return Outcome(new, (verdict, *events), result)


def _gated_entry(
    state: SlotState, config: SlotConfig, target: SeedStage, ev: Evidence
) -> tuple[SlotState, tuple[SeedEvent, ...]]:
    """Enter ``target`` through a passed gate, with the stage's entry effects."""
    seed = _seed(state)
    old = state.stage
    blending = old is _S.TRAINING and target is _S.BLENDING
    schedule = seed.alpha
    if blending:
        schedule = AlphaController(curve=seed.curve).retarget(seed.germination_target, seed.tempo)
    elif target is _S.HOLDING:
        schedule = AlphaController(alpha=1.0, start=1.0, target=1.0, curve=schedule.curve)
    entered = attrs.evolve(seed, metrics=seed.metrics.enter_stage(blending=blending), alpha=schedule)
    new = _enter(state, target, entered)
    events: list[SeedEvent] = [_changed(config, state, target, seed.metrics.epochs_in_stage, schedule.alpha)]
    if target is _S.TRAINING and not ev.trainable_params:
        warned, extra = _warn(
            config,
            _seed(new),
            "seed_not_trainable",
            f"seed {seed.seed_id!r} has no trainable parameters; it cannot learn and G2 will fail",
        )
        new, events = attrs.evolve(new, seed=warned), [*events, *extra]
    if target is _S.FOSSILIZED:
        m = seed.metrics
        events.append(
            SeedFossilized(
                slot_id=config.slot_id,
                seed_id=seed.seed_id,
                blueprint=seed.blueprint,
                param_count=ev.param_count,
                counterfactual=m.counterfactual,
                total_improvement=m.total_improvement,
                epochs_total=m.epochs_total,
            )
        )
    return new, tuple(events)


# ---- removal and alpha -------------------------------------------------------------------------------


def _prune(state: SlotState, config: SlotConfig, cmd: Prune, ev: Evidence, decide: Decide) -> Outcome:
    stage = state.stage
    if stage not in _PRUNABLE:
        why = "FOSSILIZED is terminal" if st.is_terminal(stage) else "there is no live seed"
        raise LifecycleError(
            f"cannot prune slot {config.slot_id!r} in stage {stage.name}: {why}; "
            f"prunable stages: {sorted(s.name for s in _PRUNABLE)}"
        )
    seed = _seed(state)
    m = seed.metrics
    changed = _changed(config, state, _S.PRUNED, m.epochs_in_stage)
    pruned = SeedPruned(
        slot_id=config.slot_id,
        seed_id=seed.seed_id,
        blueprint=seed.blueprint,
        from_stage=stage,
        reason=cmd.reason,
        initiator=cmd.initiator,
        counterfactual=m.counterfactual,
        total_improvement=m.total_improvement,
        epochs_total=m.epochs_total,
    )
    emptied = attrs.evolve(seed, alpha=AlphaController(curve=seed.alpha.curve), pending_prune=None)
    return Outcome(_enter(state, _S.PRUNED, emptied), (changed, pruned))


def _schedule_prune(
    state: SlotState, config: SlotConfig, cmd: SchedulePrune, ev: Evidence, decide: Decide
) -> Outcome:
    stage = state.stage
    now = Prune(reason=cmd.reason, initiator=cmd.initiator)
    if stage not in _PRUNABLE:
        return _prune(state, config, now, ev, decide)  # raises with the precise reason
    seed = _seed(state)
    a = seed.alpha
    if cmd.steps == 0 or stage not in _RETARGETABLE or a.alpha <= ALPHA_TOLERANCE:
        return _prune(state, config, now, ev, decide)
    if not a.at_rest:
        raise LifecycleError(
            f"cannot schedule a prune while the schedule is ramping {a.mode.name} "
            f"({a.remaining_steps} steps left); wait for it to reach its target"
        )
    schedule = a.retarget(0.0, cmd.steps, cmd.curve)
    events: list[SeedEvent] = []
    new = state
    if stage is _S.HOLDING:
        events.append(_changed(config, state, _S.BLENDING, seed.metrics.epochs_in_stage))
        new = _enter(state, _S.BLENDING, attrs.evolve(seed, metrics=seed.metrics.enter_stage()))
    pending = PendingPrune(reason=cmd.reason, initiator=cmd.initiator)
    new = attrs.evolve(new, seed=attrs.evolve(_seed(new), alpha=schedule, pending_prune=pending))
    events.append(
        PruneScheduled(
            slot_id=config.slot_id,
            seed_id=seed.seed_id,
            steps=cmd.steps,
            curve=cmd.curve,
            reason=cmd.reason,
            initiator=cmd.initiator,
        )
    )
    return Outcome(new, tuple(events))


def _set_alpha_target(
    state: SlotState, config: SlotConfig, cmd: SetAlphaTarget, ev: Evidence, decide: Decide
) -> Outcome:
    stage = state.stage
    if stage not in _RETARGETABLE:
        raise LifecycleError(
            f"set_alpha_target needs BLENDING or HOLDING; slot {config.slot_id!r} is {stage.name}"
        )
    seed = _seed(state)
    schedule = seed.alpha.retarget(cmd.target, cmd.steps, cmd.curve)  # raises unless at rest
    algorithm = seed.algorithm if cmd.algorithm is None else cmd.algorithm
    switched = algorithm is not seed.algorithm and "gate" in (algorithm.value, seed.algorithm.value)
    events: list[SeedEvent] = []
    new = state
    if stage is _S.HOLDING and cmd.target < 1.0 - ALPHA_TOLERANCE:
        events.append(_changed(config, state, _S.BLENDING, seed.metrics.epochs_in_stage))
        new = _enter(state, _S.BLENDING, attrs.evolve(seed, metrics=seed.metrics.enter_stage()))
    new = attrs.evolve(new, seed=attrs.evolve(_seed(new), alpha=schedule, algorithm=algorithm))
    events.append(
        AlphaTargetSet(
            slot_id=config.slot_id,
            seed_id=seed.seed_id,
            target=cmd.target,
            steps=cmd.steps,
            curve=cmd.curve,
            algorithm=algorithm,
            previous_algorithm=seed.algorithm,
            parameters_changed=switched,
        )
    )
    return Outcome(new, tuple(events))


# ---- the clock ----------------------------------------------------------------------------------------


def _step_epoch(
    state: SlotState, config: SlotConfig, cmd: StepEpoch, ev: Evidence, decide: Decide
) -> Outcome:
    stage = state.stage
    ticked = attrs.evolve(state, ticks_in_stage=min(state.ticks_in_stage + 1, INT32_MAX))
    if stage is _S.BLENDING:
        seed = _seed(ticked)
        schedule = seed.alpha.step()
        if schedule.at_rest and schedule.target <= ALPHA_TOLERANCE:  # a finished blend-out: prune
            pending = seed.pending_prune or PendingPrune(reason="scheduled_prune", initiator="policy")
            ended = attrs.evolve(ticked, seed=attrs.evolve(seed, alpha=schedule, pending_prune=None))
            return _prune(
                ended, config, Prune(reason=pending.reason, initiator=pending.initiator), ev, decide
            )
        ticked = attrs.evolve(ticked, seed=attrs.evolve(seed, alpha=schedule))
    elif stage is _S.PRUNED:
        return _cool(ticked, config, _S.EMBARGOED)
    elif stage is _S.EMBARGOED:
        if ticked.ticks_in_stage >= config.embargo_ticks:
            return _cool(ticked, config, _S.RESETTING)
        return Outcome(ticked)
    elif stage is _S.RESETTING:
        return _cool(ticked, config, _S.DORMANT)
    return _auto_advance(ticked, config, ev, decide)


def _cool(state: SlotState, config: SlotConfig, target: SeedStage) -> Outcome:
    event = _changed(config, state, target, state.ticks_in_stage)
    if target is _S.DORMANT:
        return Outcome(SlotState(previous_stage=state.stage, germinations=state.germinations), (event,))
    return Outcome(_enter(state, target, _seed(state)), (event,))


def _auto_advance(state: SlotState, config: SlotConfig, ev: Evidence, decide: Decide) -> Outcome:
    stage = state.stage
    successor = st.default_successor(stage)
    gate = None if successor is None else EDGE_GATES.get((stage, successor))
    if gate is None or gate not in config.auto_advance or stage not in st.LIVE:
        return Outcome(state)
    if stage is _S.BLENDING and not _seed(state).alpha.at_rest:
        return Outcome(state)  # G3 cannot pass mid-ramp; skip the noise
    return _advance(state, config, Advance(target=successor), ev, decide)


# ---- measurements -----------------------------------------------------------------------------------


def _record_accuracy(
    state: SlotState, config: SlotConfig, cmd: RecordAccuracy, ev: Evidence, decide: Decide
) -> Outcome:
    seed = _require_live(state, config, "record_accuracy")
    seed = attrs.evolve(seed, metrics=seed.metrics.record_accuracy(cmd.accuracy))
    events: tuple[SeedEvent, ...] = ()
    best = seed.metrics.best_accuracy
    if best is not None and 0.0 < best <= 1.0:
        seed, events = _warn(
            config,
            seed,
            "accuracy_looks_like_a_fraction",
            f"seed {seed.seed_id!r}: every accuracy recorded so far is at most 1.0 ({cmd.accuracy!r}); "
            "record_accuracy takes percentage points (0-100), e.g. 93.1 for 93.1 %, and the gates' "
            "thresholds are in percentage points too",
        )
    if state.stage in st.RUNS_SEED:
        seed, more = _capture(config, seed, ev.activity)
        events = (*events, *more)
    return Outcome(attrs.evolve(state, seed=seed), events)


def _capture_activity(
    state: SlotState, config: SlotConfig, cmd: CaptureActivity, ev: Evidence, decide: Decide
) -> Outcome:
    seed = _require_live(state, config, "capture_activity")
    seed, events = _capture(config, seed, ev.activity)
    return Outcome(attrs.evolve(state, seed=seed), events)


def _capture(
    config: SlotConfig, seed: SeedState, reading: ActivityEvidence | None
) -> tuple[SeedState, tuple[SeedEvent, ...]]:
    """Fold an activity reading in; any non-finite finding marks the seed unhealthy for good."""
    if reading is None:
        return seed, ()
    found = {
        "nonfinite_parameters": reading.nonfinite_parameters,
        "nonfinite_gradients": reading.nonfinite_gradients,
        "nonfinite_output": reading.nonfinite_output,
    }
    issues = list(seed.health_issues) + [
        i for i, present in found.items() if present and i not in seed.health_issues
    ]
    activity = (
        seed.activity if reading.value is None else seed.activity.update(reading.value, config.activity_decay)
    )
    seed = attrs.evolve(seed, activity=activity)
    if tuple(issues) == seed.health_issues:
        return seed, ()
    seed = attrs.evolve(seed, health_issues=tuple(issues))
    return _warn(config, seed, "unhealthy", f"seed {seed.seed_id!r} is unhealthy: {', '.join(issues)}")


def _record_counterfactual(
    state: SlotState, config: SlotConfig, cmd: RecordCounterfactual, ev: Evidence, decide: Decide
) -> Outcome:
    seed = _require_live(state, config, "record_counterfactual")
    return Outcome(
        attrs.evolve(
            state, seed=attrs.evolve(seed, metrics=seed.metrics.record_counterfactual(cmd.contribution))
        )
    )


def _observe_output(
    state: SlotState, config: SlotConfig, cmd: ObserveOutput, ev: Evidence, decide: Decide
) -> Outcome:
    seed = attrs.evolve(
        _require_live(state, config, "observe_output"), output_requires_grad=cmd.requires_grad
    )
    events: tuple[SeedEvent, ...] = ()
    if not cmd.requires_grad:
        seed, events = _warn(
            config,
            seed,
            "seed_output_not_trainable",
            f"seed {seed.seed_id!r} produced an output that does not require grad while grad mode is on; "
            "it cannot learn and G2 will fail",
        )
    return Outcome(attrs.evolve(state, seed=seed), events)


_HANDLERS: dict[type, Callable[..., Outcome]] = {
    Germinate: _germinate,
    Advance: _advance,
    Prune: _prune,
    SchedulePrune: _schedule_prune,
    SetAlphaTarget: _set_alpha_target,
    StepEpoch: _step_epoch,
    RecordAccuracy: _record_accuracy,
    RecordCounterfactual: _record_counterfactual,
    CaptureActivity: _capture_activity,
    ObserveOutput: _observe_output,
}
