"""Germination, the gated edges, removal, alpha retargeting and the clock, as pure functions.

Each handler takes ``(state, config, command, evidence, decide)`` and returns an
:class:`~esper_core.evidence.Outcome` or raises; :func:`esper_core.transition.transition`
dispatches to them.
"""

from __future__ import annotations

import attrs

from esper_core import stages as st
from esper_core._checks import INT32_MAX
from esper_core._steps import (
    advance_edge,
    enter,
    gate_evidence,
    judge,
    require_dormant,
    seed_of,
    stage_changed,
    warn_once,
)
from esper_core.alpha import ALPHA_TOLERANCE, AlphaSchedule
from esper_core.commands import (
    Advance,
    Germinate,
    Prune,
    SchedulePrune,
    SetAlphaTarget,
    StepEpoch,
)
from esper_core.errors import LifecycleError
from esper_core.evidence import Decide, Evidence, Outcome, Probe
from esper_core.gates import EDGE_GATES, GateEvidence
from esper_core.slot_state import PendingPrune, SeedState, SlotConfig, SlotState
from esper_core.stages import SeedStage
from esper_core.telemetry import (
    AlphaTargetSet,
    GateEvaluated,
    PruneScheduled,
    SeedEvent,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
)

_S = SeedStage
_PRUNABLE = frozenset({_S.GERMINATED, _S.TRAINING, _S.BLENDING, _S.HOLDING})
_RETARGETABLE = frozenset({_S.BLENDING, _S.HOLDING})


def germinate(state: SlotState, config: SlotConfig, cmd: Germinate, ev: Evidence, decide: Decide) -> Outcome:
    require_dormant(state, config)
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
        nonfinite=probe.nonfinite,
    )
    result = judge(config, (_S.DORMANT, _S.GERMINATED), evidence, decide)
    verdict = GateEvaluated.from_result(config.slot_id, sid, result)
    if not result.passed:
        return Outcome(state, (verdict,), result)
    seed = SeedState(
        seed_id=sid,
        blueprint=cmd.blueprint,
        options=cmd.options,
        provenance=ev.provenance,
        algorithm=cmd.algorithm,
        ramp_epochs=cmd.ramp_epochs,
        curve=cmd.curve,
        germination_target=cmd.alpha_target,
        schedule=AlphaSchedule(curve=cmd.curve),
        history=(_S.GERMINATED,),
    )
    seed, warnings = _birth_warning(config, seed, probe)
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
        ramp_epochs=cmd.ramp_epochs,
        alpha_target=cmd.alpha_target,
        param_count=ev.param_count,
    )
    return Outcome(new, (verdict, germinated, *warnings), result)


def _birth_warning(
    config: SlotConfig, seed: SeedState, probe: Probe
) -> tuple[SeedState, tuple[SeedEvent, ...]]:
    """A warning when the probe found the seed not the identity at birth.

    Not a G0 failure: the alpha schedule starts every seed at alpha 0, so the host's output
    is unchanged at germination either way. But the seed then changes the model as soon as
    alpha grows, by what it computes before any training, which the growth literature's
    function-preserving insertion (and this library's blueprint contract, checked by the
    conformance kit) rules out; the user should know.
    """
    if probe.identity_preserved:
        return seed, ()
    measured = (
        "its output is not finite"
        if probe.identity_error is None
        else (f"max|output - input| = {probe.identity_error:.3g}")
    )
    return warn_once(
        config,
        seed,
        "not_identity_at_birth",
        f"blueprint {seed.blueprint!r} is not the identity at birth ({measured} on G0's probe, eval mode): "
        "it will change the model by what it computes untrained as soon as alpha grows; a blueprint should "
        "return its input exactly until it has trained (esper_core.testing checks this)",
    )


def advance(state: SlotState, config: SlotConfig, cmd: Advance, ev: Evidence, decide: Decide) -> Outcome:
    edge = advance_edge(state, config, cmd.target)
    result = judge(config, edge, gate_evidence(state, ev), decide)
    verdict = GateEvaluated.from_result(config.slot_id, seed_of(state).seed_id, result)
    if not result.passed:
        return Outcome(state, (verdict,), result)
    new, events = gated_entry(state, config, edge[1], ev)
    return Outcome(new, (verdict, *events), result)


