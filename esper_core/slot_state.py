"""A slot's lifecycle as one frozen, validated value, and the slot's configuration as another.

:class:`SlotState` is everything about a slot's lifecycle that a checkpoint must carry and
that two replicas must agree on: the stage, the previous stage, the clock, how many seeds
were germinated here, and, while a seed exists, its :class:`SeedState` (blueprint, resolved
options, blend algorithm, alpha schedule, metrics, activity, health, a pending prune, the
stages it went through). Its validators hold every invariant, so a value that exists is a
valid state: a DORMANT slot has no seed state, alpha lies in [0, 1] and agrees with the stage,
the history is bounded and made of legal transitions, and so on. States are built only by
:func:`esper_core.transition.transition` (and by the codec, from a checkpoint).

:class:`SlotConfig` is what the user chose when building the slot and what never changes
during its life (slot id, topology, width, gates, embargo, automatic advances, isolation,
activity decay, the largest seed accepted).

Every field is declared with its codec kind (:func:`esper_core._fields.entry`), so
:mod:`esper_core.codec` writes and reads these values without a second description of them.
Nothing here imports torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import attrs

from esper_core._checks import MAX_TEXT, check_bool, check_int, check_members, check_text, shown
from esper_core._fields import (
    BOOL,
    EnumOf,
    Float,
    Int,
    InvalidState,
    ListOf,
    Nullable,
    Record,
    ScalarMap,
    Str,
    entry,
)
from esper_core.alpha import ALPHA_TOLERANCE, AlphaCurve, AlphaMode, AlphaSchedule, BlendAlgorithm
from esper_core.errors import LifecycleError
from esper_core.gates import GateLevel, QualityGates
from esper_core.metrics import ActivityState, SeedMetrics, SlotReport, check_activity_decay
from esper_core.stages import LIVE, SeedStage, is_legal_transition, isolated_in

__all__ = [
    "AUTO_ADVANCE_GATES",
    "HISTORY_BOUND",
    "MAX_DIM",
    "MAX_SEED_PARAMS",
    "InvalidState",
    "PendingPrune",
    "Provenance",
    "SeedState",
    "SlotConfig",
    "SlotState",
    "slot_report",
]

_S = SeedStage
#: How many stage entries a seed's history keeps (oldest dropped first).
HISTORY_BOUND = 100
#: Widest slot accepted (feature axis size); larger widths are refused at construction.
MAX_DIM = 2**24
#: Default largest seed (parameters, blend gate included) a slot builds; see ``SlotConfig``.
MAX_SEED_PARAMS = 2**26
#: Gates ``step_epoch`` may pass automatically. G0 needs a blueprint choice and G5
#: (fossilization) is permanent, so both stay explicit.
AUTO_ADVANCE_GATES = frozenset({GateLevel.G1, GateLevel.G2, GateLevel.G3})

_NAME = r"[a-z][a-z0-9_]*"
_TEXT = r"(?s).*\S.*"
#: Stages in which the schedule rests at 0: nothing is blended in.
_AT_ZERO = frozenset({_S.GERMINATED, _S.TRAINING, _S.PRUNED, _S.EMBARGOED, _S.RESETTING})
#: Stages in which the schedule rests at full alpha.
_AT_ONE = frozenset({_S.HOLDING, _S.FOSSILIZED})


@attrs.frozen
class Provenance:
    """Which installed distribution registered a blueprint, and its version."""

    distribution: str = entry(Str(pattern=_TEXT, max_length=128))
    version: str = entry(Str(pattern=_TEXT, max_length=64))


@attrs.frozen
class PendingPrune:
    """Who scheduled the prune that completes when the down-ramp reaches 0, and why."""

    reason: str = entry(Str(pattern=_TEXT))
    initiator: str = entry(Str(pattern=_TEXT))


def _options(value: Mapping[str, Any] | tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    if type(value) is tuple and all(a[0] < b[0] for a, b in itertools.pairwise(value)):
        return value  # already sorted pairs (as the codec and the commands write them)
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted(items))


@attrs.frozen(kw_only=True)
class SeedState:
    """Everything about the seed of a non-DORMANT slot (its weights live in the modules)."""

    seed_id: str = entry(Str(pattern=_TEXT))
    blueprint: str = entry(Str(pattern=_NAME, max_length=64))
    options: tuple[tuple[str, Any], ...] = entry(ScalarMap(), converter=_options)
    """Resolved blueprint options (every declared option, defaults filled in), sorted by name."""
    provenance: Provenance | None = entry(Nullable(Record(Provenance)), default=None)
    algorithm: BlendAlgorithm = entry(EnumOf(BlendAlgorithm))
    ramp_epochs: int = entry(Int(1))
    """Length in epochs of the first alpha ramp (at BLENDING entry)."""
    curve: AlphaCurve = entry(EnumOf(AlphaCurve))
    germination_target: float = entry(Float(0.0, 1.0))
    """Where the first ramp stops, in (0, 1]."""
    schedule: AlphaSchedule = entry(Record(AlphaSchedule), factory=AlphaSchedule)
    metrics: SeedMetrics = entry(Record(SeedMetrics), factory=SeedMetrics)
    activity: ActivityState = entry(Record(ActivityState), factory=ActivityState)
    health_issues: tuple[str, ...] = entry(ListOf(Str(pattern=_NAME, max_length=64), 16), default=())
    """Sticky problems, e.g. ``"nonfinite_gradients"``: an unhealthy seed never passes a gate."""
    warned: tuple[str, ...] = entry(ListOf(Str(pattern=_NAME, max_length=64), 64), default=())
    """One-time warning codes already emitted for this seed (sorted)."""
    output_requires_grad: bool | None = entry(Nullable(BOOL), default=None)
    """Last observation of whether the seed's output requires grad (None: not seen yet)."""
    pending_prune: PendingPrune | None = entry(Nullable(Record(PendingPrune)), default=None)
    history: tuple[SeedStage, ...] = entry(ListOf(EnumOf(SeedStage, exclude=(0,)), HISTORY_BOUND))
    """The stages this seed entered, oldest first, at most :data:`HISTORY_BOUND`."""

    def __attrs_post_init__(self) -> None:
        if not 0.0 < self.germination_target <= 1.0:
            raise InvalidState("germination_target", f"got {self.germination_target}; accepted: (0, 1]")
        if not self.history or len(self.history) > HISTORY_BOUND:
            raise InvalidState(
                "history", f"{len(self.history)} entries; accepted: 1 to {HISTORY_BOUND} stages, oldest first"
            )
        if len(self.history) < HISTORY_BOUND and self.history[0] is not _S.GERMINATED:
            raise InvalidState(
                "history[0]",
                f"{self.history[0].name}; accepted: GERMINATED (every seed starts there; only a full "
                f"history of {HISTORY_BOUND} stages has dropped its oldest entries)",
            )
        for i, (a, b) in enumerate(itertools.pairwise(self.history)):
            if not is_legal_transition(a, b):
                raise InvalidState(f"history[{i + 1}]", f"{a.name} -> {b.name} is not a legal transition")
        if list(self.warned) != sorted(set(self.warned)):
            raise InvalidState("warned", f"got {list(self.warned)}; accepted: distinct codes, sorted")

    @property
    def options_dict(self) -> dict[str, Any]:
        """The resolved options as a plain dict."""
        return dict(self.options)


