"""Governor: a seed that produces non-finite numbers is pruned; the host is never corrupted."""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F

from esper_core.gates import QualityGates
from esper_core.governor import Governor
from esper_core.hosts import CNNHost
from esper_core.model import MorphogeneticModel
from esper_core.optim import OptimizerBinding
from esper_core.stages import SeedStage

from .conftest import drive


def _blended(permissive: QualityGates, slot_id: str = "r0c1"):
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(3, in_channels=1, base_channels=4), gates=permissive)
    optimizer = torch.optim.SGD(model.host.parameters(), lr=0.1, momentum=0.9)
    OptimizerBinding(optimizer, model.slots)
    model.germinate(slot_id, "toy_conv")
    drive(model.slots[slot_id], SeedStage.BLENDING)
    model.slots[slot_id].step_epoch()
    events = []
    model.slots[slot_id].add_observer(events.append)
    return model, optimizer, Governor(model, model.slots), events


def _train_step(model, optimizer, governor, x, y):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    verdict = governor.check_loss(loss, lambda: model(x))
    if verdict.ok:
        loss.backward()
        verdict = governor.check_gradients()
        if verdict.ok:
            optimizer.step()
    return verdict


def _host_snapshot(model: MorphogeneticModel) -> dict[str, torch.Tensor]:
    return copy.deepcopy(model.host.state_dict())


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_nan_parameters_prune_the_seed_and_training_continues(permissive: QualityGates) -> None:
    model, optimizer, governor, events = _blended(permissive)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    assert _train_step(model, optimizer, governor, x, y).ok
    host = _host_snapshot(model)
    with torch.no_grad():
        model.slots["r0c1"].seed.conv.weight[0, 0] = float("nan")
    verdict = _train_step(model, optimizer, governor, x, y)
    assert not verdict.ok and verdict.pruned == ("r0c1",)
    assert "non-finite loss" in verdict.reason
    assert model.slots["r0c1"].stage is SeedStage.PRUNED
    pruned = [e for e in events if type(e).__name__ == "SeedPruned"]
    assert len(pruned) == 1 and "governor" in pruned[0].reason and pruned[0].initiator == "governor"
    _assert_same(host, _host_snapshot(model))  # weights and BatchNorm statistics untouched
    assert _train_step(model, optimizer, governor, x, y).ok  # and training goes on
    assert all(torch.isfinite(p).all() for p in model.host.parameters())


def test_finite_weights_with_exploding_activations_are_traced_to_the_seed(permissive: QualityGates) -> None:
    model, optimizer, governor, _ = _blended(permissive, "r1c0")
    model.germinate("r0c2", "toy_conv")  # an innocent second seed downstream
    drive(model.slots["r0c2"], SeedStage.BLENDING)
    model.slots["r0c2"].step_epoch()
    governor = Governor(model, model.slots)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    host = _host_snapshot(model)
    with torch.no_grad():
        model.slots["r1c0"].seed.conv.weight.fill_(3e38)  # finite, but the output overflows
    verdict = _train_step(model, optimizer, governor, x, y)
    assert verdict.pruned == ("r1c0",)
    assert model.slots["r0c2"].stage is SeedStage.BLENDING
    _assert_same(host, _host_snapshot(model))


def test_non_finite_seed_gradients_prune_and_skip_the_step(permissive: QualityGates) -> None:
    model, optimizer, governor, _ = _blended(permissive)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    host = _host_snapshot(model)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    assert governor.check_loss(loss, lambda: model(x)).ok
    loss.backward()
    model.slots["r0c1"].seed.conv.bias.grad[0] = float("inf")
    verdict = governor.check_gradients()
    assert verdict.pruned == ("r0c1",) and "gradients" in verdict.reason
    assert all(p.grad is None for p in model.host.parameters())
    host_after = _host_snapshot(model)
    for key in host:  # the forward above updated BatchNorm statistics; the weights are what matter
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(host[key], host_after[key]), key


def test_host_caused_nan_skips_the_step_without_pruning(permissive: QualityGates) -> None:
    model, optimizer, governor, _ = _blended(permissive)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    x[0, 0, 0, 0] = float("nan")
    host = _host_snapshot(model)
    verdict = _train_step(model, optimizer, governor, x, y)
    assert not verdict.ok and verdict.pruned == () and "no seed responsible" in verdict.reason
    assert model.slots["r0c1"].stage is SeedStage.BLENDING
    _assert_same(host, _host_snapshot(model))
    assert governor.interventions == [verdict]
