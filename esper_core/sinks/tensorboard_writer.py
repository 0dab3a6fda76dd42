"""A telemetry sink that writes lifecycle events to TensorBoard (``esper-core[tensorboard]``)."""

from __future__ import annotations

import enum
import json
import numbers
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from esper_core._extras import require_extras
from esper_core.hookspecs import hookimpl
from esper_core.sinks.record import event_record
from esper_core.sinks.registration import EventSink
from esper_core.telemetry import SeedEvent

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoardSink", "event_scalars"]

_IDENTITY = ("slot_id", "seed_id")


def event_scalars(event: SeedEvent) -> dict[str, float]:
    """The numeric fields of ``event`` by name: numbers as floats, booleans as 0/1, and
    integer enum members (``SeedStage``, ``GateLevel``) by value. Text, tuples and other
    enums are left to the event's text record. Generic over the event's attrs fields.
    """
    scalars: dict[str, float] = {}
    for field in attrs.fields(type(event)):
        if field.name in _IDENTITY:
            continue
        value = getattr(event, field.name)
        if isinstance(value, enum.Enum) and not isinstance(value, int):
            continue
        if isinstance(value, bool | numbers.Real):
            scalars[field.name] = float(value)
    return scalars


class TensorBoardSink(EventSink):
    """Write every lifecycle event to TensorBoard through :class:`torch.utils.tensorboard.SummaryWriter`.

    For an event of class ``C`` from slot ``s``, at step ``k``:

    * each numeric field ``f`` (see :func:`event_scalars`) as the scalar ``{prefix}/{s}/{C}/{f}``,
      e.g. ``esper/r0c0/StageChanged/to_stage`` (the stage's value) or
      ``esper/r0c0/GateEvaluated/score``;
    * the whole event, as the JSON of :func:`esper_core.sinks.event_record`, as text under
      ``{prefix}/{s}`` (TensorBoard's Text tab).

    ``k`` is ``step()`` when a ``step`` callable is given (pass ``step=lambda: epoch`` to plot
    against your own epoch counter; it must return an ``int``), otherwise the number of
    events this sink has written so far (0, 1, 2, ...).

    Give either ``log_dir`` (the sink creates and owns a writer there; ``None`` means
    TensorBoard's default ``runs/<date>_<host>``) or ``writer`` (your own ``SummaryWriter``,
    which the sink flushes but never closes). Events are flushed as written.

    Raises :class:`~esper_core.errors.MissingExtraError` (an ``ImportError``) naming the
    extra to install when ``tensorboard`` is missing,
    :class:`ValueError` when both ``log_dir`` and ``writer`` are given, and
    :class:`TypeError` for a ``step`` that is not callable.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        writer: SummaryWriter | None = None,
        step: Callable[[], int] | None = None,
        prefix: str = "esper",
    ) -> None:
        if log_dir is not None and writer is not None:
            raise ValueError("TensorBoardSink: pass log_dir or writer, not both")
        if step is not None and not callable(step):
            raise TypeError(f"TensorBoardSink: step must be a callable returning an int, got {step!r}")
        if not isinstance(prefix, str) or not prefix or prefix.endswith("/"):
            raise ValueError(
                f"TensorBoardSink: prefix must be a non-empty tag prefix such as 'esper', got {prefix!r}"
            )
        self._owns_writer = writer is None
        self.writer: SummaryWriter = writer if writer is not None else _new_writer(log_dir)
        self.prefix = prefix
        self._step = step
        self._count = 0
        super().__init__(f"TensorBoardSink({self.writer.get_logdir()!r})")

    @hookimpl
    def esper_seed_event(self, event: SeedEvent) -> None:
        record = event_record(event)
        scalars = event_scalars(event)
        with self.lock:
            self._check_open()
            step = self._next_step()
            base = f"{self.prefix}/{event.slot_id}"
            name = type(event).__name__
            for field, value in scalars.items():
                self.writer.add_scalar(f"{base}/{name}/{field}", value, global_step=step)
            self.writer.add_text(base, json.dumps(record, ensure_ascii=False), global_step=step)
            self.writer.flush()

    def _next_step(self) -> int:
        if self._step is None:
            step = self._count
        else:
            step = self._step()
            if isinstance(step, bool) or not isinstance(step, numbers.Integral):
                raise TypeError(f"TensorBoardSink: step() must return an int, got {step!r}")
            step = int(step)
        self._count += 1
        return step

    def _release(self) -> None:
        # A writer the sink created is closed with it; one you passed is only flushed.
        if self._owns_writer:
            self.writer.close()
        else:
            self.writer.flush()


def _new_writer(log_dir: str | os.PathLike[str] | None) -> Any:
    require_extras("TensorBoardSink", "tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=None if log_dir is None else os.fspath(log_dir))
