"""Bounded collectives for the lifecycle command stream.

Every collective here is issued asynchronously and waited on with a deadline, so a rank
whose peers never join (a lifecycle call made on one rank only) gets a
:class:`~esper_core.errors.DistributedError` instead of hanging forever. Before each
call the ranks exchange a tiny header (:meth:`Channel.handshake`): if they are not in the
same lifecycle call, every rank learns it at once and raises, naming each rank's call.

Without an initialised process group (or with a single rank) the channel is local: the
handshake is trivial and a broadcast returns its input, so single-process code runs the
same path.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import attrs
import torch
import torch.distributed as dist

from esper_core.errors import DistributedError

__all__ = ["Channel", "HandshakeRow", "as_timedelta", "is_distributed"]

_HEADER = 4  # op, seq, slot, extra


def is_distributed() -> bool:
    """Whether a default process group exists in this process."""
    return dist.is_available() and dist.is_initialized()


def as_timedelta(timeout: float | datetime.timedelta) -> datetime.timedelta:
    """``timeout`` (seconds or a timedelta) as a positive timedelta, else DistributedError."""
    if isinstance(timeout, datetime.timedelta):
        value = timeout
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        value = datetime.timedelta(seconds=float(timeout))
    else:
        raise DistributedError(f"timeout must be seconds (int/float) or a timedelta, got {timeout!r}")
    if not value.total_seconds() > 0:
        raise DistributedError(f"timeout must be positive, got {timeout!r}")
    return value


@attrs.frozen
class HandshakeRow:
    """What one rank announced before a lifecycle collective."""

    rank: int
    op: int
    seq: int
    slot: int
    extra: int


class Channel:
    """The collectives of one lifecycle stream on one process group, each with a deadline.

    ``describe_op`` turns an op code into a name for error messages. A timeout leaves the
    group's collective sequence in an unknown state, so the channel then refuses every
    further call (:attr:`broken`) rather than risk pairing the wrong messages.
    """

    def __init__(
        self,
        group: dist.ProcessGroup | None,
        timeout: float | datetime.timedelta,
        describe_op: Callable[[int], str] = str,
    ) -> None:
        self.timeout = as_timedelta(timeout)
        self._describe = describe_op
        self.broken: str | None = None
        if not is_distributed():
            if group is not None:
                raise DistributedError("a process group was given but torch.distributed is not initialised")
            self.group = None
            self.rank, self.world_size, self.backend = 0, 1, "local"
            self.device = torch.device("cpu")
            return
        self.group = group if group is not None else dist.group.WORLD
        self.rank = dist.get_rank(self.group)
        if self.rank < 0:
            raise DistributedError("this process is not a member of the given process group")
        self.world_size = dist.get_world_size(self.group)
        self.backend = str(dist.get_backend(self.group))
        # The group's own backend carries the tensors: NCCL needs them on this rank's GPU.
        if self.backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")

    @property
    def local(self) -> bool:
        return self.world_size == 1

    # ------------------------------------------------------------------ internals

    def _check_usable(self) -> None:
        if self.broken is not None:
            raise DistributedError(
                f"the lifecycle channel is unusable after an earlier failure: {self.broken}"
            )

    def _wait(self, work: dist.Work, what: str) -> None:
        try:
            work.wait(timeout=self.timeout)
        except RuntimeError as exc:
            self.broken = (
                f"{what} on rank {self.rank} did not complete within {self.timeout.total_seconds():g} s; "
                "another rank did not join (a lifecycle call made on some ranks only, or a dead rank)"
            )
            raise DistributedError(f"{self.broken} [{exc}]") from exc

    # ------------------------------------------------------------------ collectives

    def handshake(self, op: int, seq: int, slot: int = -1, extra: int = 0) -> list[HandshakeRow]:
        """Exchange ``(op, seq, slot, extra)`` with every rank; return all rows by rank.

        Raises :class:`DistributedError` on every rank when the ranks are in different
        calls (``op`` or ``seq`` differ), naming what each rank called.
        """
        self._check_usable()
        mine = torch.tensor([op, seq, slot, extra], dtype=torch.int64, device=self.device)
        if self.local:
            return [HandshakeRow(0, op, seq, slot, extra)]
        gathered = [
            torch.empty(_HEADER, dtype=torch.int64, device=self.device) for _ in range(self.world_size)
        ]
        self._wait(dist.all_gather(gathered, mine, group=self.group, async_op=True), "handshake")
        rows = [HandshakeRow(r, *(int(v) for v in t.tolist())) for r, t in enumerate(gathered)]
        if any(row.op != rows[0].op or row.seq != rows[0].seq for row in rows):
            calls = "; ".join(
                f"rank {row.rank} called {self._describe(row.op)} (call #{row.seq})" for row in rows
            )
            raise DistributedError(
                f"ranks are in different lifecycle calls: {calls}. Every rank must make the same "
                "lifecycle calls in the same order; rank 0's arguments decide"
            )
        return rows

    def broadcast(self, payload: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``payload`` on every rank (same shape and dtype everywhere)."""
        self._check_usable()
        if self.local:
            return payload
        buffer = payload.to(self.device).contiguous()
        self._wait(dist.broadcast(buffer, group_src=0, group=self.group, async_op=True), "command broadcast")
        return buffer.cpu()

    def all_reduce_max(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of ``values`` over all ranks."""
        self._check_usable()
        if self.local:
            return values.clone()
        buffer = values.to(self.device).contiguous().clone()
        self._wait(
            dist.all_reduce(buffer, op=dist.ReduceOp.MAX, group=self.group, async_op=True),
            "checksum all-reduce",
        )
        return buffer.cpu()
