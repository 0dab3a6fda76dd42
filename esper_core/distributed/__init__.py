"""Rank-0 lifecycle decisions under ``torch.distributed``: tensor commands and drift checks.

See :class:`DistributedLifecycle` for the protocol and ``docs/distributed.md`` for the
training-loop pattern (including DDP re-wrapping after a germination).
"""

from esper_core.distributed.checksum import FINGERPRINT_FIELDS, Drift, find_drift, slot_fingerprint
from esper_core.distributed.comm import Channel, HandshakeRow, is_distributed
from esper_core.distributed.command import MAX_OPTIONS, TEXT_LIMITS, CommandOp, LifecycleCommand
from esper_core.distributed.ddp import DDPRewrapper, parameter_signature
from esper_core.distributed.lifecycle import DEFAULT_TIMEOUT, DistributedLifecycle
from esper_core.distributed.stream import CommandStream
from esper_core.distributed.wire import (
    WIRE_SIZE,
    WIRE_VERSION,
    Decoded,
    decode_command,
    encode_command,
    pack_command,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "FINGERPRINT_FIELDS",
    "MAX_OPTIONS",
    "TEXT_LIMITS",
    "WIRE_SIZE",
    "WIRE_VERSION",
    "Channel",
    "CommandOp",
    "CommandStream",
    "DDPRewrapper",
    "Decoded",
    "DistributedLifecycle",
    "Drift",
    "HandshakeRow",
    "LifecycleCommand",
    "decode_command",
    "encode_command",
    "find_drift",
    "is_distributed",
    "pack_command",
    "parameter_signature",
    "slot_fingerprint",
]
