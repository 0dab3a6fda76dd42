"""Rank 0 decides every lifecycle mutation; every rank applies the identical command.

Under DDP every rank must hold the same architecture at every step, or the gradient
buckets stop matching. Letting each rank run its own gates does not guarantee that: each
rank validates on its own data shard, so a gate can pass on one rank and fail on another.
:class:`DistributedLifecycle` therefore turns the lifecycle into a command stream:

* Every mutation (germinate, advance, prune, schedule_prune, set_alpha_target) is a
  collective call. Rank 0 builds the :mod:`command value <esper_core.commands>`, the one
  codec writes it (JSON bytes, no pickle), it is broadcast on the group's own backend as
  a ``uint8`` tensor, decoded and applied on every rank, rank 0 included, so all ranks
  apply identical commands: whatever a command expresses locally, it expresses here.
  A germination is also confirmed by every rank (it needs the blueprint in each rank's own
  registry) before any rank builds anything.
* Every gate decision, including the auto-advance inside ``step_epoch``, goes through the
  slot's ``decider`` hook, which this class installs: rank 0's local verdict is broadcast
  and every rank commits it.
* Anything random while applying a command (a seed's initial weights, a new gate module)
  runs under a forked RNG seeded identically on every rank, so parameters that appear
  after ``DistributedDataParallel`` was built start identical everywhere.
* ``step_epoch`` ends with an all-reduce of per-slot fingerprints; a slot whose stage,
  alpha, parameter count or parameter values differ between ranks raises
  :class:`~esper_core.errors.DistributedError` naming the slot.
* Each call starts with a handshake, and every collective has a deadline, so a rank that
  makes a lifecycle call alone gets an error instead of a deadlock.
"""

from __future__ import annotations

import contextlib
import datetime
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from esper_core.alpha import AlphaCurve, BlendAlgorithm
from esper_core.commands import (
    Advance,
    Germinate,
    Prune,
    SchedulePrune,
    SetAlphaTarget,
)
from esper_core.distributed.checksum import FINGERPRINT_FIELDS, find_drift, slot_fingerprint
from esper_core.distributed.stream import CallOp, CommandStream
from esper_core.errors import (
    CheckpointError,
    DistributedError,
    EsperError,
    GerminationRefusedError,
    LifecycleError,
)
from esper_core.gates import GateResult
from esper_core.stages import SeedStage
from esper_core.telemetry import (
    AlphaTargetSet,
    PruneScheduled,
    SeedEvent,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    StageChanged,
)

__all__ = ["DEFAULT_TIMEOUT", "DistributedLifecycle"]

#: Default deadline of each lifecycle collective, in seconds (NCCL's own default). It must
#: cover the longest stretch one rank may spend elsewhere before its next lifecycle call
#: (a checkpoint written by rank 0 only, say); calls made on one rank alone are usually
#: caught at once by the handshake, and only wait this long when the peers make no
#: lifecycle call at all.
DEFAULT_TIMEOUT = 600.0

_GOLDEN = 0x9E3779B97F4A7C15
# Events that mean "the lifecycle changed"; seen outside a lifecycle call, they reveal a bypass.
_MUTATIONS = (SeedGerminated, StageChanged, AlphaTargetSet, PruneScheduled, SeedFossilized, SeedPruned)


def _collect_slots(model_or_slots: object) -> dict[str, Any]:
    """slot_id -> slot from a model with ``.slots``, a mapping, a module tree or an iterable."""
    found: dict[str, Any] = {}
    if isinstance(getattr(model_or_slots, "slots", None), Mapping):
        found = dict(model_or_slots.slots.items())
    elif isinstance(model_or_slots, Mapping):
        found = dict(model_or_slots.items())
    elif isinstance(model_or_slots, nn.Module):
        from esper_core.slot import SeedSlot

        found = {m.slot_id: m for m in model_or_slots.modules() if isinstance(m, SeedSlot)}
    elif isinstance(model_or_slots, Iterable):
        found = {s.slot_id: s for s in model_or_slots}
    else:
        raise DistributedError(
            f"expected a model with .slots, a mapping of slot_id -> slot, a module or an iterable of slots; "
            f"got {type(model_or_slots).__name__}"
        )
    if not found:
        raise DistributedError(f"no seed slots found in {type(model_or_slots).__name__}")
    return dict(sorted(found.items()))


