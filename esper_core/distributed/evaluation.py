"""One validation result for all ranks: what a controller must see under data parallelism.

Each rank validates on its own shard, so each gets its own score and contributions. A
controller that decides from them would decide differently per rank, and the ranks would
then make different lifecycle calls. :func:`reduce_evaluation` averages the evaluations of
all ranks, weighted by their sample counts, so every rank holds the same numbers (the score
of the whole validation set) and its controller makes the same calls.
"""

from __future__ import annotations

import zlib

import torch
import torch.distributed as dist

from esper_core.distributed.comm import is_distributed
from esper_core.errors import DistributedError
from esper_core.model import Evaluation

__all__ = ["reduce_evaluation"]


def reduce_evaluation(evaluation: Evaluation, group: dist.ProcessGroup | None = None) -> Evaluation:
    """The sample-weighted mean of every rank's ``evaluation``, on every rank (collective).

    ``score`` and each ``contributions[slot_id]`` become ``sum(value_r * samples_r) /
    sum(samples_r)`` over ranks ``r`` (percent, or percentage points), ``samples`` the total:
    exactly what one evaluation of the union of the shards gives, up to float rounding. The
    sums are float64 and all-reduced, so every rank gets bit-identical numbers. Without a
    process group (or with one rank) it returns ``evaluation`` unchanged.

    Raises :class:`~esper_core.errors.DistributedError` (on every rank) when the ranks measured
    contributions for different slots (their lifecycles differ) or a rank evaluated no sample,
    and :class:`TypeError` for something that is not an :class:`~esper_core.model.Evaluation`.
    """
    if not isinstance(evaluation, Evaluation):
        raise TypeError(f"evaluation must be an esper_core.model.Evaluation, got {type(evaluation).__name__}")
    if not is_distributed():
        return evaluation
    slots = sorted(evaluation.contributions)
    weight = float(evaluation.samples)
    key = float(zlib.crc32("\0".join(slots).encode("utf-8")))
    values = [weight, evaluation.score * weight, *(evaluation.contributions[s] * weight for s in slots)]
    # Which slots, and whether a rank had no sample: the max and min over ranks in one call.
    check = torch.tensor([key, -key, -weight], dtype=torch.float64)
    dist.all_reduce(check, op=dist.ReduceOp.MAX, group=group)
    if check[0] != -check[1]:
        raise DistributedError(
            f"ranks measured contributions for different slots (this rank: {slots}); their lifecycles "
            "differ: drive every rank's slots through one DistributedLifecycle"
        )
    if -check[2] <= 0:
        raise DistributedError(
            f"a rank evaluated no sample (this rank: {evaluation.samples}); give every rank a validation shard"
        )
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    samples = float(total[0])
    return Evaluation(
        score=float(total[1]) / samples,
        contributions={s: float(total[2 + i]) / samples for i, s in enumerate(slots)},
        samples=int(samples),
    )