@attrs.frozen(kw_only=True)
class SlotState:
    """The whole lifecycle state of one slot. A fresh slot is ``SlotState()``: DORMANT, empty."""

    stage: SeedStage = entry(EnumOf(SeedStage, exclude=(0,)), default=_S.DORMANT)
    previous_stage: SeedStage = entry(EnumOf(SeedStage), default=_S.UNKNOWN)
    epochs_in_stage: int = entry(Int(), default=0)
    """``step_epoch`` calls since the stage was entered (the cooldown clock)."""
    germinations: int = entry(Int(), default=0)
    """Seeds germinated in this slot so far (default seed ids count them)."""
    seed: SeedState | None = entry(Nullable(Record(SeedState)), default=None)

    def __attrs_post_init__(self) -> None:
        stage, seed = self.stage, self.seed
        if not is_legal_transition(self.previous_stage, stage):
            legal = sorted(p.name for p in _S if is_legal_transition(p, stage))
            raise InvalidState(
                "previous_stage", f"{self.previous_stage.name} cannot precede {stage.name}; accepted: {legal}"
            )
        if (seed is None) != (stage is _S.DORMANT):
            want = (
                "None (the slot is DORMANT)" if stage is _S.DORMANT else f"a seed state (stage {stage.name})"
            )
            raise InvalidState("seed", f"got {type(seed).__name__}; accepted: {want}")
        if seed is None:
            return
        if self.germinations < 1:
            raise InvalidState("germinations", f"got {self.germinations} with a seed present; accepted: >= 1")
        if seed.history[-1] is not stage:
            raise InvalidState(
                "seed.history",
                f"last entry {seed.history[-1].name}; accepted: the current stage {stage.name}",
            )
        _check_alpha(stage, seed.schedule)
        pending = seed.pending_prune
        a = seed.schedule
        if pending is not None and (
            stage is not _S.BLENDING or a.mode is not AlphaMode.DOWN or a.target != 0.0
        ):
            raise InvalidState(
                "seed.pending_prune",
                "a scheduled prune exists only while BLENDING down to 0; "
                f"got stage {stage.name}, mode {a.mode.value!r}, target {a.target}",
            )

    # ---- derived views (what a slot reports; "no seed" has a value for each) ----------------------

    @property
    def schedule(self) -> AlphaSchedule:
        """The seed's alpha schedule (at rest at 0 without a seed)."""
        return _AT_REST if self.seed is None else self.seed.schedule

    @property
    def alpha(self) -> float:
        """The schedule's current alpha (0 without a seed)."""
        return self.schedule.alpha

    @property
    def metrics(self) -> SeedMetrics:
        """The seed's measurements (empty without a seed)."""
        return _NO_METRICS if self.seed is None else self.seed.metrics

    @property
    def seed_id(self) -> str | None:
        """The seed's id, or None."""
        return None if self.seed is None else self.seed.seed_id

    @property
    def blueprint(self) -> str | None:
        """The seed's blueprint name, or None."""
        return None if self.seed is None else self.seed.blueprint

    @property
    def algorithm(self) -> BlendAlgorithm:
        """The blend algorithm (ADD without a seed)."""
        return BlendAlgorithm.ADD if self.seed is None else self.seed.algorithm

    @property
    def healthy(self) -> bool:
        """No sticky health issue and no negative measured contribution."""
        if self.seed is None:
            return True
        cf = self.seed.metrics.counterfactual
        return not self.seed.health_issues and (cf is None or cf >= 0.0)


