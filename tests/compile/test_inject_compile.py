"""``torch.compile`` of models with injected slots, whatever was compiled before the injection.

The kind: Dynamo reuses a graph whenever its guards pass, and by default it does not guard
on a module's empty hook dicts. Whatever attaches the slots must therefore change something
Dynamo does guard on, for graphs traced on the same instance before injection, on another
instance of the same class, and for every later change (germination, prune, removal).
Each test compares the compiled model with the eager one (output and gradients) and with
the plain model, on three kinds of user model: a transformer-style MLP, a small ResNet and
``nn.TransformerEncoder`` (slots on a whole layer and inside one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from esper_core.gates import QualityGates
from esper_core.inject import alpha_overrides, inject_slots, remove_slots
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

from .conftest import CountingBackend

_S = SeedStage


class UserMLP(nn.Module):
    """A user's token model: embedding, two residual-free blocks, head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.block1 = nn.Sequential(nn.Linear(16, 16), nn.GELU())
        self.block2 = nn.Sequential(nn.Linear(16, 16), nn.GELU())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(self.embed(x))))


class UserCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1).flatten(1))


def _encoder() -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


#: name -> (factory, {target path: topology}, blueprint, example input shape)
CASES: dict[str, tuple[Callable[[], nn.Module], dict[str, str], str, tuple[int, ...]]] = {
    "mlp": (UserMLP, {"block1": "transformer", "block2.0": "transformer"}, "mlp_small", (2, 5, 6)),
    "cnn": (UserCNN, {"stem": "cnn", "body.0": "cnn"}, "conv_light", (2, 3, 6, 6)),
    "encoder": (
        _encoder,
        {"layers.0": "transformer", "layers.1.linear2": "transformer"},
        "mlp_small",
        (2, 5, 16),
    ),
}


def _build(case: str) -> nn.Module:
    torch.manual_seed(0)
    return CASES[case][0]()


def _input(case: str) -> torch.Tensor:
    return torch.randn(CASES[case][3], generator=torch.Generator().manual_seed(3))


def _inject(case: str, model: nn.Module) -> nn.ModuleDict:
    return inject_slots(model, CASES[case][1], example_input=_input(case), gates=QualityGates("permissive"))


def _grow(slot: SeedSlot, blueprint: str, target: SeedStage = _S.HOLDING) -> None:
    """Germinate, advance to ``target`` (alpha 1) and give the seed non-zero weights."""
    slot.germinate(blueprint)
    assert slot.advance(_S.TRAINING).passed
    slot.record_accuracy(40.0)
    assert slot.advance(_S.BLENDING).passed
    while not (slot.schedule.at_rest and slot.alpha == 1.0):
        slot.step_epoch()
    if target is _S.HOLDING:
        slot.record_accuracy(45.0)
        assert slot.advance(_S.HOLDING).passed
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _grow_all(case: str, slots: nn.ModuleDict) -> None:
    for slot in slots.values():
        _grow(slot, CASES[case][2])


def _run(model: nn.Module, call: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Any:
    """Output and every parameter gradient of one training step through ``call``."""
    model.zero_grad(set_to_none=True)
    out = call(x)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def _assert_same(model: nn.Module, compiled: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    got, got_grads = _run(model, compiled, x)
    want, want_grads = _run(model, model, x)
    torch.testing.assert_close(got, want)
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, msg=name)


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max().item() > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_graph_of_a_plain_instance_is_not_reused_for_an_injected_one(case: str) -> None:
    x = _input(case)
    baseline = _build(case)
    backend = CountingBackend()
    plain_out = torch.compile(baseline, backend=backend, fullgraph=True)(x).detach()
    model = _build(case)  # same class, same weights
    slots = _inject(case, model)
    _grow_all(case, slots)
    assert _differs(model(x), plain_out)  # the seeds really change the output
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    _assert_same(model, compiled, x)
    assert _differs(compiled(x), plain_out)


@pytest.mark.parametrize("case", list(CASES))
def test_injecting_into_an_already_compiled_instance_recompiles(case: str) -> None:
    x = _input(case)
    model = _build(case)
    backend = CountingBackend()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    plain_out = compiled(x).detach()
    slots = _inject(case, model)
    torch.testing.assert_close(compiled(x), plain_out)  # empty slots: the plain output
    _grow_all(case, slots)
    _assert_same(model, compiled, x)
    assert _differs(compiled(x), plain_out)


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_injected_model_follows_germination_prune_and_removal(case: str) -> None:
    x = _input(case)
    model = _build(case)
    plain_out = model(x).detach()
    slots = _inject(case, model)
    backend = CountingBackend()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    _assert_same(model, compiled, x)
    first, second = slots.values()
    _grow(first, CASES[case][2])
    _assert_same(model, compiled, x)
    assert _differs(compiled(x), plain_out)
    _grow(second, CASES[case][2], target=_S.BLENDING)
    _assert_same(model, compiled, x)
    with torch.no_grad(), alpha_overrides(model, {first.slot_id: torch.zeros(())}):
        torch.testing.assert_close(compiled(x), model(x))
    first.prune("test", "tester")
    second.prune("test", "tester")
    _assert_same(model, compiled, x)
    torch.testing.assert_close(compiled(x), plain_out)
    while not first.available:  # the cooldown back to DORMANT
        first.step_epoch()
    _grow(first, CASES[case][2])
    _assert_same(model, compiled, x)
    remove_slots(model, discard_seeds=True)
    _assert_same(model, compiled, x)
    torch.testing.assert_close(compiled(x), plain_out)


@pytest.mark.parametrize("case", list(CASES))
def test_injected_model_compiles_without_graph_breaks(case: str) -> None:
    x = _input(case)
    model = _build(case)
    slots = _inject(case, model)
    assert torch._dynamo.explain(model)(x).graph_break_count == 0
    _grow_all(case, slots)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_one_graph_serves_every_injected_instance_in_the_same_state() -> None:
    """Guards are on the attachment's code, not its identity: no recompile per instance."""
    x = _input("mlp")
    backend = CountingBackend()
    outputs = []
    for _ in range(3):
        model = _build("mlp")
        _grow_all("mlp", _inject("mlp", model))
        with torch.no_grad():
            outputs.append((torch.compile(model, backend=backend, fullgraph=True)(x), model(x)))
    assert backend.compilations == 1
    for got, want in outputs:
        torch.testing.assert_close(got, want)


def test_inductor_compiled_instance_follows_a_later_injection() -> None:
    """The default backend, on the issue's instance: compile, inject into that instance, grow."""
    x = _input("mlp")
    model = _build("mlp")
    compiled = torch.compile(model)
    with torch.no_grad():
        plain_out = compiled(x)
        slots = _inject("mlp", model)
        _grow_all("mlp", slots)
        want = model(x)
        torch.testing.assert_close(compiled(x), want, rtol=1e-4, atol=1e-4)
    assert _differs(want, plain_out)
