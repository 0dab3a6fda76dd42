"""``SeedSlot``: the thin ``nn.Module`` shell around one slot's lifecycle.

The lifecycle itself is pure: one frozen :class:`~esper_core.slot_state.SlotState`, frozen
:mod:`commands <esper_core.commands>` and one :func:`~esper_core.transition.transition`
function. The shell holds the configuration, the state, the seed module and the blend gate,
and does what needs torch. :meth:`SeedSlot.apply` works out a command's outcome and modules
touching nothing (:mod:`esper_core._proposal`), commits them in one step, mirrors into plain
attributes and a tensor buffer exactly what ``forward`` reads (:mod:`esper_core._slot_forward`
says why: ``torch.compile``), freezes the parameters the stage does not use so
``DistributedDataParallel`` never waits for a gradient that cannot come
(:mod:`esper_core._freeze`), and emits the events (observers, then the ``esper_seed_event``
hook). The verbs (``germinate``, ``advance``, ``prune``, ...) are one ``apply`` each.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from esper_core import _build
from esper_core import commands as cmd
from esper_core import stages as st
from esper_core._freeze import StageFreeze, unused_modules
from esper_core._proposal import propose
from esper_core._slot_forward import check_features, mirrored, mixed, seed_output
from esper_core.activity import ActivityMeter
from esper_core.alpha import AlphaCurve, BlendAlgorithm
from esper_core.blend import check_alpha_override
from esper_core.checkpoint import Restorable, SlotEnvelope
from esper_core.codec import state_checksum
from esper_core.errors import GerminationRefusedError, LifecycleError, LifecycleWarning
from esper_core.evidence import Evidence, Outcome
from esper_core.gates import GateLevel, GateResult, QualityGates
from esper_core.isolation import straight_through
from esper_core.metrics import DEFAULT_ACTIVITY_DECAY, SlotReport
from esper_core.restore import check_modules
from esper_core.slot_state import MAX_SEED_PARAMS, SlotConfig, SlotState, slot_report
from esper_core.stages import SeedStage, isolated_in
from esper_core.telemetry import Observers, SeedEvent, SeedWarning, SlotRestored
from esper_core.transition import evaluate, precheck

__all__ = ["Decider", "Observer", "SeedSlot"]

#: ``decider(slot, result) -> bool``: turns a gate result into the committed verdict.
Decider = Callable[["SeedSlot", GateResult], bool]
#: ``observer(event)``: called for every event of a slot, after the change is committed.
Observer = Callable[[SeedEvent], None]


def _setting(name: str, doc: str) -> Any:
    return property(lambda self: getattr(self._config, name), doc=doc)


def _derived(name: str, doc: str) -> Any:
    return property(lambda self: getattr(self._state, name), doc=doc)


class SeedSlot(nn.Module):
    """A seed slot at one injection point of width ``dim`` in ``topology``.

    Arguments are those of :class:`~esper_core.slot_state.SlotConfig` (``gates`` defaults to
    the strict policy; ``isolate_blending`` defaults to True for topologies without a sequence
    axis). Each is checked; a bad one raises :class:`~esper_core.errors.LifecycleError` (or
    :class:`~esper_core.errors.UnknownTopologyError`) naming it.
    """

    def __init__(
        self,
        slot_id: str,
        *,
        topology: str,
        dim: int,
        gates: QualityGates | None = None,
        embargo_epochs: int = 5,
        auto_advance: Collection[GateLevel] = (),
        isolate_blending: bool | None = None,
        activity_decay: float = DEFAULT_ACTIVITY_DECAY,
        max_seed_params: int = MAX_SEED_PARAMS,
    ) -> None:
        super().__init__()
        from esper_core.registry import get_topology

        self._topology = topo = get_topology(topology)
        self._config = SlotConfig(
            slot_id=slot_id, topology=topo.name, dim=dim, gates=QualityGates("strict") if gates is None else gates,
            embargo_epochs=embargo_epochs, auto_advance=auto_advance, activity_decay=activity_decay,
            isolate_blending=topo.sequence_axis is None if isolate_blending is None else isolate_blending,
            max_seed_params=max_seed_params,
        )  # fmt: skip
        self.decider: Decider | None = None
        self._observers = Observers(slot_id)
        # Tracks the module's device, dtype and memory format through .to()/.half() (4-d and
        # not degenerate, so .to(memory_format=...) changes its strides); not in state_dict.
        self.register_buffer("_anchor", torch.zeros(1, 2, 2, 2), persistent=False)
        # alpha as forward reads it (see esper_core._slot_forward); not in state_dict.
        self.register_buffer("_alpha_value", torch.zeros(()), persistent=False)
        self.register_module("seed", None)
        self.register_module("blend_gate", None)
        self._meter = ActivityMeter()
        self._freeze = StageFreeze()
        self._envelope = SlotEnvelope()
        self._last_gate: tuple[str | None, GateResult] | None = None  # (seed id, result): for report()
        self._output_checked = False
        self._alpha_seen = 0.0  # the value in _alpha_value (read without a device sync)
        self._mirror(SlotState())
        self.register_load_state_dict_post_hook(_after_load)
        self.register_load_state_dict_pre_hook(_before_load)

    # ---- configuration and state (read-only) --------------------------------------------------

    config = property(lambda self: self._config, doc="The slot's :class:`SlotConfig`.")
    state = property(lambda self: self._state, doc="The slot's :class:`SlotState` (a frozen value).")
    slot_id = _setting("slot_id", "The slot's id (unique in its model).")
    topology = _setting("topology", "The topology name of the features it sees.")
    dim = _setting("dim", "Width of the feature axis at the injection point.")
    gates = _setting("gates", "The `QualityGates` in force.")
    embargo_epochs = _setting("embargo_epochs", "Epochs a pruned slot stays EMBARGOED.")
    auto_advance = _setting("auto_advance", "Gates `step_epoch` tries on its own.")
    isolate_blending = _setting("isolate_blending", "Whether the seed input stays isolated while BLENDING.")
    activity_decay = _setting("activity_decay", "Weight of the previous activity EMA.")
    stage = _derived("stage", "The current `SeedStage`.")
    schedule = _derived("schedule", "The seed's alpha schedule.")
    alpha = _derived("alpha", "The alpha schedule's current value (0 without a seed).")
    metrics = _derived("metrics", "The seed's `SeedMetrics` (empty without a seed).")
    seed_id = _derived("seed_id", "The seed's id, or None.")
    blueprint = _derived("blueprint", "The seed's blueprint name, or None.")
    algorithm = _derived("algorithm", "The `BlendAlgorithm` (ADD without a seed).")
    healthy = _derived("healthy", "No sticky health issue and no negative measured contribution.")
    isolated = property(
        lambda self: isolated_in(self._state.stage, isolate_blending=self.isolate_blending),
        doc="Whether the seed input is isolated from the host in the current stage.",
    )
    available = property(
        lambda self: self._state.stage is SeedStage.DORMANT, doc="Whether a germination is accepted."
    )

    def alpha_tensor(self) -> Tensor:
        """A copy of the 0-dim tensor ``forward`` blends with: ``alpha`` in the slot's dtype and device."""
        return self._alpha_value.detach().clone()

    def seed_parameters(self) -> list[nn.Parameter]:
        """Seed and blend-gate parameters, whether or not they currently require grad."""
        return [p for m in (self.seed, self.blend_gate) if m is not None for p in m.parameters()]

    def trainable(self) -> bool:
        """Whether the seed can learn: a parameter you left trainable, and an output that requires grad."""
        seed = self._state.seed
        return self._trainable_params() and (seed is None or seed.output_requires_grad is not False)

    def _trainable_params(self) -> bool:
        if self.seed is None:
            return False
        return any(self._freeze.own_flag(p) for p in self.seed.parameters())

    # ---- applying commands --------------------------------------------------------------------

    def apply(self, command: object) -> Outcome:
        """Apply one lifecycle command: evidence and modules first, then the transition, then commit.

        Raises the library's error when the command is not allowed now or an argument is bad;
        the slot (and the global RNG) are then exactly as before.
        """
        state = self._state
        outcome, (seed, gate) = propose(
            self.prepare(command),
            state,
            self._config,
            topology=self._topology,
            anchor=self._anchor,
            modules=(self.seed, self.blend_gate),
            evidence=self._evidence,
            decide=self._decide,
        )
        if outcome.result is not None:
            self._last_gate = (outcome.state.seed_id or state.seed_id, outcome.result)
        if outcome.state is not state:
            self._commit(state, outcome.state, seed, gate)
        for event in outcome.events:
            self._observers.emit(event)
            if isinstance(event, SeedWarning):  # also where a user sees it without a sink
                warnings.warn(f"slot {self.slot_id!r}: {event.message}", LifecycleWarning, stacklevel=3)
        return outcome

    def prepare(self, command: object) -> Any:
        """``command`` as :meth:`apply` will apply it, checked against the current state.

        For a germination the options are resolved through the registry (defaults filled in)
        and the seed's exact size is checked against ``max_seed_params``, before anything is
        built. Raises the library's error; changes nothing.
        """
        precheck(self._state, self._config, command)
        return _build.resolved(self._config, command) if isinstance(command, cmd.Germinate) else command

    def _evidence(self, command: object) -> Evidence:
        measure = (
            isinstance(command, cmd.CaptureActivity | cmd.RecordAccuracy)
            and self._state.stage in st.RUNS_SEED
        )
        return Evidence(
            trainable_params=self._trainable_params(),
            param_count=_build.parameter_count(self.seed, self.blend_gate),
            activity=self._meter.evidence(self.seed) if measure else None,
        )

    def _decide(self, result: GateResult) -> bool:
        """The single place a gate result becomes a verdict (``decider``: e.g. rank 0's)."""
        return result.passed if self.decider is None else self.decider(self, result)

    # ---- commit and mirror --------------------------------------------------------------------

    def _commit(
        self, old: SlotState, new: SlotState, seed: nn.Module | None, gate: nn.Module | None, **meter: bool
    ) -> None:
        modules = self._modules  # read directly: nn.Module.__getattr__ costs a lookup chain per access
        if modules["seed"] is not seed:
            self.seed = seed
        if modules["blend_gate"] is not gate:
            self.blend_gate = gate
        self._mirror(new)
        if new.stage is not old.stage:
            self.__dict__["_output_checked"] = False
        self._meter.follow(old.stage, new.stage, seed, **({"restart": False, "reference": True} | meter))

    def _mirror(self, state: SlotState) -> None:
        """Set the plain attributes and the buffer ``forward`` reads, and the stage freeze."""
        # Plain attributes, written straight into __dict__: nn.Module.__setattr__ would test
        # each value against parameters, buffers and modules first.
        self.__dict__.update(mirrored(state, isolate_blending=self._config.isolate_blending), _state=state)
        alpha = state.alpha
        if self._alpha_seen != alpha:
            self.__dict__["_alpha_seen"] = alpha
            # A buffer that never requires grad: an in-place fill records nothing, no_grad not needed.
            self._buffers["_alpha_value"].fill_(alpha)
        modules = self._modules
        self._freeze.update(unused_modules(state.stage, self._down, modules["seed"], modules["blend_gate"]))

    def reconfigure(self, **changes: Any) -> None:
        """Replace configuration values (e.g. ``gates=QualityGates("strict")``), checked like the constructor's.

        The slot's identity (``slot_id``, ``topology``, ``dim``) cannot change. Under
        ``torch.distributed`` every rank must make the same change.
        """
        self._config = self._config.reconfigured(**changes)
        self._envelope.forget()
        self._mirror(self._state)

    # ---- the verbs ----------------------------------------------------------------------------

    def germinate(
        self,
        blueprint: str,
        *,
        options: Mapping[str, Any] | None = None,
        seed_id: str | None = None,
        algorithm: BlendAlgorithm = BlendAlgorithm.ADD,
        ramp_epochs: int = 5,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        alpha_target: float = 1.0,
        **unexpected: Any,
    ) -> None:
        """Build ``blueprint`` into this DORMANT slot (G0 must pass); the stage becomes GERMINATED.

        Blueprint options go in ``options={...}``. ``ramp_epochs`` is the first alpha ramp's length in
        epochs, ``curve`` its shape, ``alpha_target`` where it stops in (0, 1]. Raises
        :class:`LifecycleError` (slot unavailable, bad argument, seed too large, G0 refused) or a
        registry error (unknown blueprint, bad option); the slot and the RNG are then unchanged.
        """
        command = cmd.Germinate.from_keywords(
            blueprint,
            options={} if options is None else options,
            seed_id=seed_id,
            algorithm=algorithm,
            ramp_epochs=ramp_epochs,
            curve=curve,
            alpha_target=alpha_target,
            **unexpected,
        )
        result = self.apply(command).result
        if result is not None and not result.passed:
            raise GerminationRefusedError.of(self.slot_id, blueprint, result.checks_failed)

    def advance(self, target: SeedStage | None = None) -> GateResult:
        """Evaluate the edge's gate, let the decider rule, and commit the transition if passed."""
        result = self.apply(cmd.Advance(target=target)).result
        assert result is not None
        return result

    def evaluate(self, target: SeedStage | None = None) -> GateResult:
        """Judge the gate of the edge to ``target`` (default: the next stage). Changes no lifecycle
        state; the result is what ``report().last_gate`` shows next."""
        result = evaluate(self._state, self._config, target, self._evidence(None))
        self._last_gate = (self._state.seed_id, result)
        return result

    def prune(self, reason: str, initiator: str) -> None:
        """Remove the seed now; the slot cools down (PRUNED -> EMBARGOED -> RESETTING -> DORMANT)."""
        self.apply(cmd.Prune(reason=reason, initiator=initiator))

    def schedule_prune(
        self, epochs: int, curve: AlphaCurve = AlphaCurve.LINEAR, *, reason: str, initiator: str
    ) -> None:
        """Ramp alpha down to 0 over ``epochs`` epochs, then prune (at once if nothing is blended in)."""
        self.apply(cmd.SchedulePrune(epochs=epochs, curve=curve, reason=reason, initiator=initiator))

    def set_alpha_target(
        self,
        target: float,
        epochs: int,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        *,
        algorithm: BlendAlgorithm | None = None,
    ) -> None:
        """Retarget alpha (BLENDING or HOLDING, schedule at rest), optionally switching the algorithm.

        Switching to GATE adds a fresh blend gate (new parameters: the :class:`AlphaTargetSet`
        event's ``parameters_changed`` says so); switching away removes it.
        """
        self.apply(cmd.SetAlphaTarget(target=target, epochs=epochs, curve=curve, algorithm=algorithm))

    def step_epoch(self) -> None:
        """One tick: ramp alpha, finish a scheduled prune, run the cooldown, try automatic advances."""
        self.apply(cmd.StepEpoch())

    def record_accuracy(self, accuracy: float) -> None:
        """One epoch's validation accuracy in percentage points (0-100, e.g. 93.1; not 0.931).

        Marks the end of the epoch's training for this seed: in stages that run the seed, the
        activity measure for G2 is taken here (and the seed is checked for non-finite values).
        """
        self.apply(cmd.RecordAccuracy(accuracy=accuracy))

    def capture_activity(self) -> None:
        """Measure the seed's relative parameter change since the last capture (see ``record_accuracy``)."""
        self.apply(cmd.CaptureActivity())

    def record_counterfactual(self, contribution: float) -> None:
        """A measured leave-one-out contribution in percentage points (-100 to 100)."""
        self.apply(cmd.RecordCounterfactual(contribution=contribution))

    # ---- forward -------------------------------------------------------------------------------

    def forward(self, h: Tensor, alpha_override: Tensor | None = None) -> Tensor:
        """The host features ``h`` with the seed applied as the stage says; same shape and dtype.

        Identity (the very same tensor) unless the stage runs the seed; in TRAINING the output
        equals ``h`` exactly while the seed learns (straight-through) unless ``alpha_override``
        is given. ``alpha_override`` (0-dim, or ``h.dim()`` dims broadcastable to ``h``, e.g.
        ``(B, 1, 1, 1)``) replaces the schedule's alpha for a counterfactual pass.
        """
        if alpha_override is not None:
            check_alpha_override(alpha_override, h)
        if not self._runs:
            return h
        check_features(h, self._topology, self.dim, self.slot_id, self.blueprint)
        down = self._down  # seed and gate must not learn to fight their own removal
        x, s = seed_output(
            self.seed, h, isolate=self._isolate, frozen=down, slot_id=self.slot_id, blueprint=self.blueprint
        )
        if not down:
            tracking = torch.is_grad_enabled() and not torch.compiler.is_compiling()
            if tracking and not self._output_checked:
                self._output_checked = True
                self.apply(cmd.ObserveOutput(requires_grad=bool(s.requires_grad)))
            if self._straight and alpha_override is None:
                return straight_through(h, s)
            if tracking and self.training:
                self._meter.last_output = s.detach()
        alpha = self._alpha_value if alpha_override is None else alpha_override
        return mixed(self._algorithm, h, x, s, alpha, self.blend_gate, frozen=down)

    # ---- events --------------------------------------------------------------------------------

    def add_observer(self, fn: Observer) -> None:
        """Call ``fn(event)`` synchronously for every event of this slot (after commit)."""
        self._observers.add(fn)

    def remove_observer(self, fn: Observer) -> None:
        """Stop calling ``fn``; :class:`LifecycleError` when it was not registered."""
        self._observers.remove(fn)

    # ---- reporting ------------------------------------------------------------------------------

    def report(self) -> SlotReport:
        """A snapshot for controllers, observations and telemetry (parameter counts ignore requires_grad)."""
        last = self._last_gate
        return slot_report(
            self._config,
            self._state,
            seed_params=_build.parameter_count(self.seed),
            gate_params=_build.parameter_count(self.blend_gate),
            trainable=self.trainable(),
            last_gate=last[1].describe() if last is not None and last[0] == self._state.seed_id else None,
        )

    def state_checksum(self) -> Tensor:
        """A float64 vector that differs when two replicas' lifecycles diverge (CRC of the state's codec)."""
        return torch.tensor([float(state_checksum(self._state))], dtype=torch.float64)

    # ---- checkpoints ----------------------------------------------------------------------------

    def build_seed(self, blueprint: str, options: Mapping[str, Any]) -> nn.Module:
        """Build ``blueprint`` at this slot's dim, device and dtype (no state change)."""
        return _build.build_seed(self.topology, blueprint, self.dim, options, self._anchor)

    def build_blend_gate(self) -> nn.Module:
        """A fresh blend gate for this slot (no state change)."""
        return _build.build_gate(self._topology, self.dim, self._anchor)

    def restore_state(
        self,
        state: SlotState,
        seed: nn.Module | None,
        gate: nn.Module | None,
        *,
        take_reference: bool = True,
        source: object = None,
    ) -> None:
        """Commit a state read from a checkpoint, with the modules it needs (see :mod:`esper_core.checkpoint`).

        ``take_reference=False`` leaves the activity meter without a reference copy of the
        weights: right when ``load_state_dict`` follows, whose post-hook takes it once the
        checkpoint's tensors are in. ``source`` is the envelope object the state was read from
        (see :meth:`restored_from`). Emits :class:`SlotRestored` when the state changed.
        """
        if not isinstance(state, SlotState):
            raise LifecycleError(f"restore_state needs a SlotState, got {type(state).__name__}")
        check_modules(state, seed, gate)
        old, modules = self._state, self._modules
        if old != state or seed is not modules["seed"] or gate is not modules["blend_gate"]:
            self._commit(old, state, seed, gate, restart=True, reference=take_reference)
            self.__dict__["_output_checked"] = False
            self._observers.emit(SlotRestored(slot_id=self.slot_id, seed_id=self.seed_id, stage=state.stage))
        self._envelope.remember(source, state)

    def restored_from(self, envelope: object) -> bool:
        """Whether loading ``envelope`` would change nothing: it is the very object the current
        state was restored from, or the slot's own text (an identity check, then text equality)."""
        return self._envelope.restored_from(envelope, self._state)

    def lifecycle_text(self) -> str:
        """The slot's checkpoint envelope as JSON text (cached per state value)."""
        return self._envelope.text(self._config, self._state)

    def get_extra_state(self) -> Any:
        return self.lifecycle_text()

    def set_extra_state(self, state: Any) -> None:
        self._envelope.load(self, state)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """``nn.Module.load_state_dict``, all or nothing: :func:`esper_core.checkpoint.load_checkpoint`.

        A bad checkpoint raises :class:`~esper_core.errors.CheckpointError` naming the key
        and the slot is exactly as before.
        """
        from esper_core.checkpoint import load_checkpoint

        return load_checkpoint(self, state_dict, strict=strict, assign=assign)

    def start_activity_interval(self) -> None:
        """Take the activity meter's reference copy of the seed's weights now (after loading weights)."""
        if self.seed is not None and self._state.stage in st.RUNS_SEED:
            self._meter.start(list(self.seed.parameters()))

    # ---- copies ------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Observers and the decider belong to whoever registered them (an optimizer binding, a
        # distributed lifecycle): a copy or a pickle of the slot must not call them.
        data = dict(self.__dict__)
        data["decider"] = None
        data["_last_gate"] = None
        return data

    def extra_repr(self) -> str:
        return (
            f"slot_id={self.slot_id!r}, topology={self.topology!r}, dim={self.dim}, stage={self.stage.name}"
        )


def _before_load(slot: SeedSlot, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    slot._envelope.before_load(slot, state_dict, prefix)


def _after_load(slot: SeedSlot, incompatible: Any) -> None:
    # Tensors for a seed or blend gate the slot does not have: unexpected, not silently dropped.
    modules = slot._modules
    incompatible.unexpected_keys.extend(slot._envelope.dropped(modules["seed"], modules["blend_gate"]))
    # The one piece of runtime state derived from the weights (the activity meter's reference
    # copy) is taken once the checkpoint's tensors are in.
    slot.start_activity_interval()
    # The alpha buffer is not in the state_dict, so a load does not write it; after
    # ``to_empty()`` (meta-device initialisation, then a load) its memory is uninitialised.
    with torch.no_grad():
        slot._alpha_value.fill_(slot._alpha_seen)


Restorable.register(SeedSlot)  # what load_checkpoint finds in a model
