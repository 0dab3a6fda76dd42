"""Planning a slot restore: every check on an envelope, with no change to the slot.

:func:`plan_restore` is the validating half of :func:`esper_core.state.restore_slot`. It
checks the envelope's shape and types (:func:`esper_core.envelope.decode_envelope`), then
everything that needs the registry or the target slot, and builds the seed and gate modules
the envelope needs into a :class:`RestorePlan`. Only :meth:`RestorePlan.commit` writes to
the slot, with plain assignments that cannot fail half-way.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

from esper_core import stages as st
from esper_core.activity import ActivityState
from esper_core.alpha import ALPHA_TOLERANCE, AlphaController, AlphaCurve, AlphaMode
from esper_core.blend import BlendAlgorithm
from esper_core.envelope import (
    ActivityRecord,
    AlphaRecord,
    HistoryRecord,
    MetricsRecord,
    PendingPruneRecord,
    SeedRecord,
    SlotEnvelope,
    decode_envelope,
)
from esper_core.errors import CheckpointError, EsperError
from esper_core.metrics import SeedMetrics
from esper_core.stages import SeedStage

if TYPE_CHECKING:
    from esper_core.slot import SeedSlot

__all__ = ["RestorePlan", "plan_restore"]

_S = SeedStage
#: Stages in which the schedule rests at 0: nothing is blended in.
_AT_ZERO = frozenset({_S.GERMINATED, _S.TRAINING, _S.PRUNED, _S.EMBARGOED, _S.RESETTING})
#: SeedMetrics and MetricsRecord share their field names (the format test checks it).
_METRIC_FIELDS = tuple(f.name for f in attrs.fields(SeedMetrics))
#: Stages in which the schedule rests at full amplitude.
_AT_ONE = frozenset({_S.HOLDING, _S.FOSSILIZED})


@attrs.frozen(eq=False)
class RestorePlan:
    """Everything a valid envelope will write into its slot, computed without touching it."""

    stage: SeedStage
    previous_stage: SeedStage
    ticks_in_stage: int
    germinations: int
    attributes: Mapping[str, Any]
    """Lifecycle attributes to assign (empty for DORMANT: the slot resets itself)."""
    seed: nn.Module | None
    gate_module: nn.Module | None
    history: deque[SeedStage] | None

    def commit(self, slot: SeedSlot, *, take_reference: bool = True) -> None:
        """Write the plan into ``slot``. Plain assignments only: this cannot fail half-way.

        ``take_reference=False`` leaves the activity meter without a reference copy of the
        seed's weights: right when ``load_state_dict`` follows, whose post-hook takes it once
        the checkpoint's tensors are in (a copy taken now would be of the old weights).
        """
        clocks = {
            "_previous_stage": self.previous_stage,
            "_ticks_in_stage": self.ticks_in_stage,
            "_germinations": self.germinations,
        }
        if self.stage is _S.DORMANT:
            if slot._stage is _S.DORMANT and slot.seed is None:
                # Already empty (a DORMANT slot holds only defaults): only the clocks differ.
                _assign(slot, clocks)
                return
            slot._reset_lifecycle(previous=self.previous_stage)
        else:
            if slot.seed is not self.seed:
                slot.seed = self.seed
            if slot.gate_module is not self.gate_module:
                slot.gate_module = self.gate_module
            _assign(slot, self.attributes)
            clocks["_stage"] = self.stage
        if self.history is not None:
            clocks["_stage_history"] = self.history
        _assign(slot, clocks)
        slot._after_restore(take_reference=take_reference)


def _assign(slot: SeedSlot, values: Mapping[str, Any]) -> None:
    # Plain lifecycle attributes (never parameters, buffers or modules): skip
    # nn.Module.__setattr__, which tests every value against those kinds.
    for name, value in values.items():
        object.__setattr__(slot, name, value)


def plan_restore(slot: SeedSlot, envelope: object) -> RestorePlan:
    """Validate ``envelope`` for ``slot`` and build the modules it needs; change nothing.

    Raises :class:`~esper_core.errors.CheckpointError` naming the first bad field.
    """
    env = decode_envelope(envelope)
    _check_identity(slot, env)
    stage = _S(env.stage)
    previous = _S(env.previous_stage)
    if not st.is_legal_transition(previous, stage):
        legal = sorted(p.name for p in _S if st.is_legal_transition(p, stage))
        raise CheckpointError(
            f"checkpoint field 'previous_stage': {previous.name} cannot precede {stage.name}; accepted: {legal}"
        )
    if (env.seed is None) != (stage is _S.DORMANT):
        want = "None (the slot is DORMANT)" if stage is _S.DORMANT else f"a seed record (stage {stage.name})"
        raise CheckpointError(f"checkpoint field 'seed': got {type(env.seed).__name__}; accepted: {want}")
    if env.seed is None:
        return RestorePlan(
            stage=stage,
            previous_stage=previous,
            ticks_in_stage=env.ticks_in_stage,
            germinations=env.germinations,
            attributes={},
            seed=None,
            gate_module=None,
            history=None,
        )
    if env.germinations < 1:
        raise CheckpointError(
            f"checkpoint field 'germinations': got {env.germinations} with a seed present; accepted: an int >= 1"
        )
    return _plan_seed(slot, env, env.seed, stage, previous)


def _check_identity(slot: SeedSlot, env: SlotEnvelope) -> None:
    from esper_core.registry import get_topology

    if env.slot_id != slot.slot_id:
        raise CheckpointError(
            f"checkpoint field 'slot_id': got {env.slot_id!r}; accepted: {slot.slot_id!r} (the slot being loaded)"
        )
    try:
        get_topology(env.topology)
    except EsperError as exc:
        raise CheckpointError(f"checkpoint field 'topology': {exc}") from None
    if env.topology != slot.topology:
        raise CheckpointError(
            f"checkpoint field 'topology': got {env.topology!r}; accepted: {slot.topology!r} (this slot's topology)"
        )
    if env.dim != slot.dim:
        raise CheckpointError(
            f"checkpoint field 'dim': got {env.dim}; accepted: {slot.dim} (this slot's width)"
        )


def _plan_seed(
    slot: SeedSlot, env: SlotEnvelope, rec: SeedRecord, stage: SeedStage, previous: SeedStage
) -> RestorePlan:
    from esper_core.registry import get_blueprint

    try:
        spec = get_blueprint(env.topology, rec.blueprint)
    except EsperError as exc:
        raise CheckpointError(f"checkpoint field 'seed.blueprint': {exc}") from None
    try:
        options = spec.resolve(env.dim, dict(rec.options))
    except EsperError as exc:
        raise CheckpointError(f"checkpoint field 'seed.options': {exc}") from None
    except Exception as exc:  # a pack's own validate() may fail in any way
        raise CheckpointError(
            f"checkpoint field 'seed.options': {rec.blueprint!r} rejected them: {type(exc).__name__}: {exc}"
        ) from exc
    if rec.germination_target <= 0.0:
        raise CheckpointError(
            f"checkpoint field 'seed.germination_target': got {rec.germination_target}; accepted: a float in (0, 1]"
        )
    controller = _controller(rec.alpha, stage)
    metrics = _metrics(rec.metrics)
    activity = _activity(rec.activity)
    pending = _pending(rec.pending_prune, stage, controller)
    history = _history(rec.history, stage)
    algorithm = BlendAlgorithm(rec.algorithm)
    seed_module = gate_module = None
    if st.has_seed_module(stage):
        seed_module = _reuse_or_build_seed(slot, rec.blueprint, options)
        if algorithm is BlendAlgorithm.GATE:
            gate_module = (
                slot.gate_module if slot.gate_module is not None else _build(slot, "gate", None, None)
            )
    attributes = {
        "_seed_id": rec.seed_id,
        "_blueprint": rec.blueprint,
        "_options": dict(options),
        "_algorithm": algorithm,
        "_tempo": rec.tempo,
        "_curve": AlphaCurve(rec.curve),
        "_germination_target": rec.germination_target,
        "_alpha": controller,
        "_metrics": metrics,
        "_activity": activity,
        "_health_issues": tuple(rec.health_issues),
        "_pending_prune": pending,
        "_warned": frozenset(rec.warned),
        "_output_requires_grad": rec.output_requires_grad,
    }
    return RestorePlan(
        stage=stage,
        previous_stage=previous,
        ticks_in_stage=env.ticks_in_stage,
        germinations=env.germinations,
        attributes=attributes,
        seed=seed_module,
        gate_module=gate_module,
        history=history,
    )


def _controller(rec: AlphaRecord, stage: SeedStage) -> AlphaController:
    try:
        controller = AlphaController(
            alpha=rec.alpha,
            start=rec.start,
            target=rec.target,
            mode=AlphaMode(rec.mode),
            curve=AlphaCurve(rec.curve),
            steepness=rec.steepness,
            steps_total=rec.steps_total,
            steps_done=rec.steps_done,
        )
    except EsperError as exc:
        raise CheckpointError(f"checkpoint field 'seed.alpha': {exc}") from None
    if stage in _AT_ZERO and not (controller.at_rest and controller.alpha == 0.0):
        raise CheckpointError(
            f"checkpoint field 'seed.alpha': in {stage.name} nothing is blended in; accepted: mode 'hold' at "
            f"alpha 0.0, got mode {controller.mode.value!r} at alpha {controller.alpha}"
        )
    if stage in _AT_ONE and not (controller.at_rest and controller.alpha >= 1.0 - ALPHA_TOLERANCE):
        raise CheckpointError(
            f"checkpoint field 'seed.alpha': {stage.name} holds full amplitude; accepted: mode 'hold' at "
            f"alpha 1.0, got mode {controller.mode.value!r} at alpha {controller.alpha}"
        )
    return controller


def _metrics(rec: MetricsRecord) -> SeedMetrics:
    if rec.epochs_in_stage > rec.epochs_total:
        raise CheckpointError(
            f"checkpoint field 'seed.metrics.epochs_in_stage': got {rec.epochs_in_stage}; accepted: "
            f"at most epochs_total ({rec.epochs_total})"
        )
    measured = [rec.initial_accuracy is None, rec.current_accuracy is None, rec.best_accuracy is None]
    if len(set(measured)) != 1:
        raise CheckpointError(
            "checkpoint field 'seed.metrics.current_accuracy': initial, current and best accuracy must be "
            f"all None (never measured) or all numbers; got {rec.initial_accuracy!r}, "
            f"{rec.current_accuracy!r}, {rec.best_accuracy!r}"
        )
    return SeedMetrics(**{name: getattr(rec, name) for name in _METRIC_FIELDS})


def _activity(rec: ActivityRecord) -> ActivityState:
    if (rec.ema is None) != (rec.samples == 0) or (rec.last is None) != (rec.samples == 0):
        raise CheckpointError(
            f"checkpoint field 'seed.activity': ema {rec.ema!r} and last {rec.last!r} must be None exactly "
            f"when samples is 0 (never measured); samples is {rec.samples}"
        )
    return ActivityState(ema=rec.ema, last=rec.last, samples=rec.samples)


def _pending(
    rec: PendingPruneRecord | None, stage: SeedStage, controller: AlphaController
) -> tuple[str, str] | None:
    if rec is None:
        return None
    if stage is not _S.BLENDING or controller.mode is not AlphaMode.DOWN or controller.target != 0.0:
        raise CheckpointError(
            "checkpoint field 'seed.pending_prune': a scheduled prune exists only while BLENDING down to 0; "
            f"got stage {stage.name}, mode {controller.mode.value!r}, target {controller.target}"
        )
    return (rec.reason, rec.initiator)


def _history(rec: HistoryRecord, stage: SeedStage) -> deque[SeedStage]:
    stages = [_S(v) for v in rec.stages]
    if not stages:
        raise CheckpointError(
            f"checkpoint field 'seed.history.stages': empty; accepted: the stages the seed entered, ending with {stage.name}"
        )
    if len(stages) > rec.bound:
        raise CheckpointError(
            f"checkpoint field 'seed.history.stages': {len(stages)} entries; accepted: at most bound ({rec.bound})"
        )
    if stages[-1] is not stage:
        raise CheckpointError(
            f"checkpoint field 'seed.history.stages': last entry {stages[-1].name}; accepted: the current stage {stage.name}"
        )
    for i, (a, b) in enumerate(itertools.pairwise(stages)):
        if not st.is_legal_transition(a, b):
            raise CheckpointError(
                f"checkpoint field 'seed.history.stages[{i + 1}]': {a.name} -> {b.name} is not a legal transition"
            )
    return deque(stages, maxlen=rec.bound)


def _reuse_or_build_seed(slot: SeedSlot, blueprint: str, options: Mapping[str, Any]) -> nn.Module:
    current = slot.seed
    if current is not None and slot._blueprint == blueprint and slot._options == dict(options):
        return current
    return _build(slot, "seed", blueprint, options)


def _build(slot: SeedSlot, what: str, blueprint: str | None, options: Mapping[str, Any] | None) -> nn.Module:
    """Build a seed or gate module for ``slot`` without drawing from the global RNG."""
    try:
        with torch.random.fork_rng(devices=[]):
            module = slot._new_gate_module() if what == "gate" else slot.build_seed(blueprint, options)
    except CheckpointError:
        raise
    except Exception as exc:  # a pack's factory can fail in any way; the slot stays unchanged
        field = "seed.algorithm" if what == "gate" else "seed.blueprint"
        raise CheckpointError(
            f"checkpoint field {field!r}: rebuilding the {what} module failed: {type(exc).__name__}: {exc}"
        ) from exc
    module.train(slot.training)
    return module
