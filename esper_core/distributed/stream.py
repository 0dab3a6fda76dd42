"""The lifecycle command stream: numbered calls, each one exchange, rank 0's word applied.

Every lifecycle call on every rank goes through :class:`CommandStream`, which gives it
the next sequence number and makes it one exchange (:meth:`Channel.exchange`): every
rank's header goes to rank 0, and rank 0's record comes back with the table of all
headers, so ranks that are not in the same call find out at once, all of them, instead
of pairing the wrong collectives. What the record holds depends on the call:

* :meth:`CommandStream.issue`: rank 0's command, written by the one codec
  (:func:`esper_core.codec.encode_command`, JSON, no pickle). When rank 0 cannot even build
  the command (unknown slot, bad argument, unknown blueprint) it sends an *abort* record
  instead, so every rank raises the same error class rather than waiting for a command
  that never comes.
* :meth:`CommandStream.decide`: rank 0's verdict on one gate evaluation, after checking
  that every rank is evaluating the same slot and edge.
* :meth:`CommandStream.confirm`: no record; every rank says whether it could prepare the
  command (its own registry, its own memory), so a rank that cannot is known to all.
* :meth:`CommandStream.tick` and :meth:`CommandStream.reduce_max`: no record.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from enum import IntEnum

import torch
import torch.distributed as dist

from esper_core import errors
from esper_core.codec import decode_command, encode_command, parse_json
from esper_core.distributed.comm import Channel, as_timedelta, is_distributed
from esper_core.errors import DistributedError, EsperError
from esper_core.stages import SeedStage

__all__ = ["CallOp", "CommandStream"]


class CallOp(IntEnum):
    """What a lifecycle call is, as announced in every rank's header (part of the protocol)."""

    GERMINATE = 1
    ADVANCE = 2
    PRUNE = 3
    SCHEDULE_PRUNE = 4
    SET_ALPHA_TARGET = 5
    DECIDE = 6  # the outcome of one gate evaluation (advance or step_epoch's auto-advance)
    STEP_EPOCH = 7  # header only: every rank ticks every slot
    CHECKSUM = 8  # header only: per-epoch drift check
    SETUP = 9  # header only: slot configuration check
    CONFIRM = 10  # header only: every rank could prepare rank 0's command


# Error classes an abort record can name, so other ranks raise what rank 0 raised.
_ERRORS: dict[str, type[EsperError]] = {
    cls.__name__: cls
    for cls in (
        errors.MissingGateError,
        errors.GerminationRefusedError,
        errors.LifecycleError,
        errors.BlueprintError,
        errors.UnknownBlueprintError,
        errors.UnknownTopologyError,
        errors.OptionError,
        errors.RegistryError,
        errors.DistributedError,
        errors.EsperError,
    )
}
_VERDICT = {True: b'{"verdict":true}', False: b'{"verdict":false}'}


def _describe_op(code: int) -> str:
    try:
        return CallOp(code).name.lower()
    except ValueError:
        return f"op {code}"


def _abort(exc: BaseException) -> bytes:
    name = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in _ERRORS), "DistributedError")
    return json.dumps({"abort": name, "message": str(exc)}).encode("utf-8")


