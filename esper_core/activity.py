"""Is the seed learning? A scale-free activity measure for the G2 gate.

The measure is the **relative change of each parameter tensor over one measurement
interval** (an epoch, by default)::

    r_i = ||theta_i(now) - theta_i(before)|| / max(||theta_i(before)||, ||theta_i(now)||)

averaged over the seed's parameter tensors with equal weight per tensor. Why this one:

* It is dimensionless and does not depend on how many parameters a tensor or a seed has:
  widening a layer changes numerator and denominator by the same factor, so a LoRA seed of
  rank 16 reads like the same seed at rank 8. Each tensor counts once, so a blueprint with
  many small tensors is not favoured over one with a few large ones.
* It compares a seed with itself, never with the host: the earlier ratio of per-parameter
  gradient RMS (seed / host) depended on the gradient scale typical of each layer type,
  which differs between attention, MLP and normalisation layers.
* It measures what the optimizer actually did (momentum, weight decay and learning rate
  included), not a gradient that an optimizer might ignore; a frozen seed reads exactly 0.
* It is bounded in [0, 2]; a tensor that starts at zero (e.g. a LoRA up-projection, or the
  zero-initialised output layer that makes blueprints the identity at birth) reads 1 as
  soon as it moves, instead of dividing by zero.

Readings are smoothed by an EMA whose first value is taken as is (no bias towards 0), and
"never measured" is an explicit ``None`` that strict G2 treats as a failure. A seed with no
parameters at all (``noop``) can never be measured and so never passes strict G2.

Cost: one copy of the seed's parameters (seeds are small next to the host) and one norm
per tensor per measurement. Non-finite parameters or gradients are reported alongside, so
the slot can mark the seed unhealthy without a second pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from esper_core.errors import LifecycleError

__all__ = ["ActivityMeter", "ActivityReading", "relative_changes"]


def _norm(t: Tensor) -> Tensor:
    # Half precision is upcast so that squares of ordinary weights cannot overflow.
    x = t.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return torch.linalg.vector_norm(x)


def _ratio(delta: float, before: float, after: float) -> float:
    scale = max(before, after)
    return delta / scale if scale > 0 else delta


def relative_changes(before: Sequence[Tensor], after: Sequence[Tensor]) -> list[float]:
    """Per-tensor relative change ``||a - b|| / max(||a||, ||b||)``.

    A tensor that is zero before and after reads 0. Non-finite inputs give non-finite
    entries. All norms are gathered into one tensor and read back with a single transfer.
    """
    if len(before) != len(after):
        raise LifecycleError(
            f"relative_changes needs matching tensor lists, got {len(before)} and {len(after)}"
        )
    if not before:
        return []
    norms = []
    for b, a in zip(before, after, strict=True):
        norms += [_norm(a.detach() - b.detach()), _norm(b), _norm(a)]
    values = _read(norms)
    return [_ratio(*values[i : i + 3]) for i in range(0, len(values), 3)]


def _read(scalars: list[Tensor]) -> list[float]:
    device = scalars[0].device
    return torch.stack([s.to(device, torch.float32) for s in scalars]).tolist()


@attrs.frozen
class ActivityReading:
    """One measurement: the mean relative change, and whether anything was non-finite."""

    value: float | None
    nonfinite_parameters: bool = False
    nonfinite_gradients: bool = False


class ActivityMeter:
    """Holds the reference copy of a seed's parameters between two measurements.

    Not serialised: after a restore the slot calls :meth:`start` again, so the first
    interval after a resume is measured from the resume point.
    """

    def __init__(self) -> None:
        self._reference: list[Tensor] | None = None

    @property
    def started(self) -> bool:
        """Whether a reference copy is held."""
        return self._reference is not None

    def start(self, params: Sequence[Tensor]) -> None:
        """Remember the current values as the start of the next interval."""
        self._reference = [p.detach().clone() for p in params]

    def clear(self) -> None:
        """Drop the reference copy."""
        self._reference = None

    def measure(self, params: Sequence[Tensor]) -> ActivityReading:
        """Relative change since :meth:`start` (or the previous measure), then restart.

        ``value`` is None when there are no parameters or no reference yet. One host
        transfer in total: every norm (changes and gradients) is read back at once.
        """
        grads = [p.grad for p in params if p.grad is not None]
        reference = self._reference
        usable = reference is not None and len(reference) == len(params) and bool(params)
        scalars = [_norm(g) for g in grads]
        if usable:
            assert reference is not None
            for b, a in zip(reference, params, strict=True):
                scalars += [_norm(a.detach() - b), _norm(b), _norm(a)]
        values = _read(scalars) if scalars else []
        self.start(params)
        bad_grads = not all(math.isfinite(v) for v in values[: len(grads)])
        changes = values[len(grads) :]
        if not usable:
            return ActivityReading(value=None, nonfinite_gradients=bad_grads)
        if not all(math.isfinite(v) for v in changes):
            return ActivityReading(value=None, nonfinite_parameters=True, nonfinite_gradients=bad_grads)
        ratios = [_ratio(*changes[i : i + 3]) for i in range(0, len(changes), 3)]
        return ActivityReading(value=sum(ratios) / len(ratios), nonfinite_gradients=bad_grads)
