"""A heuristic controller that drives seed lifecycles from validation metrics.

Once per epoch, after validation, :meth:`HeuristicController.step` records the epoch's
score and each seed's counterfactual contribution in the slots, then decides:

* **prune** a seed whose measured contribution stayed below ``prune_below`` for
  ``prune_patience`` measurements, or that sat in one stage longer than ``max_stage_epochs``;
* **advance** a seed whose next quality gate passes (the gates, not the controller, say
  when; HOLDING -> FOSSILIZED is judged by G5);
* **germinate**, when the score has plateaued, the affordable (slot, blueprint) candidate
  that the configured selection strategy ranks first (see :func:`rank_candidates`). Costs
  are exact (the registry's closed-form counts for candidates, ``numel`` for seeds that
  exist), and the budget counts every seed that holds a module.

Two selection strategies (``ControllerConfig.strategy``):

* ``"gain_per_param"`` (default): every blueprint family is tried once before any is
  repeated, largest affordable candidate first (with no measurement yet, equal gain per
  parameter is assumed, so more parameters promise more gain); after that, families are
  ranked by the gain per parameter their finished seeds measured (the counterfactual
  contribution the gates judged, in pp, divided by the seed's parameters), and a family
  whose seeds measured no gain is not germinated again.
* ``"cheapest"``: the cheapest affordable candidate, at the slot where it is cheapest.

Then it ticks every slot's epoch clock. Every threshold lives in :class:`ControllerConfig`.

**Blueprints that fail.** A candidate whose germination fails because of the blueprint (G0
refuses it, its factory raises, it rejects its own default options: see
``esper_core._control_refusal``) does not end :meth:`~HeuristicController.step`: the
controller records a :class:`Refusal` (in ``refusals``, and a ``"germination_refused"``
:class:`Decision`) and, in the same step, tries the next candidate, since the plateau that
asked for a seed is still there and a refusal trained nothing. That (slot, blueprint) pair is
not offered again; the blueprint stays a candidate at other slots, because G0's evidence is
per slot (a different dim, dtype or layout can pass) and re-checking costs one build and
probe, not an epoch. (A blueprint whose ``validate`` or ``param_count`` crashes is never a
candidate: the registry leaves it out of listings with a
:class:`~esper_core.errors.PluginLoadWarning`.) Any other error (a bad argument, a library
bug, a broken blueprint under ``ESPER_STRICT_PLUGINS=1``) still propagates. Under a
``DistributedLifecycle`` every rank refuses the same candidates: G0's verdict is rank 0's,
and builds run under the same seeded RNG on every rank.

**Where decisions go.** By default the controller calls the slots' own verbs. Under
``torch.distributed`` pass ``lifecycle=DistributedLifecycle(model)``: every germination,
advance, prune and tick then goes through it, so rank 0 decides and every rank applies the
same command. The controllers of all ranks must then make the same calls, which they do
when they see the same evaluation (average it over ranks with
:func:`esper_core.distributed.reduce_evaluation`); a rank that still calls something else is
stopped with a :class:`~esper_core.errors.DistributedError` naming both calls.

**Checkpoints.** :meth:`HeuristicController.state_dict` is the controller's memory as plain
data (:mod:`esper_core._control_state`); save it with the model, and a resumed run decides as
an uninterrupted one.

Layout: :class:`ControllerConfig` is defined in ``esper_core._control_config`` and the pure
selection logic (:data:`STRATEGIES`, :func:`plateaued`, :class:`Candidate`, :class:`Outcome`,
:func:`rank_candidates`) in ``esper_core._control_selection``; :func:`lifecycle_timing` (how
many epochs a seed's probation takes at least) in ``esper_core._control_timing``; import
every name from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from torch import nn

from esper_core._checks import check_bool, check_int, shown
from esper_core._control_config import ControllerConfig
from esper_core._control_refusal import BLUEPRINT_FAULTS, Refusal, refusal_reason
from esper_core._control_selection import STRATEGIES, Candidate, Outcome, plateaued, rank_candidates
from esper_core._control_state import STATE_VERSION, parse_state
from esper_core._control_timing import LifecycleTiming, lifecycle_timing
from esper_core.errors import LifecycleError
from esper_core.gates import GateResult
from esper_core.hosts.base import HostError
from esper_core.model import Evaluation, live_stages
from esper_core.registry import list_blueprints
from esper_core.slot import SeedSlot
from esper_core.stages import PROBATION, SeedStage

__all__ = [
    "STRATEGIES",
    "Candidate",
    "ControllerConfig",
    "Decision",
    "HeuristicController",
    "LifecycleTiming",
    "Outcome",
    "Refusal",
    "SlotVerbs",
    "lifecycle_timing",
    "plateaued",
    "rank_candidates",
]

# Public where users import them (reprs, pickles and docs name esper_core.control).
for _cls in (ControllerConfig, Candidate, Outcome, Refusal, LifecycleTiming):
    _cls.__module__ = __name__


@attrs.frozen
class Decision:
    """One thing the controller did in an epoch."""

    epoch: int
    slot_id: str
    action: str  # "germinate" | "germination_refused" | "advance" | "prune"
    detail: str


@attrs.define
class _SlotMemory:
    stage: SeedStage = SeedStage.DORMANT
    age: int = 0
    below: int = 0
    blueprint: str | None = None  # the seed on probation, until its outcome is recorded
    params: int = 0
    contribution: float | None = None  # last measured


class SlotVerbs:
    """The default lifecycle of a controller: the slots' own verbs, in this process (wrap it
    to act around them, as ``esper demo`` does to order its event lines)."""

    def __init__(self, slots: Mapping[str, SeedSlot]) -> None:
        self.slots = slots

    def germinate(self, slot_id: str, blueprint: str, **kwargs: Any) -> None:
        self.slots[slot_id].germinate(blueprint, **kwargs)

    def advance(self, slot_id: str) -> GateResult:
        return self.slots[slot_id].advance()

    def prune(self, slot_id: str, reason: str, initiator: str) -> None:
        self.slots[slot_id].prune(reason, initiator)

    def step_epoch(self) -> None:
        for slot in self.slots.values():
            slot.step_epoch()


_VERBS = ("germinate", "advance", "prune", "step_epoch")


class HeuristicController:
    """Drives the lifecycle of ``slots`` (slot id -> SeedSlot, in execution order).

    ``lifecycle`` receives the decisions: ``None`` calls the slots directly; under
    ``torch.distributed`` pass a :class:`~esper_core.distributed.DistributedLifecycle` over
    the same slots (any object with ``germinate(slot_id, blueprint, **kw)``,
    ``advance(slot_id)``, ``prune(slot_id, reason, initiator)`` and ``step_epoch()`` works).
    Raises :class:`~esper_core.errors.HostError` for a bad ``config``, a ``lifecycle``
    without those methods, or one whose ``slot_ids`` are not the controller's slots.
    """

    def __init__(
        self, slots: Mapping[str, SeedSlot], config: ControllerConfig, *, lifecycle: object | None = None
    ) -> None:
        if not isinstance(config, ControllerConfig):
            raise HostError(f"config must be a ControllerConfig, got {type(config).__name__}")
        if not isinstance(slots, Mapping | nn.ModuleDict) or not all(
            isinstance(k, str) and isinstance(v, SeedSlot) for k, v in slots.items()
        ):
            raise HostError(
                f"slots must be a mapping (or ModuleDict) slot id -> SeedSlot, got {shown(slots)}"
            )
        self.slots = dict(slots.items())
        if lifecycle is not None:
            missing = [verb for verb in _VERBS if not callable(getattr(lifecycle, verb, None))]
            if missing:
                raise HostError(
                    f"lifecycle must have the methods {list(_VERBS)} (a DistributedLifecycle, say); "
                    f"{type(lifecycle).__name__} lacks {missing}"
                )
            ids = getattr(lifecycle, "slot_ids", None)
            if ids is not None and set(ids) != set(self.slots):
                raise HostError(
                    f"lifecycle drives slots {sorted(ids)} but the controller's slots are "
                    f"{sorted(self.slots)}; build both over the same model"
                )
        self.lifecycle = SlotVerbs(self.slots) if lifecycle is None else lifecycle
        self.config = config
        self.history: list[float] = []
        self.decisions: list[Decision] = []
        self.outcomes: list[Outcome] = []
        """Finished seeds (fossilized or pruned), in the order they finished."""
        self.refusals: list[Refusal] = []
        """Candidates whose germination the blueprint made fail, oldest first (never retried)."""
        self._memory = {s: _SlotMemory() for s in self.slots}
        self._tried: set[tuple[str, str]] = set()
        self._quiet_until = 0

    def seed_params(self) -> int:
        """Exact parameters of every seed that holds a module (the rent being paid)."""
        return sum(
            sum(p.numel() for p in slot.seed_parameters())
            for slot in self.slots.values()
            if slot.stage in live_stages()
        )

    def step(self, evaluation: Evaluation, epoch: int, *, tick: bool = True) -> list[Decision]:
        """Record ``evaluation``, act, then (``tick``) call ``step_epoch`` on every slot.

        The arguments are checked before anything is recorded (:class:`HostError`). A
        candidate the blueprint makes fail is refused and the next one tried (see the module
        doc); every other error of a lifecycle call propagates.
        """
        if not isinstance(evaluation, Evaluation):
            raise HostError(f"evaluation must be an Evaluation, got {shown(evaluation)}")
        epoch = check_int("epoch", epoch, error=HostError)
        tick = check_bool("tick", tick, error=HostError)
        self.history.append(evaluation.score)
        decisions: list[Decision] = []
        for slot_id, slot in self.slots.items():
            if slot.stage not in live_stages():
                continue
            slot.record_accuracy(evaluation.score)
            if slot_id in evaluation.contributions:
                slot.record_counterfactual(evaluation.contributions[slot_id])
                self._memory[slot_id].contribution = evaluation.contributions[slot_id]
        for slot_id, slot in self.slots.items():
            memory = self._memory[slot_id]
            self._note_outcome(slot_id, slot, epoch)  # e.g. pruned by the governor since last epoch
            if slot.stage != memory.stage:
                memory.stage, memory.age = slot.stage, 0
            memory.age += 1
            if slot.stage in PROBATION:
                decision = self._review(slot_id, slot, evaluation, epoch)
                if decision is not None:
                    decisions.append(decision)
                self._note_outcome(slot_id, slot, epoch)
        decisions.extend(self._maybe_germinate(epoch))
        if tick:
            self.lifecycle.step_epoch()
        self.decisions.extend(decisions)
        return decisions

    def _review(self, slot_id: str, slot: SeedSlot, evaluation: Evaluation, epoch: int) -> Decision | None:
        cfg, memory = self.config, self._memory[slot_id]
        contribution = evaluation.contributions.get(slot_id)
        if contribution is not None:
            memory.below = memory.below + 1 if contribution < cfg.prune_below else 0
            if memory.below >= cfg.prune_patience:
                reason = f"counterfactual contribution {contribution:+.2f} pp below {cfg.prune_below:+.2f} pp"
                return self._prune(slot_id, slot, reason, epoch)
        if memory.age > cfg.max_stage_epochs:
            reason = f"stalled: {memory.age - 1} epochs in {slot.stage.name} (limit {cfg.max_stage_epochs})"
            return self._prune(slot_id, slot, reason, epoch)
        result = slot.evaluate()
        if not result.passed:
            return None
        before = slot.stage
        result = self.lifecycle.advance(slot_id)
        if not result.passed or slot.stage == before:
            return None
        return Decision(epoch, slot_id, "advance", f"{before.name} -> {slot.stage.name}")

    def _note_outcome(self, slot_id: str, slot: SeedSlot, epoch: int) -> None:
        """Record the outcome of the seed this controller germinated once it left probation."""
        memory = self._memory[slot_id]
        if memory.blueprint is None or slot.stage in PROBATION:
            return
        fate = "fossilized" if slot.stage == SeedStage.FOSSILIZED else "pruned"
        contribution = 0.0 if memory.contribution is None else memory.contribution
        self.outcomes.append(Outcome(slot_id, memory.blueprint, memory.params, contribution, fate, epoch))
        memory.blueprint, memory.params, memory.contribution = None, 0, None

    def _prune(self, slot_id: str, slot: SeedSlot, reason: str, epoch: int) -> Decision | None:
        try:
            self.lifecycle.prune(slot_id, reason, "controller")
        except LifecycleError:
            return None
        self._memory[slot_id].below = 0
        return Decision(epoch, slot_id, "prune", reason)

    def candidates(self) -> list[Candidate]:
        """Affordable candidates at dormant slots, best first by the configured strategy.

        A (slot, blueprint) pair germinated or refused before is not offered again, nor one
        larger than the slot's ``max_seed_params`` (the slot would refuse it).
        """
        cfg = self.config
        left = cfg.param_budget - self.seed_params()
        refused = {(r.slot_id, r.blueprint) for r in self.refusals}
        options = []
        for order, (slot_id, slot) in enumerate(self.slots.items()):
            if slot.stage != SeedStage.DORMANT:
                continue
            for spec in list_blueprints(slot.topology, dim=slot.dim):
                if spec.name in cfg.exclude or (cfg.include is not None and spec.name not in cfg.include):
                    continue
                if (slot_id, spec.name) in self._tried or (slot_id, spec.name) in refused:
                    continue
                try:
                    cost = spec.count_params(slot.dim)
                except ValueError:  # not buildable at this dim (for example heads do not divide it)
                    continue
                if cost <= min(left, slot.config.max_seed_params):
                    options.append(Candidate(cost, order, slot_id, spec.name))
        return rank_candidates(options, cfg.strategy, self.outcomes)

    def _maybe_germinate(self, epoch: int) -> list[Decision]:
        """Germinate the best candidate; each one the blueprint makes fail is refused and the next tried."""
        cfg = self.config
        if len(self.history) < max(cfg.warmup_epochs, 1) or len(self.history) < self._quiet_until:
            return []
        if sum(slot.stage in PROBATION for slot in self.slots.values()) >= cfg.max_concurrent:
            return []
        if not plateaued(self.history, cfg.plateau_window, cfg.plateau_min_delta):
            return []
        decisions: list[Decision] = []
        for choice in self.candidates():
            try:
                self.lifecycle.germinate(
                    choice.slot_id,
                    choice.blueprint,
                    seed_id=f"{choice.slot_id}-{choice.blueprint}-e{epoch}",
                    algorithm=cfg.algorithm,
                    ramp_epochs=cfg.ramp_epochs,
                )
            except BLUEPRINT_FAULTS as exc:
                decisions.append(self._refuse(choice.slot_id, choice.blueprint, exc, epoch))
                continue
            return [*decisions, self._germinated(choice, epoch)]
        return decisions

    def _refuse(self, slot_id: str, blueprint: str, error: BaseException, epoch: int) -> Decision:
        reason = refusal_reason(error)
        self.refusals.append(Refusal(slot_id, blueprint, reason, epoch))
        detail = f"{blueprint} at slot {slot_id!r} refused, not offered there again: {reason}"
        return Decision(epoch, slot_id, "germination_refused", detail)

    def _germinated(self, choice: Candidate, epoch: int) -> Decision:
        cfg, slot_id, blueprint = self.config, choice.slot_id, choice.blueprint
        self._tried.add((slot_id, blueprint))
        memory = self._memory[slot_id]
        memory.blueprint, memory.params, memory.contribution = blueprint, choice.cost, None
        # A fresh seed needs time before the next plateau can be judged.
        self._quiet_until = len(self.history) + cfg.plateau_window
        return Decision(
            epoch, slot_id, "germinate", f"{blueprint} ({choice.cost} params; {self._why(choice)})"
        )

    def _why(self, choice: Candidate) -> str:
        if self.config.strategy == "cheapest":
            return "cheapest affordable"
        gains = [o.gain_per_param for o in self.outcomes if o.blueprint == choice.blueprint]
        if not gains:
            return "untried family, largest affordable"
        return f"measured {1000 * sum(gains) / len(gains):+.2f} pp per 1k params"

    # ---- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The controller's memory as plain data (format: :mod:`esper_core._control_state`).

        Save it next to ``model.state_dict()``; :meth:`load_state_dict` on a controller built
        with the same slots and config makes a resumed run decide as an uninterrupted one.
        """
        return {
            "version": STATE_VERSION,
            "history": list(self.history),
            "decisions": [attrs.asdict(d) for d in self.decisions],
            "outcomes": [attrs.asdict(o) for o in self.outcomes],
            "memory": {
                slot_id: {**attrs.asdict(m), "stage": m.stage.name} for slot_id, m in self._memory.items()
            },
            "tried": sorted([slot_id, blueprint] for slot_id, blueprint in self._tried),
            "refusals": [attrs.asdict(r) for r in self.refusals],
            "quiet_until": self._quiet_until,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; all checked first.

        Raises :class:`~esper_core.errors.CheckpointError` naming the bad field (an unknown
        slot, a missing key, a wrong type, a version this library does not read), with the
        controller unchanged.
        """
        parsed = parse_state(state, list(self.slots))
        self.history = parsed["history"]
        self.decisions = [Decision(**d) for d in parsed["decisions"]]
        self.outcomes = [Outcome(**o) for o in parsed["outcomes"]]
        self._memory = {slot_id: _SlotMemory(**m) for slot_id, m in parsed["memory"].items()}
        self._tried = parsed["tried"]
        self.refusals = [Refusal(**r) for r in parsed["refusals"]]
        self._quiet_until = parsed["quiet_until"]
