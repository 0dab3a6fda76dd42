"""Training compute of the demo's models, from exact forward FLOP counts.

Convention (the one :class:`torch.utils.flop_counter.FlopCounterMode` and the blueprint
packs' closed-form counts share): a multiply-accumulate of a matrix product or a
convolution is 2 FLOPs; biases, normalisation, activations, pooling and element-wise
arithmetic are not counted.

* **Forward FLOPs per sample** are exact: the host's come from ``FlopCounterMode`` on one
  sample (once per host shape; every count is linear in the batch), run with PyTorch's
  MATH attention backend so that scaled dot-product attention shows up as its two dense
  batched products (``QK^T`` and ``AV``) - the fused CPU kernel is invisible to the
  counter, and the blueprint packs count attention the dense way too; a seed's from its
  blueprint's closed-form ``flop_count`` at the activation shape of its slot (measured
  with ``FlopCounterMode`` on the seed module only when a blueprint declares no count).
* **Training FLOPs** of a step are ``3 x forward FLOPs x samples``: the backward pass of a
  matrix product costs two products of the same size (gradients of the input and of the
  weight), the usual ``C = 6 N D`` accounting of Kaplan et al. 2020, "Scaling Laws for
  Neural Language Models", section 2.1. The same rule is applied to every model. It
  slightly overstates the grown model: a seed in TRAINING sees a detached input, so no
  input gradient is computed for it.
* **Evaluation FLOPs** (reported apart, not part of training compute) are the extra
  forward passes of the grown model's counterfactual measurement: one full forward per
  configuration (all seeds, then each blended seed at alpha 0) on the validation set.

The grown model's cost changes as seeds come and go, so it is summed step by step from
which seeds ran (stages in which the slot runs its seed) at that step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from esper_core.registry import flop_count
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

__all__ = [
    "FLOP_CONVENTION",
    "TRAIN_FLOPS_PER_FORWARD",
    "SeedCosts",
    "forward_flops",
    "point_shapes",
]

#: Training FLOPs per forward FLOP (forward once, backward twice; Kaplan et al. 2020, 2.1).
TRAIN_FLOPS_PER_FORWARD = 3

#: One line for reports.
FLOP_CONVENTION = (
    "2 FLOPs per multiply-accumulate of matrix products and convolutions (torch FlopCounterMode "
    "convention; element-wise work not counted); training = 3 x forward (Kaplan et al. 2020, 2.1)"
)

# Stages in which a slot runs its seed in the forward pass (GERMINATED holds a seed that
# does not run yet; PRUNED and later hold none).
_RUNS_SEED = frozenset({SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED})


def forward_flops(module: nn.Module, example: Tensor) -> int:
    """FLOPs of one forward pass of ``module`` on ``example``, counted by ``FlopCounterMode``.

    Runs in eval mode without autograd (neither changes the count under the convention
    above) and with the MATH attention backend (see the module docstring), and restores the
    module's mode afterwards.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            module(example)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def point_shapes(host: nn.Module, example: Tensor) -> dict[str, tuple[int, ...]]:
    """The activation shape at every injection point of ``host`` for ``example`` (batch kept)."""
    was_training = host.training
    host.eval()
    try:
        return {
            p.slot_id: tuple(host.forward_segment(example, None, p.slot_id).shape)
            for p in host.injection_points()
        }
    finally:
        host.train(was_training)


def _seed_forward_flops(slot: SeedSlot, shape: tuple[int, ...]) -> int:
    report = slot.report()
    assert report.blueprint is not None and slot.seed is not None
    count = flop_count(slot.topology, report.blueprint, slot.dim, shape, **dict(report.options))
    if count is None:  # the blueprint declares no closed form: measure its module
        count = forward_flops(slot.seed, torch.zeros(shape))
    return count


class SeedCosts:
    """Forward FLOPs per sample of the seeds running in ``slots`` right now.

    ``shapes`` maps each slot id to its per-sample activation shape (:func:`point_shapes`
    with a batch of 1). Each seed module is priced once, when it is first seen.
    """

    def __init__(self, slots: Mapping[str, SeedSlot], shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.slots = dict(slots.items())
        self.shapes = dict(shapes)
        self._priced: dict[int, tuple[nn.Module, int]] = {}

    def running(self) -> int:
        """Forward FLOPs per sample of every seed that runs in the forward pass now."""
        total = 0
        for slot_id, slot in self.slots.items():
            seed = slot.seed
            if seed is None or slot.stage not in _RUNS_SEED:
                continue
            priced = self._priced.get(id(seed))
            if priced is None or priced[0] is not seed:  # id() of a freed module can be reused
                priced = (seed, _seed_forward_flops(slot, self.shapes[slot_id]))
                self._priced[id(seed)] = priced
            total += priced[1]
        return total