class CommandStream:
    """Numbered lifecycle calls over one process group, each one exchange (see the module doc)."""

    def __init__(self, group: dist.ProcessGroup | None, timeout: float | datetime.timedelta) -> None:
        if group is None and is_distributed():
            # A private group: a lone lifecycle call can then only meet other lifecycle
            # traffic (and be diagnosed), never pair up with a training collective such as
            # DDP's gradient all-reduce on the default group.
            group = dist.new_group(backend=str(dist.get_backend()), timeout=as_timedelta(timeout))
        self.channel = Channel(group, timeout, _describe_op)
        self.seq = 0

    @property
    def rank(self) -> int:
        return self.channel.rank

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def setup(self, slot_ids: Sequence[str], config_crc: int) -> int:
        """Check every rank built the same slots; return rank 0's RNG base seed on every rank."""
        rows, _ = self.channel.exchange(CallOp.SETUP, self._next(), len(slot_ids), config_crc)
        differing = [row.rank for row in rows if (row.slot, row.extra) != (rows[0].slot, rows[0].extra)]
        if differing:
            raise DistributedError(
                f"rank(s) {differing} have a different slot configuration than rank 0 "
                f"(this rank: {len(slot_ids)} slots {list(slot_ids)}); every rank must build the same model"
            )
        seed = torch.tensor([torch.initial_seed() % 2**62], dtype=torch.int64)
        return int(self.channel.broadcast(seed)[0])

    def issue(self, op: CallOp, build: Callable[[], tuple[int, object]]) -> tuple[int, object]:
        """Rank 0's (slot index, command) for this call, decoded identically on every rank.

        ``build`` runs on rank 0 only; whatever it raises is re-raised on rank 0 and raised
        as the same library error class (message prefixed "rank 0 rejected") on the others.
        """
        seq = self._next()
        failure: BaseException | None = None
        record, slot = None, -1
        if self.rank == 0:
            try:
                slot, command = build()
                record = encode_command(command)
            except Exception as exc:  # every failure must reach the peers as an abort
                failure, record = exc, _abort(exc)
        rows, raw = self.channel.exchange(op, seq, slot, 0, record)
        if failure is not None:
            raise failure
        data = parse_json(raw, "record", DistributedError)
        if isinstance(data, dict) and "abort" in data:
            cls = _ERRORS.get(str(data.get("abort")), DistributedError)
            raise cls(f"rank 0 rejected {op.name.lower()}: {data.get('message')}")
        return rows[0].slot, decode_command(raw)

    def confirm(self, ok: bool) -> None:
        """Every rank says whether it could prepare the command; any failure raises on every rank."""
        rows, _ = self.channel.exchange(CallOp.CONFIRM, self._next(), -1, int(bool(ok)))
        failed = [row.rank for row in rows if row.extra != 1]
        if failed:
            raise DistributedError(
                f"rank(s) {failed} could not prepare rank 0's command (each failing rank raised its own "
                "error: check that every rank has the same blueprint packs and versions installed)"
            )

    def decide(self, slot: int, target: SeedStage, passed: bool, slot_ids: Sequence[str]) -> bool:
        """Rank 0's verdict on the gate of ``slot``'s edge to ``target`` (this rank says ``passed``)."""
        seq = self._next()
        record = _VERDICT[bool(passed)] if self.rank == 0 else None
        rows, raw = self.channel.exchange(CallOp.DECIDE, seq, slot, int(target), record)
        if any((row.slot, row.extra) != (rows[0].slot, rows[0].extra) for row in rows):
            where = "; ".join(f"rank {row.rank}: {_edge(row.slot, row.extra, slot_ids)}" for row in rows)
            raise DistributedError(
                f"ranks are deciding different gates ({where}); lifecycle state has drifted"
            )
        if raw == _VERDICT[True]:
            return True
        if raw == _VERDICT[False]:
            return False
        raise DistributedError(f"rank 0 sent {raw[:60]!r} where a gate verdict was expected")

    def tick(self) -> int:
        """The exchange of a call that needs no payload (``step_epoch``); returns its number."""
        seq = self._next()
        self.channel.exchange(CallOp.STEP_EPOCH, seq)
        return seq

    def reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise max of ``values`` over ranks, after checking every rank sends as many."""
        rows, _ = self.channel.exchange(CallOp.CHECKSUM, self._next(), -1, values.numel())
        if any(row.extra != values.numel() for row in rows):
            sizes = {row.rank: row.extra for row in rows}
            raise DistributedError(
                f"ranks fingerprint different amounts of state {sizes}; check_parameters must agree on every rank"
            )
        return self.channel.all_reduce_max(values)


def _edge(slot: int, target: int, slot_ids: Sequence[str]) -> str:
    name = repr(slot_ids[slot]) if 0 <= slot < len(slot_ids) else f"#{slot}"
    stage = SeedStage(target).name if target in SeedStage._value2member_map_ else str(target)
    return f"slot {name} -> {stage}"
