"""Rank-0 lifecycle decisions under ``torch.distributed``: codec commands and drift checks.

See :class:`DistributedLifecycle` for the protocol and ``docs/distributed.md`` for the
training-loop pattern (including DDP re-wrapping after a germination).
"""

from esper_core.distributed.checksum import FINGERPRINT_FIELDS, Drift, find_drift, slot_fingerprint
from esper_core.distributed.comm import DEFAULT_CAPACITY, Channel, HandshakeRow, is_distributed
from esper_core.distributed.ddp import DDPRewrapper, parameter_signature
from esper_core.distributed.evaluation import reduce_evaluation
from esper_core.distributed.lifecycle import DEFAULT_TIMEOUT, DistributedLifecycle
from esper_core.distributed.stream import CallOp, CommandStream

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_TIMEOUT",
    "FINGERPRINT_FIELDS",
    "CallOp",
    "Channel",
    "CommandStream",
    "DDPRewrapper",
    "DistributedLifecycle",
    "Drift",
    "HandshakeRow",
    "find_drift",
    "is_distributed",
    "parameter_signature",
    "reduce_evaluation",
    "slot_fingerprint",
]
