"""Bounded collectives for the lifecycle command stream.

Every lifecycle call is one *exchange* (:meth:`Channel.exchange`): each rank sends a tiny
header (op, call number, slot, extra) to rank 0 with ``gather``, and rank 0 broadcasts
the table of all headers together with its record: length-prefixed bytes (the codec of a
command, a verdict or an abort) in a ``uint8`` tensor of :attr:`Channel.capacity` bytes. A
record longer than that follows in a second broadcast whose size every rank read from the
prefix, so records have no size limit and the common case stays one round trip. Every rank then
holds the same table, so when the ranks are not in the same lifecycle call each of them
raises the same error, naming what each rank called. That is one round trip, the least
that lets rank 0 learn the other ranks' calls and tell them its decision. ("Broadcast" here
means rank 0's buffer reaching every rank: on gloo it is one point-to-point message per
peer, see :meth:`Channel._broadcast_in_place`.)

Every collective is issued asynchronously and waited on with a deadline, so a rank whose
peers never join (a lifecycle call made on one rank only) gets a
:class:`~esper_core.errors.DistributedError` instead of hanging forever.

The collectives are issued on the process group object itself, with options built once:
the ``torch.distributed.gather``/``broadcast`` wrappers add argument checks and logging
that cost about as much as a small loopback message, on every call.

Without an initialised process group (or with a single rank) the channel is local: the
exchange is trivial and a broadcast returns its input, so single-process code runs the
same path.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable

import attrs
import torch
import torch.distributed as dist

from esper_core.errors import DistributedError

__all__ = ["Channel", "HandshakeRow", "as_timedelta", "is_distributed"]

_HEADER = 4  # op, seq, slot, extra
_HEADER_BYTES = _HEADER * 8
_HEADER_LAYOUT = struct.Struct(f"={_HEADER}q")  # native order: the bytes are read as int64 tensors
_LENGTH = struct.Struct("<I")  # a record's length in bytes, before the record
_TAG = 0x45535052  # the tag of the lifecycle channel's point-to-point messages
#: Default room for a record in the exchange buffer (a germinate command is ~300 bytes).
DEFAULT_CAPACITY = 512


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
    """What one rank announced at the start of a lifecycle call."""

    rank: int
    op: int
    seq: int
    slot: int
    extra: int


class Channel:
    """The collectives of one lifecycle stream on one process group, each with a deadline.

    ``capacity`` is the room in bytes for rank 0's record inside the exchange buffer (longer
    records take one more broadcast). ``describe_op`` turns an op code into a name for error
    messages. A timeout leaves the
    group's collective sequence in an unknown state, so the channel then refuses every
    further call (:attr:`broken`) rather than risk pairing the wrong messages.
    """

    def __init__(
        self,
        group: dist.ProcessGroup | None,
        timeout: float | datetime.timedelta,
        describe_op: Callable[[int], str] = str,
        *,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 0 <= capacity <= 2**20:
            raise DistributedError(f"capacity must be an int in [0, {2**20}] (bytes), got {capacity!r}")
        self.timeout = as_timedelta(timeout)
        self.capacity = capacity
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
        self._allocate()

    def _allocate(self) -> None:
        """The exchange buffers and collective options, built once per channel.

        Rank 0's record and every header are written into the host buffers through cached
        memoryviews and read back with ``struct``: per call that is a few hundred
        nanoseconds, where building and slicing tensors costs tens of microseconds, on
        both sides of a message whose whole round trip is a few hundred.
        """
        self._table_bytes = self.world_size * _HEADER_BYTES
        self._record_at = self._table_bytes + _LENGTH.size
        self._host = torch.zeros(self._record_at + self.capacity, dtype=torch.uint8)
        self._host_view = memoryview(self._host.numpy())
        self._mine_host = torch.zeros(_HEADER, dtype=torch.int64)
        self._mine_view = memoryview(self._mine_host.numpy()).cast("B")
        on_host = self.device.type == "cpu"
        self._buffer = self._host if on_host else self._host.to(self.device)
        self._mine = self._mine_host if on_host else self._mine_host.to(self.device)
        table = self._buffer[: self._table_bytes].view(torch.int64).view(self.world_size, _HEADER)
        self._rows = list(table.unbind(0))  # gather writes each rank's header in place
        self._table_layout = struct.Struct(f"={self.world_size * _HEADER}q")
        self._gather_opts = dist.GatherOptions()
        self._gather_opts.rootRank = 0
        self._broadcast_opts = dist.BroadcastOptions()
        self._broadcast_opts.rootRank = 0
        self._broadcast_opts.rootTensor = 0
        self._point_to_point = self.backend == "gloo"

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

    def _broadcast_in_place(self, buffer: torch.Tensor, what: str) -> None:
        """Rank 0's ``buffer`` into every rank's ``buffer``.

        On gloo: one ``send`` per peer and one ``recv``. A gloo ``broadcast`` passes through
        the group's worker thread at both ends; point-to-point messages are posted from the
        calling thread, about 30 us less per message on loopback, which is a fifth of a
        command's one-way latency (``bench/bench_distributed.py``). Messages pair up in call
        order, and every call that sends one starts with the exchange's gather, which has
        just checked that all ranks are in it. Other backends (NCCL: a p2p message would
        set up a communicator per pair) use ``broadcast``.
        """
        if not self._point_to_point:
            self._wait(self.group.broadcast([buffer], self._broadcast_opts), what)
        elif self.rank == 0:
            sends = [self.group.send([buffer], peer, _TAG) for peer in range(1, self.world_size)]
            for work in sends:
                self._wait(work, what)
        else:
            self._wait(self.group.recv([buffer], 0, _TAG), what)

    # ------------------------------------------------------------------ collectives

    def exchange(
        self, op: int, seq: int, slot: int = -1, extra: int = 0, record: bytes | None = None
    ) -> tuple[list[HandshakeRow], bytes]:
        """Start a lifecycle call: every rank's header, and rank 0's record, on every rank.

        Each rank announces ``(op, seq, slot, extra)``; rank 0 also passes its ``record``
        (bytes of any length; ignored on the other ranks). Returns the rows of all ranks by
        rank and rank 0's record. Raises :class:`DistributedError` on
        every rank alike when the ranks are in different calls (``op`` or ``seq`` differ),
        naming what each rank called; the channel stays usable.
        """
        self._check_usable()
        raw = self._record_bytes(record) if self.rank == 0 else b""
        if self.local:
            rows = [HandshakeRow(0, op, seq, slot, extra)]
        else:
            rows = self._exchange(op, seq, slot, extra, raw)
            raw = self._receive(raw)
        if any(row.op != rows[0].op or row.seq != rows[0].seq for row in rows):
            calls = "; ".join(
                f"rank {row.rank} called {self._describe(row.op)} (call #{row.seq})" for row in rows
            )
            raise DistributedError(
                f"ranks are in different lifecycle calls: {calls}. Every rank must make the same "
                "lifecycle calls in the same order; rank 0's arguments decide"
            )
        return rows, raw

    def _record_bytes(self, record: bytes | None) -> bytes:
        if record is None:
            return b""
        if not isinstance(record, bytes | bytearray):
            raise DistributedError(f"a record must be bytes, got {type(record).__name__}")
        if len(record) >= 2**32:
            raise DistributedError(f"a record must be shorter than 4 GiB, got {len(record)} bytes")
        return bytes(record)

    def _exchange(self, op: int, seq: int, slot: int, extra: int, raw: bytes) -> list[HandshakeRow]:
        _HEADER_LAYOUT.pack_into(self._mine_view, 0, op, seq, slot, extra)
        if self._mine is not self._mine_host:
            self._mine.copy_(self._mine_host)
        outputs = [self._rows] if self.rank == 0 else []
        self._wait(self.group.gather(outputs, [self._mine], self._gather_opts), "handshake")
        self._send_buffer(raw)
        values = self._table_layout.unpack_from(self._host_view)
        return [HandshakeRow(r, *values[r * _HEADER : (r + 1) * _HEADER]) for r in range(self.world_size)]

    def _send_buffer(self, raw: bytes) -> None:
        """Broadcast the exchange buffer with rank 0's record (its first part) in it."""
        if self.rank == 0:
            _LENGTH.pack_into(self._host_view, self._table_bytes, len(raw))
            head = raw[: self.capacity]
            self._host_view[self._record_at : self._record_at + len(head)] = head
        on_host = self._buffer is self._host
        if not on_host and self.rank == 0:
            # Only the record comes from the host: the table part is gathered on the device.
            self._buffer[self._table_bytes :].copy_(self._host[self._table_bytes :])
        self._broadcast_in_place(self._buffer, "command broadcast")
        if not on_host:
            self._host.copy_(self._buffer)

    def _receive(self, raw: bytes) -> bytes:
        """Rank 0's whole record from the buffer, and from one more broadcast if it did not fit."""
        (length,) = _LENGTH.unpack_from(self._host_view, self._table_bytes)
        head = bytes(self._host_view[self._record_at : self._record_at + min(length, self.capacity)])
        if length <= self.capacity:
            return head
        rest = torch.zeros(length - self.capacity, dtype=torch.uint8)
        if self.rank == 0:
            rest.copy_(torch.frombuffer(bytearray(raw[self.capacity :]), dtype=torch.uint8))
        buffer = rest.to(self.device)
        self._broadcast_in_place(buffer, "command broadcast (long record)")
        return head + buffer.cpu().numpy().tobytes()

    def broadcast_record(self, record: bytes | None) -> bytes:
        """Rank 0's record on every rank: the second half of :meth:`exchange` (no header check).

        This is the bare command transport (what ``bench/bench_distributed.py`` times).
        """
        self._check_usable()
        raw = self._record_bytes(record) if self.rank == 0 else b""
        if self.local:
            return raw
        self._send_buffer(raw)
        return self._receive(raw)

    def broadcast(self, payload: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``payload`` on every rank (same shape and dtype everywhere)."""
        self._check_usable()
        if self.local:
            return payload
        buffer = payload.to(self.device).contiguous().clone()
        self._broadcast_in_place(buffer, "broadcast")
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