def gated_entry(
    state: SlotState, config: SlotConfig, target: SeedStage, ev: Evidence
) -> tuple[SlotState, tuple[SeedEvent, ...]]:
    """Enter ``target`` through a passed gate, with the stage's entry effects."""
    seed = seed_of(state)
    old = state.stage
    blending = old is _S.TRAINING and target is _S.BLENDING
    schedule = seed.schedule
    if blending:
        schedule = AlphaSchedule(curve=seed.curve).retarget(seed.germination_target, seed.ramp_epochs)
    elif target is _S.HOLDING:
        schedule = AlphaSchedule(alpha=1.0, start=1.0, target=1.0, curve=schedule.curve)
    metrics = seed.metrics.enter_stage(blending=blending, holding=target is _S.HOLDING)
    entered = attrs.evolve(seed, metrics=metrics, schedule=schedule)
    new = enter(state, target, entered)
    events: list[SeedEvent] = [stage_changed(config, state, target, schedule.alpha)]
    if target is _S.TRAINING and not ev.trainable_params:
        warned, extra = warn_once(
            config,
            seed_of(new),
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
                evaluations_total=m.evaluations_total,
            )
        )
    return new, tuple(events)


# ---- removal and alpha -------------------------------------------------------------------------------


def prune(state: SlotState, config: SlotConfig, cmd: Prune, ev: Evidence, decide: Decide) -> Outcome:
    stage = state.stage
    if stage not in _PRUNABLE:
        why = "FOSSILIZED is terminal" if st.is_terminal(stage) else "there is no live seed"
        raise LifecycleError(
            f"cannot prune slot {config.slot_id!r} in stage {stage.name}: {why}; "
            f"prunable stages: {sorted(s.name for s in _PRUNABLE)}"
        )
    seed = seed_of(state)
    m = seed.metrics
    changed = stage_changed(config, state, _S.PRUNED)
    pruned = SeedPruned(
        slot_id=config.slot_id,
        seed_id=seed.seed_id,
        blueprint=seed.blueprint,
        from_stage=stage,
        reason=cmd.reason,
        initiator=cmd.initiator,
        counterfactual=m.counterfactual,
        total_improvement=m.total_improvement,
        evaluations_total=m.evaluations_total,
    )
    emptied = attrs.evolve(seed, schedule=AlphaSchedule(curve=seed.schedule.curve), pending_prune=None)
    return Outcome(enter(state, _S.PRUNED, emptied), (changed, pruned))


def schedule_prune(
    state: SlotState, config: SlotConfig, cmd: SchedulePrune, ev: Evidence, decide: Decide
) -> Outcome:
    stage = state.stage
    now = Prune(reason=cmd.reason, initiator=cmd.initiator)
    if stage not in _PRUNABLE:
        return prune(state, config, now, ev, decide)  # raises with the precise reason
    seed = seed_of(state)
    a = seed.schedule
    if cmd.epochs == 0 or stage not in _RETARGETABLE or a.alpha <= ALPHA_TOLERANCE:
        return prune(state, config, now, ev, decide)
    if not a.at_rest:
        raise LifecycleError(
            f"cannot schedule a prune while the schedule is ramping {a.mode.name} "
            f"({a.remaining_epochs} epochs left); wait for it to reach its target"
        )
    schedule = a.retarget(0.0, cmd.epochs, cmd.curve)
    new, events = back_to_blending(state, config) if stage is _S.HOLDING else (state, [])
    pending = PendingPrune(reason=cmd.reason, initiator=cmd.initiator)
    new = attrs.evolve(new, seed=attrs.evolve(seed_of(new), schedule=schedule, pending_prune=pending))
    events.append(
        PruneScheduled(
            slot_id=config.slot_id,
            seed_id=seed.seed_id,
            epochs=cmd.epochs,
            curve=cmd.curve,
            reason=cmd.reason,
            initiator=cmd.initiator,
        )
    )
    return Outcome(new, tuple(events))


