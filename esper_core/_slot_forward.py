"""The parts of :meth:`SeedSlot.forward <esper_core.slot.SeedSlot.forward>`, as functions of their inputs.

**What forward reads, and torch.compile.** ``forward`` branches only on plain attributes
the slot sets at commit (:func:`mirrored`: ``_runs``, ``_straight``, ``_isolate``,
``_down``, ``_algorithm``) and reads alpha from the 0-dim buffer ``_alpha_value``, never
the Python float. Dynamo guards on the plain attributes, so a stage change recompiles
once, and it treats the buffer as a graph input, so a ramp over many epochs reuses one
graph. The buffer is filled in place: call ``step_epoch`` between iterations, not between
a forward and its backward.

The functions here take those values, the seed and blend-gate modules and the tensors as
arguments and read nothing else, so what they compute is what the arguments say. The
mixing is :func:`~esper_core.blend.blend`; the gradient stop, the in-place-write check and
the straight-through incubator are :mod:`esper_core.isolation`'s.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from esper_core.alpha import AlphaMode, BlendAlgorithm
from esper_core.blend import blend
from esper_core.errors import LifecycleError
from esper_core.isolation import check_host_untouched, host_version, seed_input
from esper_core.slot_state import SlotState
from esper_core.stages import RUNS_SEED, SeedStage, isolated_in
from esper_core.topology import Topology

__all__ = ["check_features", "mirrored", "mixed", "seed_output"]


def mirrored(state: SlotState, *, isolate_blending: bool) -> dict[str, Any]:
    """The plain attributes ``forward`` branches on in ``state``, by attribute name: whether
    the stage runs the seed, passes the host straight through (TRAINING), isolates the seed
    input, ramps alpha down (seed and gate then run without autograd, so they do not learn
    to fight their own removal), and the blend algorithm."""
    return {
        "_runs": state.stage in RUNS_SEED,
        "_straight": state.stage is SeedStage.TRAINING,
        "_isolate": isolated_in(state.stage, isolate_blending=isolate_blending),
        "_down": state.schedule.mode is AlphaMode.DOWN,
        "_algorithm": state.algorithm,
    }


def check_features(h: Tensor, topology: Topology, dim: int, slot_id: str, blueprint: str | None) -> None:
    """Raise :class:`LifecycleError` unless ``h`` has the topology's number of dimensions and
    ``dim`` features on its feature axis (the width the seed was built for)."""
    if h.dim() != topology.ndim or h.shape[topology.feature_axis] != dim:
        raise LifecycleError(
            f"slot {slot_id!r} ({topology.name}, dim {dim}) received features of shape "
            f"{tuple(h.shape)}: its seed {blueprint!r} was built for {dim} features on axis "
            f"{topology.feature_axis}; the slot's dim does not match its injection point "
            "(inject with the right dim, or give inject_slots an example_input to check it)"
        )


def seed_output(
    seed: nn.Module, h: Tensor, *, isolate: bool, frozen: bool, slot_id: str, blueprint: str | None
) -> tuple[Tensor, Tensor]:
    """``(x, s)``: the seed's input ``x`` (``h``, behind a gradient stop when ``isolate``) and
    its output ``s = seed(x)``, computed without autograd when ``frozen``.

    Raises :class:`LifecycleError` when the seed wrote into ``x`` in place (which is ``h``'s
    storage): the host's features would have changed.
    """
    x = seed_input(h, isolate=isolate)
    version = host_version(h)
    if frozen:
        with torch.no_grad():
            s = seed(x)
    else:
        s = seed(x)
    check_host_untouched(h, version, slot_id, blueprint)
    return x, s


def mixed(
    algorithm: BlendAlgorithm,
    h: Tensor,
    x: Tensor,
    s: Tensor,
    alpha: Tensor,
    blend_gate: nn.Module | None,
    *,
    frozen: bool,
) -> Tensor:
    """``s`` blended into ``h`` with amplitude ``alpha`` (see :func:`~esper_core.blend.blend`),
    the blend gate (if any) read from the seed's input ``x``, without autograd when ``frozen``."""
    if blend_gate is None:
        gate = None
    elif frozen:
        with torch.no_grad():
            gate = blend_gate(x)
    else:
        gate = blend_gate(x)
    return blend(algorithm, h, s, alpha, gate, reference=x)
