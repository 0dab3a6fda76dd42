"""``DistributedLifecycle.state_dict``: a resumed command stream builds the same seeds.

Seed weights and new blend gates are built under an RNG seeded from the stream's base seed
and the call number; a resumed run that restarted the count would build other weights at
the same call. One process here (no process group: the same code path as rank 0); the
two-rank resume runs in ``tests/docs/test_examples.py`` (the multi-process example).
"""

from __future__ import annotations

import pytest
import torch

from esper_core.alpha import BlendAlgorithm
from esper_core.checkpoint import load_checkpoint
from esper_core.distributed import DistributedLifecycle
from esper_core.errors import CheckpointError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import MorphogeneticModel


def _model() -> MorphogeneticModel:
    torch.manual_seed(0)
    return MorphogeneticModel(
        CNNHost(3, in_channels=1, n_blocks=2, base_channels=4), gates=QualityGates("permissive")
    )


def _weights(model: MorphogeneticModel, slot_id: str) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.slot(slot_id).seed_parameters()]


def _first_half(lifecycle: DistributedLifecycle) -> None:
    lifecycle.germinate("r0c0", "conv_small", ramp_epochs=2)
    lifecycle.advance("r0c0")
    lifecycle.step_epoch()


def _second_half(lifecycle: DistributedLifecycle) -> None:
    lifecycle.germinate("r0c1", "depthwise", algorithm=BlendAlgorithm.GATE)  # seed and blend gate: random


@pytest.mark.parametrize("restore", [True, False])
def test_a_resumed_stream_builds_the_same_seed_weights(restore: bool) -> None:
    model = _model()
    with DistributedLifecycle(model) as lifecycle:
        _first_half(lifecycle)
        saved_model, saved_stream = model.state_dict(), lifecycle.state_dict()
        _second_half(lifecycle)
    expected = _weights(model, "r0c1")

    torch.manual_seed(1234)  # another process, seeded otherwise: the base seed comes from the file
    fresh = MorphogeneticModel(
        CNNHost(3, in_channels=1, n_blocks=2, base_channels=4), gates=QualityGates("permissive")
    )
    load_checkpoint(fresh, saved_model)
    with DistributedLifecycle(fresh) as resumed:
        if restore:
            resumed.load_state_dict(saved_stream)
            assert resumed.state_dict() == saved_stream
        _second_half(resumed)
    same = all(torch.equal(a, b) for a, b in zip(_weights(fresh, "r0c1"), expected, strict=True))
    assert same is restore  # without the stream's state the weights differ: the test can fail


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"version": 1, "calls": 3}, "keys ['version', 'calls', 'base_seed']"),
        ({"version": 2, "calls": 3, "base_seed": 5}, "'version': got 2"),
        ({"version": 1, "calls": -1, "base_seed": 5}, "'calls': got -1"),
        ({"version": 1, "calls": True, "base_seed": 5}, "'calls': got True"),
        ({"version": 1, "calls": 3, "base_seed": 2.5}, "'base_seed': got 2.5"),
        ("calls=3", "must be a dict"),
    ],
)
def test_a_bad_stream_state_names_the_field_and_changes_nothing(state: object, message: str) -> None:
    with DistributedLifecycle(_model()) as lifecycle:
        _first_half(lifecycle)
        before = lifecycle.state_dict()
        with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
            lifecycle.load_state_dict(state)
        assert lifecycle.state_dict() == before
