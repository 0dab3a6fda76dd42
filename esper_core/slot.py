"""``SeedSlot``: one injection point, at most one seed, and its lifecycle.

The slot is thin orchestration: stages and transitions come from :mod:`.stages`, gate
decisions from :mod:`.gates`, the schedule from :mod:`.alpha`, the math from :mod:`.blend`
and :mod:`.isolation`, measurements from :mod:`.metrics` and :mod:`.activity`, events from
:mod:`.telemetry`. Its methods are split over :mod:`.slot_forward` (forward pass and
measurements), :mod:`.slot_ops` (germination, gated transitions) and
:mod:`.slot_schedule` (prune, retarget, the clock), so each file is about one thing. Every mutating call validates everything first (building new immutable
values into locals) and only then assigns, so a rejected call changes nothing.

Every gate decision - ``advance``, the G0 check inside ``germinate`` and every automatic
advance in ``step_epoch`` - passes through :meth:`SeedSlot._decide`, which consults
:attr:`SeedSlot.decider` when one is set (the distributed lifecycle makes rank 0 decide).

Lifecycle state (what a checkpoint must carry; :mod:`esper_core.state` reads and writes
exactly these attributes, then calls :meth:`SeedSlot._after_restore`):

========================== ==================================================================
``_stage``                  :class:`SeedStage`
``_previous_stage``         :class:`SeedStage` (UNKNOWN for a fresh slot)
``_ticks_in_stage``         ``step_epoch`` calls since the stage was entered (cooldown clock)
``_seed_id``                ``str | None``
``_blueprint``              ``str | None`` (blueprint name in this slot's topology)
``_options``                ``dict[str, int | float | bool | str]`` resolved blueprint options
``_algorithm``              :class:`BlendAlgorithm`
``_tempo``                  ``int`` ramp length chosen at germination
``_curve``                  :class:`AlphaCurve` chosen at germination
``_germination_target``     ``float`` alpha target of the first ramp
``_alpha``                  :class:`AlphaController` (``to_dict``/``from_dict``)
``_metrics``                :class:`SeedMetrics` (``to_dict``/``from_dict``)
``_activity``               :class:`ActivityState` (``to_dict``/``from_dict``)
``_health_issues``          ``tuple[str, ...]`` sticky problems, e.g. ``"nonfinite_gradients"``
``_pending_prune``          ``tuple[str, str] | None`` (reason, initiator) of a scheduled prune
``_germinations``           ``int`` seeds germinated here so far (default seed ids)
``_warned``                 ``frozenset[str]`` one-time warning codes already emitted
``_output_requires_grad``   ``bool | None`` last observation of the seed output (None: unseen)
``_stage_history``          ``deque[SeedStage]`` stages this seed entered, oldest first (bounded)
``seed``, ``gate_module``   submodules; their weights travel in ``state_dict()``
========================== ==================================================================

Everything else (``_meter``, ``_last_output``, ``_observers``, ``decider``, the GroupNorm
probe result) is runtime state rebuilt by :meth:`SeedSlot._after_restore`.

**Alpha inside forward is a tensor.** ``_alpha`` is a property: assigning a controller also
writes its value, in place, into the non-persistent 0-dim buffer ``_alpha_value`` (and sets
the plain flag ``_ramping_down``). ``forward`` reads only that buffer, never the Python
float, so ``torch.compile`` sees the amplitude as a graph input rather than a constant it
must guard on: a ramp over many ``step_epoch`` ticks reuses one compiled graph. The buffer
follows ``.to()``/``.half()`` like any buffer and is absent from ``state_dict`` (restore
re-assigns ``_alpha``, which refills it). Because the update is in place, call
``step_epoch`` between iterations, not between a forward and its backward.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from esper_core import stages as st
from esper_core.activity import DEFAULT_ACTIVITY_DECAY, ActivityMeter, ActivityState
from esper_core.alpha import AlphaController, AlphaCurve, AlphaMode
from esper_core.blend import BlendAlgorithm
from esper_core.errors import LifecycleError
from esper_core.gates import GateEvidence, GateLevel, GateResult, QualityGates
from esper_core.isolation import isolated_in
from esper_core.metrics import SeedMetrics, SlotReport
from esper_core.slot_forward import RUNS_SEED, ForwardMixin
from esper_core.slot_ops import HISTORY_BOUND, LifecycleOpsMixin
from esper_core.slot_schedule import ScheduleOpsMixin
from esper_core.stages import SeedStage
from esper_core.telemetry import SeedEvent, SeedWarning, emit

__all__ = ["AUTO_ADVANCE_GATES", "HISTORY_BOUND", "Decider", "Observer", "SeedSlot"]

Decider = Callable[["SeedSlot", GateResult], bool]
Observer = Callable[[SeedEvent], None]

#: Gates ``step_epoch`` may pass automatically. G0 needs a blueprint choice and G5
#: (fossilization) is permanent, so both stay explicit.
AUTO_ADVANCE_GATES = frozenset({GateLevel.G1, GateLevel.G2, GateLevel.G3})

# Integer codes used by state_checksum (stable across processes, unlike hash()).
_MODE_CODE = {AlphaMode.HOLD: 0, AlphaMode.UP: 1, AlphaMode.DOWN: 2}
_ALGO_CODE = {BlendAlgorithm.ADD: 1, BlendAlgorithm.MULTIPLY: 2, BlendAlgorithm.GATE: 3}

_RUNS_SEED = RUNS_SEED


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LifecycleError(f"{what} must be a non-empty string, got {value!r}")
    return value


class SeedSlot(ForwardMixin, LifecycleOpsMixin, ScheduleOpsMixin, nn.Module):
    """A seed slot at one injection point of width ``dim`` in ``topology``.

    ``embargo_ticks`` is how many ``step_epoch`` calls a pruned slot stays EMBARGOED; the
    whole cooldown PRUNED -> EMBARGOED -> RESETTING -> DORMANT takes ``embargo_ticks + 2``
    ticks. ``auto_advance`` names gates (G1, G2, G3) that ``step_epoch`` tries on its own.
    ``isolate_blending`` (default: True for topologies without a sequence axis) keeps the
    seed input isolated while blending.
    """

    def __init__(
        self,
        slot_id: str,
        *,
        topology: str,
        dim: int,
        gates: QualityGates | None = None,
        embargo_ticks: int = 5,
        auto_advance: Collection[GateLevel] = (),
        isolate_blending: bool | None = None,
        activity_decay: float = DEFAULT_ACTIVITY_DECAY,
    ) -> None:
        super().__init__()
        from esper_core.registry import get_topology
        from esper_core.spec import check_dim

        _check_name("slot_id", slot_id)
        topo = get_topology(topology)
        try:
            check_dim(dim)
        except Exception as exc:
            raise LifecycleError(f"slot {slot_id!r}: {exc}") from None
        if gates is None:
            gates = QualityGates("strict")
        if not isinstance(gates, QualityGates):
            raise LifecycleError(f"gates must be a QualityGates, got {type(gates).__name__}")
        if isinstance(embargo_ticks, bool) or not isinstance(embargo_ticks, int) or embargo_ticks < 1:
            raise LifecycleError(f"embargo_ticks must be an int >= 1, got {embargo_ticks!r}")
        auto = frozenset(auto_advance)
        if not auto <= AUTO_ADVANCE_GATES:
            raise LifecycleError(
                f"auto_advance accepts only {sorted(g.name for g in AUTO_ADVANCE_GATES)}; "
                f"got {sorted(getattr(g, 'name', repr(g)) for g in auto)}"
            )
        if not 0.0 <= activity_decay < 1.0:
            raise LifecycleError(f"activity_decay must be in [0, 1), got {activity_decay!r}")
        self.slot_id = slot_id
        self.topology = topo.name
        self._topology = topo
        self.dim = int(dim)
        self.gates = gates
        self.embargo_ticks = embargo_ticks
        self.auto_advance = auto
        self.isolate_blending = (
            topo.sequence_axis is None if isolate_blending is None else bool(isolate_blending)
        )
        self.activity_decay = float(activity_decay)
        self.decider: Decider | None = None
        self._observers: list[Observer] = []
        # Tracks the module's device and dtype through .to()/.half(); not in state_dict.
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)
        # The blend amplitude as seen by forward (see module docstring); not in state_dict.
        self.register_buffer("_alpha_value", torch.zeros(()), persistent=False)
        self._groupnorm_probe: tuple[nn.Module, bool] | None = None
        self.register_module("seed", None)
        self.register_module("gate_module", None)
        self._germinations = 0
        self._meter = ActivityMeter()
        self._reset_lifecycle(previous=SeedStage.UNKNOWN)

    # ---- state helpers ----------------------------------------------------------------------

    def _reset_lifecycle(self, previous: SeedStage) -> None:
        """An empty DORMANT slot (keeps configuration and the germination counter)."""
        self.seed = None
        self.gate_module = None
        self._stage = SeedStage.DORMANT
        self._previous_stage = previous
        self._ticks_in_stage = 0
        self._seed_id: str | None = None
        self._blueprint: str | None = None
        self._options: dict[str, Any] = {}
        self._algorithm = BlendAlgorithm.ADD
        self._tempo = 5
        self._curve = AlphaCurve.LINEAR
        self._germination_target = 1.0
        self._alpha = AlphaController()
        self._metrics = SeedMetrics()
        self._activity = ActivityState()
        self._health_issues: tuple[str, ...] = ()
        self._pending_prune: tuple[str, str] | None = None
        self._warned: frozenset[str] = frozenset()
        self._output_requires_grad: bool | None = None
        # A seed's history; an empty slot has none.
        self._stage_history: deque[SeedStage] = deque(maxlen=HISTORY_BOUND)
        self._runtime_reset()

    def _runtime_reset(self) -> None:
        self._meter.clear()
        self._last_output: Tensor | None = None
        self._output_checked = False
        self._refresh_groupnorm_workaround()

    def _probe_input(self, batch: int) -> Tensor:
        """A random feature tensor from a private generator (the global RNG is never touched)."""
        return self._topology.example_input(
            self.dim,
            batch=batch,
            dtype=self._anchor.dtype,
            device=self._anchor.device,
            generator=torch.Generator().manual_seed(0),
        )

    def _after_restore(self, *, take_reference: bool = True) -> None:
        """Rebuild runtime state after a checkpoint wrote the lifecycle attributes."""
        self._runtime_reset()
        if take_reference and self.seed is not None and self._stage in _RUNS_SEED:
            self._meter.start(self._seed_tensors())

    def _set_stage(self, stage: SeedStage, metrics: SeedMetrics | None = None) -> None:
        self._previous_stage = self._stage
        self._stage = stage
        self._ticks_in_stage = 0
        self._stage_history.append(stage)
        if metrics is not None:
            self._metrics = metrics
        self._output_checked = False

    # ---- read-only views ----------------------------------------------------------------------

    @property
    def stage(self) -> SeedStage:
        return self._stage

    @property
    def alpha(self) -> float:
        """Blending progress: the amplitude schedule's current value."""
        return self._alpha.alpha

    @property
    def blending_progress(self) -> float:
        return self._alpha.alpha

    @property
    def controller(self) -> AlphaController:
        return self._alpha

    @property
    def metrics(self) -> SeedMetrics:
        return self._metrics

    @property
    def seed_id(self) -> str | None:
        return self._seed_id

    @property
    def blueprint(self) -> str | None:
        return self._blueprint

    @property
    def algorithm(self) -> BlendAlgorithm:
        return self._algorithm

    @property
    def isolated(self) -> bool:
        return isolated_in(self._stage, isolate_blending=self.isolate_blending)

    @property
    def available(self) -> bool:
        """True when the slot accepts a germination (DORMANT)."""
        return self._stage is SeedStage.DORMANT

    @property
    def healthy(self) -> bool:
        cf = self._metrics.counterfactual
        return not self._health_issues and (cf is None or cf >= 0.0)

    def seed_parameters(self) -> list[nn.Parameter]:
        """Seed and gate parameters, whether or not they currently require grad."""
        params: list[nn.Parameter] = []
        for module in (self.seed, self.gate_module):
            if module is not None:
                params.extend(module.parameters())
        return params

    def _seed_tensors(self) -> list[nn.Parameter]:
        return [] if self.seed is None else list(self.seed.parameters())

    def trainable(self) -> bool:
        """Whether the seed can learn: some parameter requires grad and its output does."""
        if self.seed is None:
            return False
        has_trainable = any(p.requires_grad for p in self.seed.parameters())
        return has_trainable and self._output_requires_grad is not False

    # ---- observers and events -------------------------------------------------------------------

    def add_observer(self, fn: Observer) -> None:
        """Call ``fn(event)`` synchronously for every event of this slot (after commit)."""
        if not callable(fn):
            raise LifecycleError(f"an observer must be callable, got {fn!r}")
        self._observers.append(fn)

    def remove_observer(self, fn: Observer) -> None:
        try:
            self._observers.remove(fn)
        except ValueError:
            raise LifecycleError(f"observer {fn!r} is not registered on slot {self.slot_id!r}") from None

    def _emit(self, event: SeedEvent) -> None:
        for fn in list(self._observers):
            fn(event)
        emit(event)

    def _warn_once(self, code: str, message: str) -> None:
        if code in self._warned:
            return
        self._warned = self._warned | {code}
        self._emit(SeedWarning(slot_id=self.slot_id, seed_id=self._seed_id, code=code, message=message))

    # ---- gate decisions ---------------------------------------------------------------------------

    def _decide(self, result: GateResult) -> GateResult:
        """The single place where a gate result becomes a decision (see ``decider``)."""
        if self.decider is None:
            return result
        verdict = self.decider(self, result)
        if not isinstance(verdict, bool):
            raise LifecycleError(f"a decider must return a bool, got {verdict!r}")
        if verdict == result.passed:
            return result
        return attrs.evolve(
            result, passed=verdict, message=f"{result.message} (decider: {verdict}, local: {result.passed})"
        )

    def _evidence(self) -> GateEvidence:
        m = self._metrics
        return GateEvidence(
            stage=self._stage,
            seed_id=self._seed_id or "",
            blueprint=self._blueprint or "",
            epochs_in_stage=m.epochs_in_stage,
            improvement=m.improvement_since_stage_start,
            activity=self._activity.ema,
            trainable=self.trainable(),
            alpha=self._alpha.alpha,
            alpha_target=self._alpha.target,
            alpha_mode=self._alpha.mode,
            counterfactual=m.counterfactual,
            nonfinite=self._health_issues,
        )

    # ---- reporting -------------------------------------------------------------------------------------

    def report(self) -> SlotReport:
        seed_count = 0 if self.seed is None else sum(p.numel() for p in self.seed.parameters())
        gate_count = 0 if self.gate_module is None else sum(p.numel() for p in self.gate_module.parameters())
        live = st.has_seed_module(self._stage)
        cf = self._metrics.counterfactual
        issues = self._health_issues + (("negative_contribution",) if cf is not None and cf < 0 else ())
        return SlotReport(
            slot_id=self.slot_id,
            topology=self.topology,
            dim=self.dim,
            stage=self._stage,
            previous_stage=self._previous_stage,
            ticks_in_stage=self._ticks_in_stage,
            seed_id=self._seed_id,
            blueprint=self._blueprint,
            options=tuple(sorted(self._options.items())),
            algorithm=self._algorithm if live else None,
            blending_progress=self._alpha.alpha,
            alpha_target=self._alpha.target,
            alpha_mode=self._alpha.mode,
            alpha_curve=self._alpha.curve,
            alpha_steps_done=self._alpha.steps_done,
            alpha_steps_total=self._alpha.steps_total,
            isolated=self.isolated if live else False,
            metrics=self._metrics,
            activity=self._activity.ema,
            trainable=self.trainable(),
            healthy=not issues,
            health_issues=issues,
            seed_param_count=seed_count,
            gate_param_count=gate_count,
            pending_prune=self._pending_prune is not None,
        )

    def state_checksum(self) -> Tensor:
        """A small float64 vector that differs when two replicas' lifecycles diverge."""
        a = self._alpha
        values = [
            float(self._stage.value),
            a.alpha,
            a.target,
            float(_MODE_CODE[a.mode]),
            float(a.steps_done),
            float(a.steps_total),
            float(_ALGO_CODE[self._algorithm]),
            float(self._ticks_in_stage),
            float(sum(p.numel() for p in self.seed_parameters())),
            float(self._pending_prune is not None),
        ]
        return torch.tensor(values, dtype=torch.float64)

    # ---- checkpoints (delegated to esper_core.state) ------------------------------------------------------

    def get_extra_state(self) -> Any:
        from esper_core.state import slot_text

        return slot_text(self)

    def set_extra_state(self, state: Any) -> None:
        from esper_core.state import restore_slot

        # Called by load_state_dict before the seed's tensors are copied; its post-hook
        # takes the activity meter's reference once they are in.
        restore_slot(self, state, take_reference=False)

    def extra_repr(self) -> str:
        return (
            f"slot_id={self.slot_id!r}, topology={self.topology!r}, dim={self.dim}, stage={self._stage.name}"
        )
