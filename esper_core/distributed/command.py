"""The lifecycle command: one decision made by rank 0, applied identically on every rank.

A :class:`LifecycleCommand` is a plain frozen value. How it travels between processes
(a fixed-size byte record, never a pickle) is :mod:`esper_core.distributed.wire`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import attrs

from esper_core.alpha import AlphaCurve
from esper_core.blend import BlendAlgorithm
from esper_core.errors import LifecycleError
from esper_core.stages import SeedStage

__all__ = ["MAX_OPTIONS", "TEXT_LIMITS", "CommandOp", "LifecycleCommand"]

#: How many declared blueprint options a germinate command can carry.
MAX_OPTIONS = 8
#: Byte capacity (UTF-8) of each text field of a command.
TEXT_LIMITS: Mapping[str, int] = MappingProxyType({"seed_id": 48, "reason": 64, "initiator": 32})


class CommandOp(IntEnum):
    """What a command asks every rank to do. Values are part of the wire format."""

    GERMINATE = 1
    ADVANCE = 2
    PRUNE = 3
    SCHEDULE_PRUNE = 4
    SET_ALPHA_TARGET = 5
    DECIDE = 6  # the outcome of one gate evaluation (advance or step_epoch's auto-advance)
    STEP_EPOCH = 7  # handshake only: every rank ticks every slot
    CHECKSUM = 8  # handshake only: per-epoch drift check
    SETUP = 9  # handshake only: slot configuration check


def _op(value: object) -> CommandOp:
    if type(value) is CommandOp:
        return value
    try:
        return CommandOp(value)
    except ValueError:
        accepted = ", ".join(f"{op.value}={op.name}" for op in CommandOp)
        raise LifecycleError(f"unknown command op {value!r}; accepted: {accepted}") from None


def _options(value: Mapping[str, Any] | tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    if value == ():  # most commands carry no options: skip the sort
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), v) for k, v in items))


@attrs.frozen(kw_only=True)
class LifecycleCommand:
    """One lifecycle decision made by rank 0, applied identically on every rank.

    ``slot`` is the slot's index in the lifecycle's sorted slot list. Fields an op does not
    use keep their defaults and are ignored: germinate uses ``topology``, ``blueprint``,
    ``options``, ``seed_id``, ``algorithm``, ``tempo``, ``curve``, ``alpha_target``;
    advance uses ``target_stage``; prune uses ``reason`` and ``initiator``; schedule_prune
    adds ``steps`` and ``curve``; set_alpha_target uses ``alpha_target``, ``steps`` and
    ``curve``; a gate decision uses ``passed`` and ``target_stage`` (the edge decided).
    """

    op: CommandOp = attrs.field(converter=_op)
    slot: int = -1
    topology: str | None = None
    blueprint: str | None = None
    options: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_options)
    seed_id: str | None = None
    algorithm: BlendAlgorithm | None = None
    curve: AlphaCurve | None = None
    tempo: int = 0
    steps: int = 0
    alpha_target: float = 0.0
    target_stage: SeedStage | None = None
    passed: bool | None = None
    reason: str = ""
    initiator: str = ""

    def options_dict(self) -> dict[str, Any]:
        """The blueprint options as a plain dict (what ``SeedSlot.germinate`` takes)."""
        return dict(self.options)