def back_to_blending(state: SlotState, config: SlotConfig) -> tuple[SlotState, list[SeedEvent]]:
    """HOLDING -> BLENDING (an explicit retarget below 1 or a scheduled prune; no gate)."""
    seed = seed_of(state)
    event = stage_changed(config, state, _S.BLENDING)
    return enter(state, _S.BLENDING, attrs.evolve(seed, metrics=seed.metrics.enter_stage())), [event]


def set_alpha_target(
    state: SlotState, config: SlotConfig, cmd: SetAlphaTarget, ev: Evidence, decide: Decide
) -> Outcome:
    stage = state.stage
    if stage not in _RETARGETABLE:
        raise LifecycleError(
            f"set_alpha_target needs BLENDING or HOLDING; slot {config.slot_id!r} is {stage.name}"
        )
    seed = seed_of(state)
    schedule = seed.schedule.retarget(cmd.target, cmd.epochs, cmd.curve)  # raises unless at rest
    algorithm = seed.algorithm if cmd.algorithm is None else cmd.algorithm
    switched = algorithm is not seed.algorithm and "gate" in (algorithm.value, seed.algorithm.value)
    leaves_holding = stage is _S.HOLDING and cmd.target < 1.0 - ALPHA_TOLERANCE
    new, events = back_to_blending(state, config) if leaves_holding else (state, [])
    new = attrs.evolve(new, seed=attrs.evolve(seed_of(new), schedule=schedule, algorithm=algorithm))
    events.append(
        AlphaTargetSet(
            slot_id=config.slot_id,
            seed_id=seed.seed_id,
            target=cmd.target,
            epochs=cmd.epochs,
            curve=cmd.curve,
            algorithm=algorithm,
            previous_algorithm=seed.algorithm,
            parameters_changed=switched,
        )
    )
    return Outcome(new, tuple(events))


# ---- the clock ----------------------------------------------------------------------------------------


def step_epoch(state: SlotState, config: SlotConfig, cmd: StepEpoch, ev: Evidence, decide: Decide) -> Outcome:
    stage = state.stage
    ticked = attrs.evolve(state, epochs_in_stage=min(state.epochs_in_stage + 1, INT32_MAX))
    if stage is _S.BLENDING:
        seed = seed_of(ticked)
        schedule = seed.schedule.step()
        if schedule.at_rest and schedule.target <= ALPHA_TOLERANCE:  # a finished blend-out: prune
            pending = seed.pending_prune or PendingPrune(reason="scheduled_prune", initiator="policy")
            ended = attrs.evolve(ticked, seed=attrs.evolve(seed, schedule=schedule, pending_prune=None))
            return prune(ended, config, Prune(reason=pending.reason, initiator=pending.initiator), ev, decide)
        ticked = attrs.evolve(ticked, seed=attrs.evolve(seed, schedule=schedule))
    elif stage is _S.PRUNED:
        return cool(ticked, config, _S.EMBARGOED)
    elif stage is _S.EMBARGOED:
        if ticked.epochs_in_stage >= config.embargo_epochs:
            return cool(ticked, config, _S.RESETTING)
        return Outcome(ticked)
    elif stage is _S.RESETTING:
        return cool(ticked, config, _S.DORMANT)
    return auto_advance(ticked, config, ev, decide)


def cool(state: SlotState, config: SlotConfig, target: SeedStage) -> Outcome:
    event = stage_changed(config, state, target)
    if target is _S.DORMANT:
        return Outcome(SlotState(previous_stage=state.stage, germinations=state.germinations), (event,))
    return Outcome(enter(state, target, seed_of(state)), (event,))


def auto_advance(state: SlotState, config: SlotConfig, ev: Evidence, decide: Decide) -> Outcome:
    stage = state.stage
    successor = st.default_successor(stage)
    gate = None if successor is None else EDGE_GATES.get((stage, successor))
    if gate is None or gate not in config.auto_advance or stage not in st.LIVE:
        return Outcome(state)
    if stage is _S.BLENDING and not seed_of(state).schedule.at_rest:
        return Outcome(state)  # G3 cannot pass mid-ramp; skip the noise
    return advance(state, config, Advance(target=successor), ev, decide)
