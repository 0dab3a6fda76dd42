"""The kit makes inputs from the spec's own topology, so a pack's new topology works."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from esper_core import registry as registry_module
from esper_core.registry import Source, build_registry
from esper_core.spec import BlueprintSpec
from esper_core.testing import Check, conformance_report
from esper_core.topology import Topology

SIGNAL = Topology(
    name="signal",
    layout="(B, C, L)",
    ndim=3,
    feature_axis=1,
    reference_dim=16,
    description="1-d signals with channels first (test topology)",
    example_extent=(11,),
)


class SignalSeed(nn.Module):
    seen: ClassVar[list[tuple[int, ...]]] = []  # input shapes the kit fed in

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mix = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.out = nn.Conv1d(dim, dim, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SignalSeed.seen.append(tuple(x.shape))
        return x + self.out(torch.tanh(self.mix(x)))


SPEC = BlueprintSpec(
    name="smooth",
    topology="signal",
    factory=SignalSeed,
    param_count=lambda dim: 3 * dim * dim + dim + dim * dim + dim,
    description="1-d conv residual (test blueprint)",
)


def test_a_pack_topology_is_exercised_with_its_own_layout(monkeypatch):
    registry = build_registry()
    registry.register_topology(SIGNAL, Source("esper-signal-test", "0", "esper-signal-test:plugin"))
    monkeypatch.setattr(registry_module, "_registry", registry)  # restored after the test
    SignalSeed.seen.clear()
    report = conformance_report(SPEC, dims=[5, 8, 300])
    assert report.passed, report.format()
    assert (2, 8, 11) in SignalSeed.seen and (2, 5, 11) in SignalSeed.seen
    assert Check.CHANNELS_LAST not in report.checks_run  # the topology does not use it
    assert Check.CAUSAL not in report.checks_run  # no sequence axis


def test_a_wrong_count_on_a_pack_topology_is_still_caught(monkeypatch):
    registry = build_registry()
    registry.register_topology(SIGNAL, Source("esper-signal-test", "0", "esper-signal-test:plugin"))
    monkeypatch.setattr(registry_module, "_registry", registry)
    wrong = BlueprintSpec(
        name="smooth",
        topology="signal",
        factory=SignalSeed,
        param_count=lambda dim: 4 * dim * dim,  # forgot both biases
        description="1-d conv residual (test blueprint)",
    )
    report = conformance_report(wrong, dims=[5, 300])
    assert report.failed_checks == {Check.PARAM_COUNT}
    assert {f.dim for f in report.failures} == {5, 300}
