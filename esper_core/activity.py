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

import torch
from torch import Tensor, nn

from esper_core import stages as st
from esper_core.errors import LifecycleError
from esper_core.evidence import ActivityEvidence

__all__ = ["ActivityMeter", "relative_changes"]


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


class ActivityMeter:
    """A seed's activity between two measurements: the reference copy of its parameters, and
    its last training output (checked for non-finite values at the next measurement).

    Not serialised: after a restore the slot takes the reference again once the checkpoint's
    tensors are in, so the first interval after a resume is measured from the resume point.
    """

    def __init__(self) -> None:
        self._reference: list[Tensor] | None = None
        #: The seed's last output in a training forward (detached), or None.
        self.last_output: Tensor | None = None

    @property
    def started(self) -> bool:
        """Whether a reference copy is held."""
        return self._reference is not None

    def start(self, params: Sequence[Tensor]) -> None:
        """Remember the current values as the start of the next interval."""
        self._reference = [p.detach().clone() for p in params]

    def clear(self) -> None:
        """Drop the reference copy and the last output."""
        self._reference = None
        self.last_output = None

    def follow(
        self, old: st.SeedStage, new: st.SeedStage, seed: nn.Module | None, *, restart: bool, reference: bool
    ) -> None:
        """Keep a reference exactly while a stage runs the seed: dropped when the seed is gone,
        taken on entering a stage that runs it (or on every ``restart``, a restore), unless
        ``reference`` is False (a load follows; the slot takes it once the tensors are in)."""
        if new not in st.LIVE:
            self.clear()
        elif new in st.RUNS_SEED and (restart or old not in st.RUNS_SEED):
            if reference and seed is not None:
                self.start(list(seed.parameters()))
            else:
                self.clear()

    def evidence(self, seed: nn.Module | None) -> ActivityEvidence:
        """:meth:`measure` of ``seed``'s parameters, with the last output's finiteness; restarts."""
        reading = self.measure([] if seed is None else list(seed.parameters()))
        last, self.last_output = self.last_output, None
        return ActivityEvidence(
            value=reading.value,
            nonfinite_parameters=reading.nonfinite_parameters,
            nonfinite_gradients=reading.nonfinite_gradients,
            nonfinite_output=last is not None and not bool(torch.isfinite(last).all()),
        )

    def measure(self, params: Sequence[Tensor]) -> ActivityEvidence:
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
            return ActivityEvidence(value=None, nonfinite_gradients=bad_grads)
        if not all(math.isfinite(v) for v in changes):
            return ActivityEvidence(value=None, nonfinite_parameters=True, nonfinite_gradients=bad_grads)
        ratios = [_ratio(*changes[i : i + 3]) for i in range(0, len(changes), 3)]
        return ActivityEvidence(value=sum(ratios) / len(ratios), nonfinite_gradients=bad_grads)
