"""Copies of a model with injected slots are independent, working models.

The kind: every way PyTorch users copy or serialise a whole module - ``copy.deepcopy``,
``pickle``, ``torch.save(model)`` + ``torch.load(weights_only=False)``, and a ``state_dict``
loaded into a fresh model injected the same way - must give a model whose submodules call
*its own* slots, whose lifecycle, weights and hooks are its own, and which computes what
the original computed at the time of the copy. ``copy.copy`` is shallow, as for any
``nn.Module``: it shares submodules and slots with the original.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from esper_core import load_checkpoint
from esper_core.gates import QualityGates
from esper_core.inject import get_injection, inject_slots, remove_slots
from esper_core.optim import OptimizerBinding, host_parameters
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage
from esper_core.telemetry import Observers

from .conftest import drive


@pytest.fixture(params=["slot_copies_observers", "slot_drops_observers"], autouse=True)
def observer_copies(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice: with a slot that carries its observers into a copy, and with
    one that drops them (an observer belongs to whoever registered it). The injection must
    reconnect its attachments either way."""
    if request.param == "slot_drops_observers":
        own = SeedSlot.__getstate__

        def getstate(slot: SeedSlot) -> dict:
            return {**own(slot), "_observers": Observers(slot.slot_id)}

        monkeypatch.setattr(SeedSlot, "__getstate__", getstate, raising=False)
    return request.param


class TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.GELU())
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.embed(x)))


class ConvModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1).flatten(1))


def _encoder() -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


#: name -> (factory, targets, blueprint, input shape)
MODELS = {
    "tokens": (TokenModel, {"embed": "transformer", "block": "transformer"}, "toy_linear", (2, 4, 5)),
    "conv": (ConvModel, {"stem": "cnn", "body": "cnn"}, "toy_conv", (2, 3, 5, 5)),
    "encoder": (
        _encoder,
        {"layers.0": "transformer", "layers.1.linear2": "transformer"},
        "toy_linear",
        (2, 4, 8),
    ),
}


def _deepcopy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def _pickle(model: nn.Module) -> nn.Module:
    return pickle.loads(pickle.dumps(model))