_AT_REST = AlphaSchedule()
_NO_METRICS = SeedMetrics()


def _check_alpha(stage: SeedStage, a: AlphaSchedule) -> None:
    if stage in _AT_ZERO and not (a.at_rest and a.alpha == 0.0):
        raise InvalidState(
            "seed.schedule",
            f"in {stage.name} nothing is blended in; accepted: mode 'hold' at alpha 0.0, "
            f"got mode {a.mode.value!r} at alpha {a.alpha}",
        )
    if stage in _AT_ONE and not (a.at_rest and a.alpha >= 1.0 - ALPHA_TOLERANCE):
        raise InvalidState(
            "seed.schedule",
            f"{stage.name} holds full alpha; accepted: mode 'hold' at alpha 1.0, "
            f"got mode {a.mode.value!r} at alpha {a.alpha}",
        )


def _auto_advance(value: object) -> frozenset[GateLevel]:
    # Members must be GateLevel values themselves: GateLevel is an IntEnum, so a plain 1
    # would otherwise pass the subset test and sit in the config as an int.
    accepted = f"GateLevel among {sorted(g.name for g in AUTO_ADVANCE_GATES)}"
    gates = frozenset(check_members("auto_advance", value, GateLevel, accepted=accepted))
    if not gates <= AUTO_ADVANCE_GATES:
        raise LifecycleError(f"auto_advance must be a collection of {accepted}, got {shown(value)}")
    return gates


def _gates(_instance: object, _attribute: object, value: object) -> None:
    if not isinstance(value, QualityGates):
        raise LifecycleError(f"gates must be a QualityGates, got {shown(value)} ({type(value).__name__})")


