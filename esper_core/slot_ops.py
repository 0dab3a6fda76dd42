"""Germination and gated transitions of :class:`~esper_core.slot.SeedSlot`.

Kept apart from the module plumbing in ``slot.py`` so each file stays about one thing
(prune, retarget and the clock are in :mod:`esper_core.slot_schedule`).
Every method here follows the same pattern: check the stage and every argument, compute
the new immutable values (controller, metrics, modules) into locals, then commit them in
one block that cannot fail, then emit events. A call that raises has changed nothing.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from esper_core import stages as st
from esper_core.activity import ActivityState
from esper_core.alpha import AlphaController, AlphaCurve
from esper_core.blend import BlendAlgorithm, GateModule
from esper_core.errors import LifecycleError
from esper_core.gates import GateEvidence, GateResult
from esper_core.isolation import needs_groupnorm_workaround
from esper_core.metrics import SeedMetrics
from esper_core.stages import SeedStage
from esper_core.telemetry import (
    GateEvaluated,
    SeedFossilized,
    SeedGerminated,
    StageChanged,
)

if TYPE_CHECKING:
    from esper_core.slot import SeedSlot

__all__ = ["HISTORY_BOUND", "LifecycleOpsMixin"]

_S = SeedStage

#: How many stage entries a seed's ``_stage_history`` keeps (oldest dropped first).
HISTORY_BOUND = 100


def _enum(what: str, value: object, kind: type) -> Any:
    if not isinstance(value, kind):
        raise LifecycleError(f"{what} must be a {kind.__name__}, got {value!r}; accepted: {list(kind)}")
    return value


def _int(what: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LifecycleError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _text(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LifecycleError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _target(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LifecycleError(f"alpha target must be a number in (0, 1], got {value!r}")
    if not 0.0 < float(value) <= 1.0:
        hint = " (to remove a seed use schedule_prune or prune)" if float(value) <= 0 else ""
        raise LifecycleError(f"alpha target must lie in (0, 1], got {value!r}{hint}")
    return float(value)


class LifecycleOpsMixin:
    """germinate / build_seed / evaluate / advance."""

    # ---- germination -----------------------------------------------------------------------------

    def germinate(
        self: SeedSlot,
        blueprint: str,
        *,
        options: Mapping[str, Any] | None = None,
        seed_id: str | None = None,
        algorithm: BlendAlgorithm = BlendAlgorithm.ADD,
        tempo: int = 5,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        alpha_target: float = 1.0,
    ) -> None:
        """Build ``blueprint`` into this DORMANT slot (G0 must pass); stage becomes GERMINATED.

        ``tempo`` is the length in ticks of the first blend ramp, ``curve`` its shape and
        ``alpha_target`` where it stops. Raises :class:`LifecycleError` (slot unavailable,
        bad argument, G0 failed) or a registry error (unknown blueprint, bad option);
        the slot is unchanged in every case.
        """
        if self._stage is not _S.DORMANT:
            raise LifecycleError(
                f"slot {self.slot_id!r} is unavailable for germination: stage is {self._stage.name}, "
                "germination needs DORMANT (a pruned slot becomes DORMANT after its cooldown)"
            )
        _text("blueprint", blueprint)
        _enum("algorithm", algorithm, BlendAlgorithm)
        _enum("curve", curve, AlphaCurve)
        _int("tempo", tempo, 1)
        target = _target(alpha_target)
        if seed_id is not None:
            _text("seed_id", seed_id)
        if options is not None and not isinstance(options, Mapping):
            raise LifecycleError(f"options must be a mapping of option name to value, got {options!r}")
        from esper_core.registry import get_blueprint

        spec = get_blueprint(self.topology, blueprint)
        resolved = spec.resolve(self.dim, dict(options or {}))
        module = self.build_seed(blueprint, resolved)
        gate_module = self._new_gate_module() if algorithm is BlendAlgorithm.GATE else None
        shape_ok, dtype_ok = self._probe(module)
        groupnorm = needs_groupnorm_workaround(module, self._probe_input(1))
        sid = seed_id if seed_id is not None else f"{self.slot_id}-{blueprint}-{self._germinations + 1}"
        edge = (_S.DORMANT, _S.GERMINATED)
        evidence = GateEvidence(
            stage=_S.DORMANT,
            seed_id=sid,
            blueprint=blueprint,
            shape_preserved=shape_ok,
            dtype_preserved=dtype_ok,
        )
        result = self._decide(self.gates.evaluate(edge, evidence))
        verdict = GateEvaluated.from_result(self.slot_id, sid, result)
        if not result.passed:
            self._emit(verdict)
            raise LifecycleError(
                f"G0 rejected germinating {blueprint!r} in slot {self.slot_id!r}: {list(result.checks_failed)}"
            )
        # ---- commit (nothing below can fail) ----
        self.seed = module
        self.gate_module = gate_module
        self._germinations += 1
        self._previous_stage = self._stage
        self._stage = _S.GERMINATED
        self._ticks_in_stage = 0
        self._seed_id = sid
        self._blueprint = blueprint
        self._options = dict(resolved)
        self._algorithm = algorithm
        self._tempo = tempo
        self._curve = curve
        self._germination_target = target
        self._alpha = AlphaController(curve=curve)
        self._metrics = SeedMetrics()
        self._activity = ActivityState()
        self._health_issues = ()
        self._pending_prune = None
        self._warned = frozenset()
        self._output_requires_grad = None
        self._stage_history = deque((_S.GERMINATED,), maxlen=HISTORY_BOUND)
        self._groupnorm_probe = (module, groupnorm)
        self._runtime_reset()
        self._emit(verdict)
        self._emit(
            SeedGerminated(
                slot_id=self.slot_id,
                seed_id=sid,
                blueprint=blueprint,
                topology=self.topology,
                dim=self.dim,
                options=tuple(sorted(resolved.items())),
                algorithm=algorithm,
                curve=curve,
                tempo=tempo,
                alpha_target=target,
                param_count=sum(p.numel() for p in self.seed_parameters()),
            )
        )

    def build_seed(self: SeedSlot, blueprint: str, options: Mapping[str, Any]) -> nn.Module:
        """Build ``blueprint`` at this slot's dim, on its device and dtype (no state change).

        Used by :meth:`germinate` and by checkpoint restore, which rebuilds the module from
        the (topology, blueprint, dim, options) it finds in the envelope.
        """
        from esper_core.registry import get_blueprint

        module = get_blueprint(self.topology, blueprint).build(self.dim, **dict(options))
        anchor = self._anchor
        if anchor.is_floating_point():
            module = module.to(device=anchor.device, dtype=anchor.dtype)
        else:
            module = module.to(device=anchor.device)
        return module

    def _new_gate_module(self: SeedSlot) -> GateModule:
        gate = GateModule.for_topology(self._topology, self.dim)
        return gate.to(device=self._anchor.device, dtype=self._anchor.dtype)

    def _probe(self: SeedSlot, module: nn.Module) -> tuple[bool, bool]:
        """Run the new seed once on a private random input: shape and dtype preserved?"""
        x = self._probe_input(2)
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                y = module(x)
        finally:
            module.train(was_training)
        if not isinstance(y, torch.Tensor):
            return False, False
        return tuple(y.shape) == tuple(x.shape), y.dtype == x.dtype

    # ---- gated transitions ------------------------------------------------------------------------

    def _advance_edge(self: SeedSlot, target: SeedStage | int | None) -> tuple[SeedStage, SeedStage]:
        stage = self._stage
        if stage is _S.DORMANT:
            raise LifecycleError(f"slot {self.slot_id!r} is empty (DORMANT); use germinate() to start a seed")
        if st.is_failure(stage):
            raise LifecycleError(
                f"slot {self.slot_id!r} is cooling down ({stage.name}); the cooldown advances through step_epoch()"
            )
        if st.is_terminal(stage):
            raise LifecycleError(f"slot {self.slot_id!r} is FOSSILIZED, which is terminal")
        if target is None:
            chosen = st.default_successor(stage)
            assert chosen is not None  # every live non-terminal stage has one
        else:
            chosen = st.stage_from_value(target)
        if st.is_failure(chosen):
            raise LifecycleError(
                f"advance() cannot target {chosen.name}; use prune() and the cooldown pipeline"
            )
        if not st.is_legal_transition(stage, chosen):
            legal = [s.name for s in st.TRANSITIONS[stage]]
            raise LifecycleError(
                f"illegal transition {stage.name}->{chosen.name}; from {stage.name}: {legal}"
            )
        return stage, chosen

    def evaluate(self: SeedSlot, target: SeedStage | None = None) -> GateResult:
        """Judge the gate of the edge to ``target`` (default: the next stage). Changes nothing."""
        edge = self._advance_edge(target)
        return self.gates.evaluate(edge, self._evidence())

    def advance(self: SeedSlot, target: SeedStage | None = None) -> GateResult:
        """Evaluate the edge's gate, let the decider rule, and commit the transition if passed.

        An edge without a gate (e.g. HOLDING->BLENDING, which :meth:`set_alpha_target`
        handles) raises :class:`~esper_core.errors.MissingGateError`.
        """
        edge = self._advance_edge(target)
        result = self._decide(self.gates.evaluate(edge, self._evidence()))
        verdict = GateEvaluated.from_result(self.slot_id, self._seed_id, result)
        if not result.passed:
            self._emit(verdict)
            return result
        self._enter(edge[1], verdict)
        return result

    def _enter(self: SeedSlot, target: SeedStage, verdict: GateEvaluated) -> None:
        """Commit a gated transition, run the stage-entry effects, then report them."""
        old = self._stage
        left_epochs = self._metrics.epochs_in_stage
        metrics = self._metrics.enter_stage(blending=old is _S.TRAINING and target is _S.BLENDING)
        controller = self._alpha
        if old is _S.TRAINING and target is _S.BLENDING:
            controller = AlphaController(curve=self._curve).retarget(self._germination_target, self._tempo)
        elif target is _S.HOLDING:
            controller = AlphaController(alpha=1.0, start=1.0, target=1.0, curve=controller.curve)
        self._set_stage(target, metrics)
        self._alpha = controller
        if target is _S.TRAINING:
            self._meter.start(self._seed_tensors())
        self._emit(verdict)
        self._emit(self._stage_changed(old, target, left_epochs))
        if target is _S.TRAINING and not any(p.requires_grad for p in self._seed_tensors()):
            self._warn_once(
                "seed_not_trainable",
                f"seed {self._seed_id!r} has no trainable parameters; it cannot learn and G2 will fail",
            )
        if target is _S.FOSSILIZED:
            self._emit(
                SeedFossilized(
                    slot_id=self.slot_id,
                    seed_id=self._seed_id,
                    blueprint=self._blueprint or "",
                    param_count=sum(p.numel() for p in self.seed_parameters()),
                    counterfactual=self._metrics.counterfactual,
                    total_improvement=self._metrics.total_improvement,
                    epochs_total=self._metrics.epochs_total,
                )
            )

    def _stage_changed(self: SeedSlot, old: SeedStage, new: SeedStage, epochs: int) -> StageChanged:
        return StageChanged(
            slot_id=self.slot_id,
            seed_id=self._seed_id,
            from_stage=old,
            to_stage=new,
            blending_progress=self._alpha.alpha,
            epochs_in_stage=epochs,
        )
