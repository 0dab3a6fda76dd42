"""The lifecycle command stream: numbered calls, each one exchange, rank 0's word applied.

Every lifecycle call on every rank goes through :class:`CommandStream`, which gives it
the next sequence number and makes it one exchange (:meth:`Channel.exchange`): every
rank's header goes to rank 0, and rank 0's record comes back with the table of all
headers, so ranks that are not in the same call find out at once, all of them, instead
of pairing the wrong collectives. What the record holds depends on the call:

* :meth:`CommandStream.issue`: rank 0's encoded command. When rank 0 cannot even build
  the command (unknown slot, text too long, unknown blueprint) it sends an *abort* record
  instead, so every rank raises the same error class rather than waiting for a command
  that never comes.
* :meth:`CommandStream.decide`: rank 0's verdict on one gate evaluation, after checking
  that every rank is evaluating the same slot and edge.
* :meth:`CommandStream.tick`: nothing (every rank ticks every slot).
* :meth:`CommandStream.reduce_max`: nothing; the per-epoch fingerprint all-reduce follows.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from esper_core import errors
from esper_core.distributed.comm import Channel, as_timedelta, is_distributed
from esper_core.distributed.command import CommandOp, LifecycleCommand
from esper_core.distributed.wire import WIRE_SIZE, decode_command, pack_command
from esper_core.errors import DistributedError, EsperError
from esper_core.stages import SeedStage

__all__ = ["CommandStream"]

# Error classes an abort record can name (code = index + 1), so other ranks raise what rank 0 raised.
_ERRORS: tuple[type[EsperError], ...] = (
    errors.MissingGateError,
    errors.LifecycleError,
    errors.UnknownBlueprintError,
    errors.UnknownTopologyError,
    errors.OptionError,
    errors.RegistryError,
    errors.DistributedError,
    errors.EsperError,
)


def _describe_op(code: int) -> str:
    try:
        return CommandOp(code).name.lower()
    except ValueError:
        return f"op {code}"


def _error_code(exc: BaseException) -> int:
    return next((i + 1 for i, cls in enumerate(_ERRORS) if isinstance(exc, cls)), 0)


class CommandStream:
    """Numbered lifecycle calls over one process group, each one exchange (see the module doc)."""

    def __init__(self, group: dist.ProcessGroup | None, timeout: float | datetime.timedelta) -> None:
        if group is None and is_distributed():
            # A private group: a lone lifecycle call can then only meet other lifecycle
            # traffic (and be diagnosed), never pair up with a training collective such as
            # DDP's gradient all-reduce on the default group.
            group = dist.new_group(backend=str(dist.get_backend()), timeout=as_timedelta(timeout))
        self.channel = Channel(group, timeout, _describe_op, record_size=WIRE_SIZE)
        self.seq = 0

    @property
    def rank(self) -> int:
        return self.channel.rank

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def setup(self, slot_ids: Sequence[str], config_crc: int) -> int:
        """Check every rank built the same slots; return rank 0's RNG base seed on every rank."""
        rows, _ = self.channel.exchange(CommandOp.SETUP, self._next(), len(slot_ids), config_crc)
        differing = [row.rank for row in rows if (row.slot, row.extra) != (rows[0].slot, rows[0].extra)]
        if differing:
            raise DistributedError(
                f"rank(s) {differing} have a different slot configuration than rank 0 "
                f"(this rank: {len(slot_ids)} slots {list(slot_ids)}); every rank must build the same model"
            )
        seed = torch.tensor([torch.initial_seed() % 2**62], dtype=torch.int64)
        return int(self.channel.broadcast(seed)[0])

    def issue(self, op: CommandOp, build: Callable[[], LifecycleCommand]) -> LifecycleCommand:
        """Rank 0's command for this call, decoded identically on every rank.

        ``build`` runs on rank 0 only; whatever it raises is re-raised on rank 0 and
        raised as the same library error class (message prefixed "rank 0 rejected") on
        the other ranks.
        """
        seq = self._next()
        failure: BaseException | None = None
        record = None
        if self.rank == 0:
            try:
                record = pack_command(build(), seq=seq)
            except Exception as exc:  # every failure must reach the peers as an abort
                failure = exc
                record = pack_command(LifecycleCommand(op=op), seq=seq, error=(_error_code(exc), str(exc)))
        decoded = decode_command(self.channel.exchange(op, seq, record=record)[1])
        if decoded.seq != seq:
            raise DistributedError(f"rank 0 sent command #{decoded.seq} while this rank is at call #{seq}")
        if decoded.error is not None:
            if failure is not None:
                raise failure
            code, message = decoded.error
            cls = _ERRORS[code - 1] if 1 <= code <= len(_ERRORS) else DistributedError
            raise cls(f"rank 0 rejected {op.name.lower()}: {message}")
        return decoded.command

    def decide(self, slot: int, target: SeedStage, passed: bool, slot_ids: Sequence[str]) -> bool:
        """Rank 0's verdict on the gate of ``slot``'s edge to ``target`` (this rank says ``passed``)."""
        seq = self._next()
        record = None
        if self.rank == 0:
            verdict = LifecycleCommand(op=CommandOp.DECIDE, slot=slot, passed=passed, target_stage=target)
            record = pack_command(verdict, seq=seq)
        rows, raw = self.channel.exchange(CommandOp.DECIDE, seq, slot, int(target), record)
        if any((row.slot, row.extra) != (rows[0].slot, rows[0].extra) for row in rows):
            where = "; ".join(f"rank {row.rank}: {_edge(row.slot, row.extra, slot_ids)}" for row in rows)
            raise DistributedError(
                f"ranks are deciding different gates ({where}); lifecycle state has drifted"
            )
        return bool(decode_command(raw).command.passed)

    def tick(self) -> int:
        """The exchange of a call that needs no payload (``step_epoch``); returns its number."""
        seq = self._next()
        self.channel.exchange(CommandOp.STEP_EPOCH, seq)
        return seq

    def reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise max of ``values`` over ranks, after checking every rank sends as many."""
        rows, _ = self.channel.exchange(CommandOp.CHECKSUM, self._next(), -1, values.numel())
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
