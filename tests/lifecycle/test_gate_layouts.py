"""Every layout a Topology accepts works with every blend algorithm.

The kind: a gate, an alpha and a blend for any (ndim, feature_axis, sequence_axis) the
Topology constructor accepts, whichever of the two axes comes first. Every accepted
combination of 3-d to 5-d layouts is enumerated; rejected ones must be rejected by the
Topology with a RegistryError, so no layout reaches a slot that GATE cannot serve.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from esper_core.blend import INITIAL_GATE, BlendAlgorithm, BlendGate, blend
from esper_core.errors import LifecycleError, RegistryError
from esper_core.topology import Topology

AXES = "BCLHW"


def _layouts() -> list[tuple[int, int, int | None]]:
    cases = []
    for ndim in (3, 4, 5):
        for feature, sequence in itertools.product(range(1, ndim), [None, *range(1, ndim)]):
            if sequence != feature:
                cases.append((ndim, feature, sequence))
    return cases


def _topology(ndim: int, feature: int, sequence: int | None) -> Topology:
    return Topology(
        name="probe",
        layout="(" + ", ".join(AXES[:ndim]) + ")",
        ndim=ndim,
        feature_axis=feature,
        reference_dim=6,
        description="probe layout",
        example_extent=tuple(range(3, 3 + ndim - 2)),
        sequence_axis=sequence,
    )


@pytest.mark.parametrize(("ndim", "feature", "sequence"), _layouts())
def test_every_accepted_layout_gates_and_blends_causally(
    ndim: int, feature: int, sequence: int | None
) -> None:
    topology = _topology(ndim, feature, sequence)
    host = topology.example_input(6, batch=3, generator=torch.Generator().manual_seed(0))
    blend_gate = BlendGate.for_topology(topology, 6)
    gate = blend_gate(host)
    assert torch.equal(gate, torch.full_like(gate, INITIAL_GATE))  # exactly 0.5 at birth
    expected = [3 if axis == 0 else 1 for axis in range(ndim)]
    if sequence is not None:
        expected[sequence] = host.shape[sequence]  # one gate per position along the sequence
    assert list(gate.shape) == expected
    alpha = torch.full(topology.alpha_shape(3), 0.5)
    for algorithm in BlendAlgorithm:
        out = blend(algorithm, host, host + 1.0, alpha, gate if algorithm is BlendAlgorithm.GATE else None)
        assert out.shape == host.shape
    if sequence is None:
        return
    torch.manual_seed(1)
    with torch.no_grad():
        for p in blend_gate.parameters():
            p.normal_()
        later = host.clone()
        length = host.shape[sequence]
        later.narrow(sequence, length // 2, length - length // 2).add_(3.0)
        before, after = blend_gate(host), blend_gate(later)
    half = length // 2
    assert torch.equal(before.narrow(sequence, 0, half), after.narrow(sequence, 0, half))  # causal
    assert not torch.equal(before, after)  # and it does look at the sequence


@pytest.mark.parametrize(
    ("feature", "sequence", "message"),
    [
        (1, 1, "other than feature_axis"),
        (1, 0, "non-batch axis"),
        (0, None, "feature_axis 0"),
        (1, 3, "non-batch"),
    ],
)
def test_a_layout_no_gate_can_serve_is_refused_at_registration(
    feature: int, sequence: int | None, message: str
) -> None:
    with pytest.raises(RegistryError, match=message):
        _topology(3, feature, sequence)


def test_blend_gate_refuses_the_same_axis_twice() -> None:
    with pytest.raises(LifecycleError, match="distinct non-batch feature and sequence axes"):
        BlendGate(6, ndim=3, feature_axis=1, sequence_axis=1)


def test_channels_first_sequence_regression() -> None:
    """Issue 17.6: (B, C, L) with feature axis 1 and sequence axis 2 was refused by GATE."""
    gate = BlendGate(8, ndim=3, feature_axis=1, sequence_axis=2)
    assert gate(torch.randn(2, 8, 11)).shape == (2, 1, 11)
