"""Removal, amplitude and the clock: the rest of :class:`~esper_core.slot.SeedSlot`'s mutations.

Same discipline as :mod:`esper_core.slot_ops`: validate everything, compute new immutable
values into locals, commit in a block that cannot fail, then emit events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from esper_core import stages as st
from esper_core.alpha import ALPHA_TOLERANCE, AlphaController, AlphaCurve
from esper_core.blend import BlendAlgorithm
from esper_core.errors import LifecycleError
from esper_core.gates import EDGE_GATES
from esper_core.slot_ops import _enum, _int, _target, _text
from esper_core.stages import SeedStage
from esper_core.telemetry import AlphaTargetSet, PruneScheduled, SeedPruned

if TYPE_CHECKING:
    from esper_core.slot import SeedSlot

__all__ = ["ScheduleOpsMixin"]

_S = SeedStage
_PRUNABLE = frozenset({_S.GERMINATED, _S.TRAINING, _S.BLENDING, _S.HOLDING})
_RETARGETABLE = frozenset({_S.BLENDING, _S.HOLDING})


class ScheduleOpsMixin:
    """prune / schedule_prune / set_alpha_target / step_epoch."""

    # ---- removal ------------------------------------------------------------------------------------

    def prune(self: SeedSlot, reason: str, initiator: str) -> None:
        """Remove the seed now; the slot cools down (PRUNED -> EMBARGOED -> RESETTING -> DORMANT)."""
        _text("reason", reason)
        _text("initiator", initiator)
        stage = self._stage
        if stage not in _PRUNABLE:
            why = "FOSSILIZED is terminal" if st.is_terminal(stage) else "there is no live seed"
            raise LifecycleError(
                f"cannot prune slot {self.slot_id!r} in stage {stage.name}: {why}; "
                f"prunable stages: {sorted(s.name for s in _PRUNABLE)}"
            )
        changed = self._stage_changed(stage, _S.PRUNED, self._metrics.epochs_in_stage)
        pruned = SeedPruned(
            slot_id=self.slot_id,
            seed_id=self._seed_id,
            blueprint=self._blueprint or "",
            from_stage=stage,
            reason=reason,
            initiator=initiator,
            counterfactual=self._metrics.counterfactual,
            total_improvement=self._metrics.total_improvement,
            epochs_total=self._metrics.epochs_total,
        )
        # ---- commit ----
        self.seed = None  # release memory before anyone is told
        self.gate_module = None
        self._set_stage(_S.PRUNED)
        self._alpha = AlphaController(curve=self._alpha.curve)
        self._pending_prune = None
        self._runtime_reset()
        self._emit(changed)
        self._emit(pruned)

    def schedule_prune(
        self: SeedSlot, steps: int, curve: AlphaCurve = AlphaCurve.LINEAR, *, reason: str, initiator: str
    ) -> None:
        """Ramp the amplitude down to 0 over ``steps`` ticks, then prune.

        From HOLDING the slot returns to BLENDING. When nothing is blended in yet
        (GERMINATED, TRAINING, or alpha already 0) or ``steps == 0`` the prune is immediate.
        """
        _int("steps", steps, 0)
        _enum("curve", curve, AlphaCurve)
        _text("reason", reason)
        _text("initiator", initiator)
        stage = self._stage
        if stage not in _PRUNABLE:
            return self.prune(reason, initiator)  # raises with the precise reason
        if steps == 0 or stage not in _RETARGETABLE or self._alpha.alpha <= ALPHA_TOLERANCE:
            return self.prune(reason, initiator)
        if not self._alpha.at_rest:
            raise LifecycleError(
                f"cannot schedule a prune while the schedule is ramping {self._alpha.mode.name} "
                f"({self._alpha.remaining_steps} steps left); wait for it to reach its target"
            )
        controller = self._alpha.retarget(0.0, steps, curve)
        # ---- commit ----
        events = []
        if stage is _S.HOLDING:
            events.append(self._stage_changed(stage, _S.BLENDING, self._metrics.epochs_in_stage))
            self._set_stage(_S.BLENDING, self._metrics.enter_stage())
        self._alpha = controller
        self._pending_prune = (reason, initiator)
        for event in events:
            self._emit(event)
        self._emit(
            PruneScheduled(
                slot_id=self.slot_id,
                seed_id=self._seed_id,
                steps=steps,
                curve=curve,
                reason=reason,
                initiator=initiator,
            )
        )
        return None

    # ---- amplitude --------------------------------------------------------------------------------------

    def set_alpha_target(
        self: SeedSlot,
        target: float,
        steps: int,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        *,
        algorithm: BlendAlgorithm | None = None,
    ) -> None:
        """Retarget the amplitude (BLENDING or HOLDING, schedule at rest), optionally switching
        the blend algorithm. A HOLDING seed retargeted below 1 returns to BLENDING.

        Switching to GATE adds a fresh gate module (new parameters: rebuild optimizers on
        the :class:`AlphaTargetSet` event, whose ``parameters_changed`` says so); switching
        away from GATE removes it.
        """
        value = _target(target)
        _int("steps", steps, 0)
        _enum("curve", curve, AlphaCurve)
        if algorithm is not None:
            _enum("algorithm", algorithm, BlendAlgorithm)
        stage = self._stage
        if stage not in _RETARGETABLE:
            raise LifecycleError(
                f"set_alpha_target needs BLENDING or HOLDING; slot {self.slot_id!r} is {stage.name}"
            )
        controller = self._alpha.retarget(value, steps, curve)  # raises unless at rest
        new_algorithm = self._algorithm if algorithm is None else algorithm
        gate_module = self.gate_module
        changed = new_algorithm is not self._algorithm and BlendAlgorithm.GATE in (
            new_algorithm,
            self._algorithm,
        )
        if changed:
            gate_module = self._new_gate_module() if new_algorithm is BlendAlgorithm.GATE else None
        leaves_holding = stage is _S.HOLDING and value < 1.0 - ALPHA_TOLERANCE
        # ---- commit ----
        previous_algorithm = self._algorithm
        events = []
        if leaves_holding:
            events.append(self._stage_changed(stage, _S.BLENDING, self._metrics.epochs_in_stage))
            self._set_stage(_S.BLENDING, self._metrics.enter_stage())
        self._alpha = controller
        self._algorithm = new_algorithm
        self.gate_module = gate_module
        for event in events:
            self._emit(event)
        self._emit(
            AlphaTargetSet(
                slot_id=self.slot_id,
                seed_id=self._seed_id,
                target=value,
                steps=steps,
                curve=curve,
                algorithm=new_algorithm,
                previous_algorithm=previous_algorithm,
                parameters_changed=changed,
            )
        )

    # ---- the clock ------------------------------------------------------------------------------------

    def step_epoch(self: SeedSlot) -> None:
        """One tick: ramp the amplitude, finish a scheduled prune, run the cooldown, and try
        the configured automatic advances (each through the decider, like ``advance``)."""
        stage = self._stage
        self._ticks_in_stage += 1
        if stage is _S.BLENDING:
            controller = self._alpha.step()
            self._alpha = controller
            if controller.at_rest and controller.target <= ALPHA_TOLERANCE:
                reason, initiator = self._pending_prune or ("scheduled_prune", "policy")
                self.prune(reason, initiator)
                return
        elif stage is _S.PRUNED:
            self._cool(_S.EMBARGOED)
            return
        elif stage is _S.EMBARGOED:
            if self._ticks_in_stage >= self.embargo_ticks:
                self._cool(_S.RESETTING)
            return
        elif stage is _S.RESETTING:
            self._cool(_S.DORMANT)
            return
        self._auto_advance()

    def _cool(self: SeedSlot, target: SeedStage) -> None:
        event = self._stage_changed(self._stage, target, self._ticks_in_stage)
        if target is _S.DORMANT:
            self._reset_lifecycle(previous=self._stage)
        else:
            self._set_stage(target)
        self._emit(event)

    def _auto_advance(self: SeedSlot) -> None:
        stage = self._stage
        successor = st.default_successor(stage)
        if successor is None or st.has_seed_module(stage) is False:
            return
        gate = EDGE_GATES.get((stage, successor))
        if gate is None or gate not in self.auto_advance:
            return
        if stage is _S.BLENDING and not self._alpha.at_rest:
            return  # G3 cannot pass mid-ramp; skip the noise
        self.advance(successor)