class DistributedLifecycle:
    """The lifecycle of a set of slots, driven identically on every rank of a process group.

    Construction and every method are collective: all ranks of ``group`` must call them
    in the same order. Arguments are taken from rank 0; what the other ranks pass is
    ignored. Without ``group``, construction makes a private group of all ranks on the
    default backend, so lifecycle traffic never mixes with training collectives.
    ``timeout`` (seconds or a timedelta) bounds every collective. ``check_parameters``
    adds each seed's parameter values to the per-epoch drift fingerprint; keep it on under
    DDP, where replicas are bit-identical, and turn it off when ranks train their own
    weights and share only the lifecycle.

    Without an initialised process group it runs locally with the same semantics, so a
    training script needs no separate single-process path.
    """

    def __init__(
        self,
        model_or_slots: object,
        group: dist.ProcessGroup | None = None,
        timeout: float | datetime.timedelta = DEFAULT_TIMEOUT,
        *,
        check_parameters: bool = True,
        check_every_epoch: bool = True,
    ) -> None:
        self._slots = _collect_slots(model_or_slots)
        self._ids = list(self._slots)
        self._index = {slot_id: i for i, slot_id in enumerate(self._ids)}
        self._stream = CommandStream(group, timeout)
        self.check_parameters = check_parameters
        self.check_every_epoch = check_every_epoch
        #: Gate decisions in which this rank's own verdict differed from rank 0's.
        self.overruled = 0
        self._previous_deciders = {slot_id: slot.decider for slot_id, slot in self._slots.items()}
        self._rng_devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        self._base_seed = self._stream.setup(self._ids, self._config_crc())
        self._inside = 0
        self._outside: dict[str, list[str]] = {slot_id: [] for slot_id in self._ids}
        self._watchers: dict[str, Callable[[SeedEvent], None]] = {}
        for slot_id, slot in self._slots.items():
            slot.decider = self._decide
            if hasattr(slot, "add_observer"):
                self._watchers[slot_id] = self._watcher(slot_id)
                slot.add_observer(self._watchers[slot_id])

    # ------------------------------------------------------------------ properties

    @property
    def rank(self) -> int:
        """This process's rank in the group (0 without a process group)."""
        return self._stream.channel.rank

    @property
    def world_size(self) -> int:
        return self._stream.channel.world_size

    @property
    def is_leader(self) -> bool:
        """Whether this rank makes the decisions (rank 0)."""
        return self._stream.channel.rank == 0

    @property
    def slot_ids(self) -> tuple[str, ...]:
        return tuple(self._ids)

    def close(self) -> None:
        """Give the slots their previous deciders back and stop watching them (not collective)."""
        for slot_id, slot in self._slots.items():
            if slot.decider == self._decide:
                slot.decider = self._previous_deciders[slot_id]
            watcher = self._watchers.pop(slot_id, None)
            if watcher is not None:
                slot.remove_observer(watcher)

    def state_dict(self) -> dict[str, int]:
        """Where the command stream stands, for a checkpoint: plain ints (``weights_only``-safe).

        ``{"version": 1, "calls": n, "base_seed": s}``: the number of lifecycle calls made so
        far and the base of the RNG seeds that germinations and new blend gates are built
        under (each call's seed derives from both). Restored with :meth:`load_state_dict`, a
        resumed run builds the same seed weights at the same calls as an uninterrupted one.
        Not collective.
        """
        return {"version": 1, "calls": self._stream.seq, "base_seed": self._base_seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the command stream of :meth:`state_dict` (call it on every rank, same state).

        Not collective: every rank reads the same checkpoint. A rank that loads another
        state is caught at the next call (its call number differs: "ranks are in different
        lifecycle calls") or by the drift check. Raises :class:`CheckpointError` naming the
        field, with nothing changed.
        """
        if not isinstance(state, Mapping) or set(state) != {"version", "calls", "base_seed"}:
            raise CheckpointError(
                f"lifecycle state must be a dict with the keys ['version', 'calls', 'base_seed'], got {state!r:.120}"
            )
        bounds = {"version": (1, 1), "calls": (0, 2**62), "base_seed": (0, 2**63 - 1)}
        for key, (low, high) in bounds.items():
            value = state[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise CheckpointError(
                    f"lifecycle state field {key!r}: got {value!r:.60}; accepted: an int in [{low}, {high}]"
                )
        self._stream.seq = state["calls"]
        self._base_seed = state["base_seed"]

    def __enter__(self) -> DistributedLifecycle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ setup

    def _config_crc(self) -> int:
        parts = []
        for slot_id, slot in self._slots.items():
            topology = getattr(slot, "topology", "")
            parts.append(f"{slot_id}|{getattr(topology, 'name', topology)}|{getattr(slot, 'dim', '')}")
        return zlib.crc32(";".join(parts).encode("utf-8"))

    @contextlib.contextmanager
    def _driving(self, seq: int, salt: int = 0) -> Iterator[None]:
        """The context every slot mutation runs in.

        The RNG is forked and seeded identically on every rank, so whatever a command
        creates (seed weights, a gate module) is identical everywhere while each rank's
        own RNG stream is untouched; and the bypass watcher knows the change is ours.
        """
        seed = (self._base_seed + seq * _GOLDEN + salt * 0x2545F4914F6CDD1D) % 2**63
        self._inside += 1
        try:
            with torch.random.fork_rng(devices=self._rng_devices):
                torch.manual_seed(seed)
                yield
        finally:
            self._inside -= 1

    def _watcher(self, slot_id: str) -> Callable[[SeedEvent], None]:
        def watch(event: SeedEvent) -> None:
            if self._inside == 0 and isinstance(event, _MUTATIONS):
                self._outside[slot_id].append(type(event).__name__)

        return watch

    # ------------------------------------------------------------------ the command path

    def _slot_index(self, slot_id: str) -> int:
        if slot_id not in self._index:
            raise LifecycleError(f"unknown slot {slot_id!r}; slots: {self._ids}")
        return self._index[slot_id]

    def _call(self, op: CallOp, slot_id: str, build: Callable[[], object]) -> Any:
        """One collective mutation: rank 0's command for rank 0's slot, applied on every rank."""

        def issue() -> tuple[int, object]:
            index = self._slot_index(slot_id)
            return index, self._slots[self._ids[index]].prepare(build())

        index, command = self._stream.issue(op, issue)
        if not 0 <= index < len(self._ids):
            raise DistributedError(f"rank 0 sent slot index {index}; this rank has {len(self._ids)} slots")
        slot = self._slots[self._ids[index]]
        if op is CallOp.GERMINATE:  # needs this rank's own registry: every rank must confirm
            failure: EsperError | None = None
            try:
                command = slot.prepare(command)
            except EsperError as exc:
                failure = exc
            try:
                self._stream.confirm(failure is None)
            except DistributedError:
                if failure is not None:
                    raise failure from None
                raise
        with self._driving(self._stream.seq):
            return slot.apply(command)

    # ------------------------------------------------------------------ public mutations

    def germinate(self, slot_id: str, blueprint: str, **arguments: Any) -> None:
        """Germinate rank 0's choice of blueprint in rank 0's choice of slot, on every rank.

        ``arguments`` are those of :meth:`SeedSlot.germinate <esper_core.slot.SeedSlot.germinate>`
        (``options``, ``seed_id``, ``algorithm``, ``ramp_epochs``, ``curve``, ``alpha_target``).
        """
        outcome = self._call(
            CallOp.GERMINATE, slot_id, lambda: Germinate.from_keywords(blueprint, **arguments)
        )
        if outcome.result is not None and not outcome.result.passed:
            raise GerminationRefusedError.of(slot_id, blueprint, outcome.result.checks_failed)

    def advance(self, slot_id: str, target: SeedStage | None = None) -> GateResult:
        """Evaluate the gate on every rank and commit rank 0's verdict everywhere.

        The result is this rank's own evaluation with ``passed`` set to the committed
        verdict (the slot notes in the message when rank 0 overruled this rank).
        """
        return self._call(CallOp.ADVANCE, slot_id, lambda: Advance(target=target)).result

    def prune(self, slot_id: str, reason: str, initiator: str) -> None:
        """Prune rank 0's choice of slot on every rank."""
        self._call(CallOp.PRUNE, slot_id, lambda: Prune(reason=reason, initiator=initiator))

    def schedule_prune(
        self, slot_id: str, epochs: int, curve: AlphaCurve = AlphaCurve.LINEAR, *, reason: str, initiator: str
    ) -> None:
        """Ramp rank 0's choice of slot down to zero over ``epochs`` epochs, then prune it."""
        self._call(
            CallOp.SCHEDULE_PRUNE,
            slot_id,
            lambda: SchedulePrune(epochs=epochs, curve=curve, reason=reason, initiator=initiator),
        )

    def set_alpha_target(
        self,
        slot_id: str,
        target: float,
        epochs: int,
        curve: AlphaCurve = AlphaCurve.LINEAR,
        *,
        algorithm: BlendAlgorithm | None = None,
    ) -> None:
        """Retarget rank 0's choice of slot's alpha (optionally its blend algorithm) on every rank."""
        self._call(
            CallOp.SET_ALPHA_TARGET,
            slot_id,
            lambda: SetAlphaTarget(target=target, epochs=epochs, curve=curve, algorithm=algorithm),
        )

    def step_epoch(self) -> None:
        """Tick every slot on every rank (auto-advances decided by rank 0), then check drift."""
        seq = self._stream.tick()
        for index, slot in enumerate(self._slots.values()):
            with self._driving(seq, index + 1):
                slot.step_epoch()
        if self.check_every_epoch:
            self.check_drift()

    def check_drift(self) -> None:
        """Raise :class:`DistributedError` naming every slot whose state differs between ranks.

        Also reports slots changed outside this object (a direct ``slot.prune()`` and the
        like) on any rank since the last check: such a change was not decided by rank 0.
        """
        rows = [
            [*slot_fingerprint(slot, parameters=self.check_parameters), float(len(self._outside[slot_id]))]
            for slot_id, slot in self._slots.items()
        ]
        local = torch.tensor(rows, dtype=torch.float64)
        fields = (*FINGERPRINT_FIELDS[: local.shape[1] - 1], "outside_mutations")
        reduced = self._stream.reduce_max(torch.cat([local, -local]))
        high, low = reduced[: len(self._ids)], -reduced[len(self._ids) :]
        drifts = find_drift(self._ids, fields, local, high, low)
        outside = {slot_id: self._outside[slot_id] for i, slot_id in enumerate(self._ids) if high[i, -1] > 0}
        self._outside = {slot_id: [] for slot_id in self._ids}
        if not drifts and not outside:
            return
        problems = [d.describe() for d in drifts if d.field != "outside_mutations"]
        problems += [
            f"slot {slot_id!r} was changed outside the distributed lifecycle (this rank: {events or 'nothing'})"
            for slot_id, events in outside.items()
        ]
        slots = sorted({d.slot_id for d in drifts} | set(outside))
        raise DistributedError(
            f"lifecycle state drifted between ranks in slot(s) {slots}: "
            + "; ".join(problems)
            + ". Make every lifecycle call through DistributedLifecycle so rank 0 decides it"
        )

    # ------------------------------------------------------------------ the decider hook

    def _decide(self, slot: Any, result: GateResult) -> bool:
        """Installed as every slot's ``decider``: commit rank 0's verdict on every rank."""
        verdict = self._stream.decide(self._slot_index(slot.slot_id), result.target, result.passed, self._ids)
        if verdict != result.passed:
            self.overruled += 1
        return verdict