@attrs.frozen(kw_only=True)
class SlotConfig:
    """What a slot is, fixed for its whole life. Built by :class:`~esper_core.slot.SeedSlot`.

    ``embargo_epochs``: ``step_epoch`` calls a pruned slot stays EMBARGOED (int >= 1).
    ``auto_advance``: gates among G1, G2, G3 that ``step_epoch`` tries on its own.
    ``isolate_blending``: keep the seed input isolated from the host while BLENDING.
    ``activity_decay``: weight of the previous activity EMA value, in [0, 1).
    ``max_seed_params``: the largest seed (parameters, blend gate included) germination
    builds; a larger blueprint or option choice is refused before anything is allocated
    (raise it for genuinely large seeds). Every argument is checked; a bad one raises
    :class:`~esper_core.errors.LifecycleError` naming it.
    """

    slot_id: str = attrs.field(converter=lambda v: check_text("slot_id", v, max_length=MAX_TEXT // 2))
    topology: str = attrs.field(converter=lambda v: check_text("topology", v, max_length=64))
    dim: int = attrs.field(converter=lambda v: check_int("dim", v, minimum=1, maximum=MAX_DIM))
    gates: QualityGates = attrs.field(validator=_gates)
    embargo_epochs: int = attrs.field(
        default=5, converter=lambda v: check_int("embargo_epochs", v, minimum=1)
    )
    auto_advance: frozenset[GateLevel] = attrs.field(default=frozenset(), converter=_auto_advance)
    isolate_blending: bool = attrs.field(default=True, converter=lambda v: check_bool("isolate_blending", v))
    activity_decay: float = attrs.field(default=0.5, converter=check_activity_decay)
    max_seed_params: int = attrs.field(
        default=MAX_SEED_PARAMS,
        converter=lambda v: check_int("max_seed_params", v, minimum=1, maximum=2**53),
    )

    def reconfigured(self, **changes: Any) -> SlotConfig:
        """This configuration with ``changes``, each checked like the constructor's.

        The identity (``slot_id``, ``topology``, ``dim``) cannot change; an unknown setting or
        a bad value raises :class:`~esper_core.errors.LifecycleError` naming it.
        """
        fixed = sorted({"slot_id", "topology", "dim"} & set(changes))
        if fixed:
            raise LifecycleError(f"reconfigure cannot change {fixed}: they are the slot's identity")
        known = [f.name for f in attrs.fields(SlotConfig)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise LifecycleError(f"reconfigure got unknown setting(s) {unknown}; accepted: {known[3:]}")
        return attrs.evolve(self, **changes)


def slot_report(
    config: SlotConfig,
    state: SlotState,
    *,
    seed_params: int,
    gate_params: int,
    trainable: bool,
    last_gate: str | None = None,
) -> SlotReport:
    """The :class:`SlotReport` of a slot in ``state`` (parameter counts and trainability measured by the slot)."""
    seed = state.seed
    live = state.stage in LIVE
    a = AlphaSchedule() if seed is None else seed.schedule
    m = SeedMetrics() if seed is None else seed.metrics
    issues = () if seed is None else seed.health_issues
    issues += ("negative_contribution",) if m.counterfactual is not None and m.counterfactual < 0 else ()
    return SlotReport(
        slot_id=config.slot_id,
        topology=config.topology,
        dim=config.dim,
        stage=state.stage,
        previous_stage=state.previous_stage,
        epochs_in_stage=state.epochs_in_stage,
        seed_id=None if seed is None else seed.seed_id,
        blueprint=None if seed is None else seed.blueprint,
        options=() if seed is None else seed.options,
        algorithm=seed.algorithm if live and seed is not None else None,
        alpha=a.alpha,
        alpha_target=a.target,
        alpha_mode=a.mode,
        alpha_curve=a.curve,
        alpha_epochs_done=a.epochs_done,
        alpha_epochs_total=a.epochs_total,
        isolated=live and isolated_in(state.stage, isolate_blending=config.isolate_blending),
        metrics=m,
        activity=None if seed is None else seed.activity.ema,
        trainable=trainable,
        healthy=not issues,
        health_issues=issues,
        seed_param_count=seed_params,
        gate_param_count=gate_params,
        pending_prune=seed is not None and seed.pending_prune is not None,
        warnings=() if seed is None else seed.warned,
        last_gate=last_gate if seed is not None else None,
    )