def _torch_save(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _state_dict_reload(name: str) -> Callable[[nn.Module], nn.Module]:
    def reload(model: nn.Module) -> nn.Module:
        fresh = _fresh(name)
        fresh.load_state_dict(model.state_dict())
        return fresh

    return reload


def _checkpoint_reload(name: str) -> Callable[[nn.Module], nn.Module]:
    def reload(model: nn.Module) -> nn.Module:
        fresh = _fresh(name)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        load_checkpoint(fresh, torch.load(buffer, weights_only=True))
        return fresh

    return reload


def _fresh(name: str) -> nn.Module:
    torch.manual_seed(7)  # other weights than the original: the reload must bring them
    factory, targets, _, shape = MODELS[name]
    model = factory()
    inject_slots(model, targets, example_input=torch.zeros(shape), gates=QualityGates("permissive"))
    return model


def _original(name: str) -> nn.Module:
    torch.manual_seed(0)
    factory, targets, blueprint, shape = MODELS[name]
    model = factory()
    slots = inject_slots(model, targets, example_input=torch.zeros(shape), gates=QualityGates("permissive"))
    first = next(iter(slots.values()))
    first.germinate(blueprint)
    drive(first, SeedStage.HOLDING)
    _perturb(first, 1)
    return model


def _perturb(slot: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


def _input(name: str) -> torch.Tensor:
    return torch.randn(MODELS[name][3], generator=torch.Generator().manual_seed(11))


def _slot_calls(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Run ``model`` on ``x`` once; how often each of its own slots was called (an empty one is not)."""
    calls = dict.fromkeys(model.esper_slots, 0)
    handles = [
        slot.register_forward_hook(lambda *_a, s=slot_id: calls.__setitem__(s, calls[s] + 1))
        for slot_id, slot in model.esper_slots.items()
    ]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


COPIERS = {
    "deepcopy": lambda _name: _deepcopy,
    "pickle": lambda _name: _pickle,
    "torch_save": lambda _name: _torch_save,
    "state_dict": _state_dict_reload,
    "load_checkpoint": _checkpoint_reload,
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("how", list(COPIERS))
def test_copy_is_an_independent_working_model(name: str, how: str) -> None:
    original = _original(name).eval()
    x = _input(name)
    with torch.no_grad():
        before = original(x)
    clone = COPIERS[how](name)(original).eval()
    with torch.no_grad():
        torch.testing.assert_close(clone(x), before, rtol=0, atol=0)

    # The copy's submodules call the copy's slots, never the original's.
    first_id, second_id = list(original.esper_slots)
    counts = {first_id: 1, second_id: 0}
    assert _slot_calls(clone, x) == counts and _slot_calls(original, x) == counts
    injection = get_injection(clone)
    assert injection is not None and injection.slots is clone.esper_slots
    own = {id(m) for m in clone.modules()}
    for attachment in injection.attachments:
        assert id(attachment.module) in own and id(attachment.slot) in own

    # Growing a seed in the original does not move the copy, and the other way round.
    _, _, blueprint, _ = MODELS[name]
    original.esper_slots[second_id].germinate(blueprint)
    drive(original.esper_slots[second_id], SeedStage.HOLDING)
    _perturb(original.esper_slots[second_id], 2)
    _perturb(next(iter(original.esper_slots.values())), 3)
    with torch.no_grad():
        assert not torch.allclose(original(x), before)
        torch.testing.assert_close(clone(x), before, rtol=0, atol=0)
        moved = original(x)
    assert clone.esper_slots[second_id].stage is SeedStage.DORMANT
    _perturb(next(iter(clone.esper_slots.values())), 4)
    with torch.no_grad():
        assert not torch.allclose(clone(x), before)
        torch.testing.assert_close(original(x), moved, rtol=0, atol=0)

    # The copy trains on its own: one step changes only the copy's seed.
    clone.train()
    seed_before = [p.detach().clone() for p in original.esper_slots.parameters()]
    optimizer = torch.optim.SGD(clone.parameters(), lr=0.1)
    clone(x).square().mean().backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(seed_before, original.esper_slots.parameters(), strict=True))

    # Removing the copy's slots (and its seed) restores the copy alone.
    remove_slots(clone, discard_seeds=True)
    assert "forward" not in vars(clone.get_submodule(next(iter(MODELS[name][1]))))
    assert _slot_calls(original, x) == {first_id: 1, second_id: 1}


@pytest.mark.parametrize("how", list(COPIERS))
def test_each_copy_keeps_its_own_fused_path_breaker(how: str) -> None:
    """The hook that keeps torch's fused paths calling a seeded target belongs to each copy
    (a state_dict reload gets one when the loaded slot holds a seed)."""
    original = _original("encoder")
    target = original.get_submodule("layers.0")
    assert len(target._forward_pre_hooks) == 1  # the slot holds a seed
    clone = COPIERS[how]("encoder")(original)
    assert len(clone.get_submodule("layers.0")._forward_pre_hooks) == 1
    clone.esper_slots["layers_0"].prune("test", "tester")
    assert len(clone.get_submodule("layers.0")._forward_pre_hooks) == 0
    assert len(target._forward_pre_hooks) == 1


def test_shallow_copy_shares_slots_like_any_module() -> None:
    original = _original("tokens")
    x = _input("tokens")
    clone = copy.copy(original)
    torch.testing.assert_close(clone(x), original(x), rtol=0, atol=0)
    assert clone.esper_slots is original.esper_slots and get_injection(clone) is get_injection(original)


def test_deepcopy_issue_instance_copy_calls_its_own_slot() -> None:
    """Issue 15 item 3: the copy's own slot was called 0 times, a seed grown in the original moved it."""
    torch.manual_seed(0)
    model = TokenModel()
    x = _input("tokens")
    inject_slots(model, {"block": "transformer"}, example_input=x, gates=QualityGates("permissive"))
    slot = model.esper_slots["block"]
    slot.germinate("toy_linear")
    drive(slot, SeedStage.BLENDING)
    clone = copy.deepcopy(model)
    assert _slot_calls(clone, x) == {"block": 1}
    with torch.no_grad():
        before = clone(x)
    drive(slot, SeedStage.HOLDING)
    _perturb(slot, 5)
    with torch.no_grad():
        assert (model(x) - before).abs().max() > 1e-2
        torch.testing.assert_close(clone(x), before, rtol=0, atol=0)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch_save"])
def test_copy_of_a_model_bound_to_an_optimizer(how: str) -> None:
    """Slot observers travel with copies; an optimizer binding's does not (nor its optimizer)."""
    original = _original("tokens")
    slots = original.esper_slots
    optimizer = torch.optim.SGD(host_parameters(original, slots), lr=0.1)
    OptimizerBinding(optimizer, slots)

    def held(opt: torch.optim.Optimizer) -> set[int]:
        return {id(p) for group in opt.param_groups for p in group["params"]}

    def seed_ids(slot: nn.Module) -> set[int]:
        return {id(p) for p in slot.seed_parameters()}

    assert seed_ids(slots["embed"]) <= held(optimizer)
    clone = COPIERS[how]("tokens")(original)
    clone.esper_slots["block"].germinate("toy_linear")
    assert not seed_ids(clone.esper_slots["block"]) & held(optimizer)  # not in the original's optimizer
    slots["block"].germinate("toy_linear")
    assert seed_ids(slots["block"]) <= held(optimizer)  # the original's binding still works
    own = torch.optim.SGD(host_parameters(clone, clone.esper_slots), lr=0.1)
    OptimizerBinding(own, clone.esper_slots)
    assert seed_ids(clone.esper_slots["block"]) <= held(own)
