"""OptimizerBinding: seed param groups come and go with seeds; nothing else changes."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch.nn import functional as F

from esper_core.blend import BlendAlgorithm
from esper_core.errors import CheckpointError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost, HostError
from esper_core.model import MorphogeneticModel
from esper_core.optim import SLOT_KEY, OptimizerBinding
from esper_core.stages import SeedStage

from .conftest import drive


def _setup(permissive: QualityGates) -> tuple[MorphogeneticModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(3, in_channels=1, base_channels=4), gates=permissive)
    return model, torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))


def _steps(
    model: MorphogeneticModel, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, n: int = 2
) -> None:
    for _ in range(n):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _host_state(model: MorphogeneticModel, optimizer: torch.optim.Optimizer) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in optimizer.state[p].items()} for p in model.host.parameters()]


def _same_state(a: list[dict], b: list[dict]) -> bool:
    return all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


def _tags(optimizer: torch.optim.Optimizer) -> list[str | None]:
    return [g.get(SLOT_KEY) for g in optimizer.param_groups]


def test_every_slot_has_a_group_from_the_start_and_seeds_fill_it(permissive: QualityGates) -> None:
    model, x, y = _setup(permissive)
    optimizer = torch.optim.SGD(model.host.parameters(), lr=0.1, momentum=0.9)
    binding = OptimizerBinding(optimizer, model.slots, lr=0.02, weight_decay=1e-4)
    assert _tags(optimizer) == [None, *model.slot_ids]  # one group per slot, in slot order
    assert all(binding.group(s)["params"] == [] for s in model.slot_ids)
    _steps(model, optimizer, x, y)
    host_state = _host_state(model, optimizer)
    model.germinate("r0c1", "toy_conv")
    seed_params = model.slots["r0c1"].seed_parameters()
    group = binding.group("r0c1")
    assert group[SLOT_KEY] == "r0c1"
    assert group["lr"] == 0.02 and group["weight_decay"] == 1e-4 and group["momentum"] == 0.9
    assert [id(p) for p in group["params"]] == [id(p) for p in seed_params]
    assert len(optimizer.param_groups) == 1 + len(model.slot_ids) and optimizer.param_groups[0]["lr"] == 0.1
    assert _same_state(host_state, _host_state(model, optimizer))  # joining touched no other state
    drive(model.slots["r0c1"], SeedStage.BLENDING)
    model.slots["r0c1"].step_epoch()
    _steps(model, optimizer, x, y)
    assert all("momentum_buffer" in optimizer.state[p] for p in seed_params)
    host_state = _host_state(model, optimizer)
    model.prune("r0c1", "test", "test")
    assert binding.group("r0c1")["params"] == [] and len(optimizer.param_groups) == 1 + len(model.slot_ids)
    assert all(p not in optimizer.state for p in seed_params)
    assert _same_state(host_state, _host_state(model, optimizer))
    _steps(model, optimizer, x, y)  # training goes on without the seed


def test_blend_gate_parameters_join_too(permissive: QualityGates) -> None:
    model, _, _ = _setup(permissive)
    optimizer = torch.optim.SGD(model.host.parameters(), lr=0.1)
    binding = OptimizerBinding(optimizer, model.slots)
    model.germinate("r1c0", "toy_conv", algorithm=BlendAlgorithm.GATE)
    slot = model.slots["r1c0"]
    assert slot.blend_gate is not None
    gate_ids = {id(p) for p in slot.blend_gate.parameters()}
    assert gate_ids and gate_ids <= {id(p) for p in binding.group("r1c0")["params"]}
    assert binding.group("r1c0")["lr"] == 0.1  # default: the optimizer's lr


def _trained_with_reverse_order_seeds(permissive: QualityGates):
    model, x, y = _setup(permissive)
    optimizer = torch.optim.AdamW(model.host.parameters(), lr=1e-2)
    OptimizerBinding(optimizer, model.slots, lr=3e-2)
    for slot_id in ("r1c1", "r0c0"):  # germinated in the reverse of slot order
        model.germinate(slot_id, "toy_conv")
        drive(model.slots[slot_id], SeedStage.BLENDING)
        model.slots[slot_id].step_epoch()
    _steps(model, optimizer, x, y, n=3)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    return model, optimizer, torch.load(buffer, weights_only=True), x, y


def _assert_resumes_identically(model, optimizer, fresh, x, y) -> None:
    for p in model.parameters():
        if p in optimizer.state:
            for key, value in optimizer.state[p].items():
                assert torch.equal(fresh.state[p][key], value)
    snapshot = copy.deepcopy(model.state_dict())
    _steps(model, optimizer, x, y, n=1)
    after_original = [p.detach().clone() for p in model.parameters()]
    model.load_state_dict(snapshot)
    _steps(model, fresh, x, y, n=1)
    assert all(torch.equal(a, p) for a, p in zip(after_original, model.parameters(), strict=True))


def test_adamw_state_dict_round_trip(permissive: QualityGates) -> None:
    model, optimizer, saved, x, y = _trained_with_reverse_order_seeds(permissive)
    assert [g.get(SLOT_KEY) for g in saved["param_groups"]] == [None, *model.slot_ids]
    fresh = torch.optim.AdamW(model.host.parameters(), lr=1e-2)
    binding = OptimizerBinding(fresh, model.slots, lr=3e-2)
    binding.load_optimizer_state(saved)
    assert _tags(fresh) == [None, *model.slot_ids]
    _assert_resumes_identically(model, optimizer, fresh, x, y)


def test_states_with_only_seed_groups_in_join_order_still_load(permissive: QualityGates) -> None:
    """The format of earlier versions: one group per seed, in the order the seeds joined."""
    model, optimizer, saved, x, y = _trained_with_reverse_order_seeds(permissive)
    by_tag = {g.get(SLOT_KEY): g for g in saved["param_groups"]}
    saved = {"state": saved["state"], "param_groups": [by_tag[None], by_tag["r1c1"], by_tag["r0c0"]]}
    fresh = torch.optim.AdamW(model.host.parameters(), lr=1e-2)
    binding = OptimizerBinding(fresh, model.slots, lr=3e-2)
    binding.load_optimizer_state(saved)
    assert _tags(fresh) == [None, *model.slot_ids]  # the optimizer's own order is kept
    assert binding.group("r0c1")["lr"] == 3e-2 and binding.group("r0c1")["params"] == []
    _assert_resumes_identically(model, optimizer, fresh, x, y)


def test_mismatched_checkpoint_and_bad_arguments(permissive: QualityGates) -> None:
    model, _, _ = _setup(permissive)
    optimizer = torch.optim.AdamW(model.host.parameters())
    binding = OptimizerBinding(optimizer, model.slots)
    model.germinate("r0c0", "toy_conv")
    saved = optimizer.state_dict()
    model.prune("r0c0", "test", "test")
    before = [dict(g) for g in optimizer.param_groups]
    with pytest.raises(CheckpointError, match=r"param_groups\[1\]\.params.*2 parameters.*'r0c0' has 0"):
        binding.load_optimizer_state(saved)
    assert [dict(g) for g in optimizer.param_groups] == before  # unchanged
    with pytest.raises(HostError, match=r"torch\.optim\.Optimizer, got list"):
        OptimizerBinding([], model.slots)
    with pytest.raises(HostError, match="lr must be"):
        OptimizerBinding(optimizer, model.slots, lr=-1.0)
    with pytest.raises(HostError, match="lr must be"):
        OptimizerBinding(optimizer, model.slots, lr=float("nan"))
    with pytest.raises(HostError, match=r"may not set \['params'\]"):
        OptimizerBinding(optimizer, model.slots, params=[])
    with pytest.raises(HostError, match="LBFGS"):
        OptimizerBinding(torch.optim.LBFGS(model.host.parameters()), model.slots)
    with pytest.raises(HostError, match="not bound"):
        binding.group("nope")
    binding.close()
    model.slots["r0c0"].step_epoch()


def test_pruning_one_of_several_similar_seeds_empties_only_its_group(permissive: QualityGates) -> None:
    model, _, _ = _setup(permissive)
    optimizer = torch.optim.SGD(model.host.parameters(), lr=0.1)
    binding = OptimizerBinding(optimizer, model.slots)
    for slot_id in ("r0c0", "r1c0", "r0c1"):  # r0c0 and r1c0 have equal shapes: groups compare equal by value
        model.germinate(slot_id, "toy_conv")
    model.prune("r1c0", "test", "test")
    held = {s: len(binding.group(s)["params"]) for s in model.slot_ids}
    assert held == {"r0c0": 2, "r1c0": 0, "r0c1": 2, "r1c1": 0, "r0c2": 0, "r1c2": 0}
    assert _tags(optimizer) == [None, *model.slot_ids]


def test_a_second_binding_reuses_the_groups(permissive: QualityGates) -> None:
    model, _, _ = _setup(permissive)
    optimizer = torch.optim.SGD(model.host.parameters(), lr=0.1)
    first = OptimizerBinding(optimizer, model.slots)
    model.germinate("r0c0", "toy_conv")
    first.close()
    second = OptimizerBinding(optimizer, model.slots)
    assert _tags(optimizer) == [None, *model.slot_ids]
    assert len(second.group("r0c0")["params"]) == 2


def test_seed_parameters_already_in_the_optimizer_are_refused(permissive: QualityGates) -> None:
    model, _, _ = _setup(permissive)
    model.germinate("r0c0", "toy_conv")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # the seed's parameters too: a mistake
    with pytest.raises(HostError, match=r"already in another param group.*host_parameters"):
        OptimizerBinding(optimizer, model.slots)
    assert len(optimizer.param_groups) == 1  # nothing was added
    model.germinate("r0c1", "toy_conv")  # and nothing listens to the slots
    assert len(optimizer.param_groups) == 1
