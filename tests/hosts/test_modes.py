"""Evaluation and probe passes give every submodule its own mode back (issue 15, item 5).

The kind: any pass that switches a module to eval and back must restore each submodule's
own ``training`` flag, not set one flag on all of them. Tested on the helper itself with
random mode maps, then through every library pass that switches modes
(``MorphogeneticModel.evaluate``, ``evaluate_injected``, the ``inject_slots`` probe),
then the reported instances: a frozen backbone whose BatchNorm the user put in eval keeps
its running statistics, and dropout stays off in frozen transformer blocks.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost, TransformerHost
from esper_core.inject import InjectionTarget, evaluate_injected, inject_slots
from esper_core.model import MorphogeneticModel
from esper_core.modes import eval_mode
from esper_core.stages import SeedStage

from .conftest import drive
from .test_inject import TinyResNet

TRIALS = 12


def _modes(module: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in module.named_modules()}


def _randomise_modes(module: nn.Module, rng: random.Random) -> dict[str, bool]:
    module.train(rng.random() < 0.5)
    for m in module.modules():
        if rng.random() < 0.4:
            m.training = not m.training
    return _modes(module)


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(-1) == y).float()


def _encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.3, batch_first=True)
    return nn.Sequential(
        nn.Linear(4, 8), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(8, 3)
    )


class _Shared(nn.Module):
    """A module that appears twice in the tree (weight sharing): its mode must still round-trip."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
        self.b = nn.Sequential(self.a[0], nn.BatchNorm1d(3))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "cnn_host": lambda: CNNHost(3, in_channels=1, base_channels=4),
    "transformer_host": lambda: TransformerHost(16, n_embd=8, n_head=2, n_layer=2, block_size=8, dropout=0.2),
    "transformer_encoder": _encoder,
    "resnet": TinyResNet,
    "shared": _Shared,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_eval_mode_restores_every_submodule_mode(name: str) -> None:
    rng = random.Random(name)
    model = MODELS[name]()
    for _ in range(TRIALS):
        before = _randomise_modes(model, rng)
        with eval_mode(model) as inside:
            assert inside is model
            assert not any(m.training for m in model.modules())
        assert _modes(model) == before
        with pytest.raises(KeyError), eval_mode(model):  # restored after an exception too
            raise KeyError("boom")
        assert _modes(model) == before


def _cnn_model(permissive: QualityGates) -> MorphogeneticModel:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(3, in_channels=1, base_channels=4), gates=permissive)
    model.germinate("r0c1", "toy_conv")
    drive(model.slots["r0c1"], SeedStage.BLENDING)
    model.slots["r0c1"].step_epoch()
    return model


def test_evaluate_keeps_random_mode_maps(permissive: QualityGates) -> None:
    model = _cnn_model(permissive)
    batches = [(torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,)))]
    rng = random.Random(1)
    for _ in range(TRIALS):
        before = _randomise_modes(model, rng)
        evaluation = model.evaluate(batches, _accuracy)
        assert "r0c1" in evaluation.contributions
        assert _modes(model) == before


def test_frozen_batchnorm_backbone_does_not_drift_after_evaluate(permissive: QualityGates) -> None:
    model = _cnn_model(permissive)
    backbone = model.host.blocks[0]
    backbone.requires_grad_(False)
    model.train()
    backbone.eval()  # what users do to freeze BatchNorm statistics
    stats = {k: v.clone() for k, v in backbone.bn.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    model.evaluate([(x, y)], _accuracy)
    assert model.training and not backbone.training and not backbone.bn.training
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    for key, value in backbone.bn.state_dict().items():
        assert torch.equal(value, stats[key]), key  # the reported drift was ~0.002 after one step
    assert not torch.equal(model.host.blocks[1].bn.running_mean, torch.zeros(8))  # the rest trains


def test_dropout_stays_off_in_frozen_transformer_blocks(permissive: QualityGates) -> None:
    torch.manual_seed(0)
    host = TransformerHost(16, n_embd=8, n_head=2, n_layer=2, block_size=8, dropout=0.5)
    model = MorphogeneticModel(host, gates=permissive)
    model.germinate("r0c1", "toy_linear")
    drive(model.slots["r0c1"], SeedStage.BLENDING)
    model.slots["r0c1"].step_epoch()
    model.train()
    frozen = host.layers[0]
    frozen.requires_grad_(False)
    frozen.eval()
    tokens = torch.randint(0, 16, (4, 8))
    model.evaluate([(tokens, tokens)], _accuracy)
    assert model.training and all(not m.training for m in frozen.modules())
    h = torch.randn(4, 8, 8)
    assert torch.equal(frozen(h), frozen(h))  # deterministic: its dropout is still off
    assert host.layers[1].training


def test_evaluate_injected_keeps_frozen_modes_on_third_party_models(permissive: QualityGates) -> None:
    torch.manual_seed(0)
    resnet = TinyResNet()
    slots = inject_slots(
        resnet,
        {"layer1.1": "cnn", "layer2.0": "cnn"},
        example_input=torch.randn(2, 3, 8, 8),
        gates=permissive,
    )
    slots["layer1_1"].germinate("toy_conv")
    drive(slots["layer1_1"], SeedStage.BLENDING)
    slots["layer1_1"].step_epoch()
    resnet.train()
    resnet.stem.eval()
    resnet.layer1.eval()
    frozen = {k: v.clone() for k, v in resnet.stem.state_dict().items()}
    frozen.update({f"l1.{k}": v.clone() for k, v in resnet.layer1.state_dict().items()})
    before = _modes(resnet)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 4, (6,))
    evaluation = evaluate_injected(resnet, [(x, y)], _accuracy)
    assert set(evaluation.contributions) == {"layer1_1"}
    assert _modes(resnet) == before
    F.cross_entropy(resnet(x), y).backward()
    after = {k: v for k, v in resnet.stem.state_dict().items()}
    after.update({f"l1.{k}": v for k, v in resnet.layer1.state_dict().items()})
    assert all(torch.equal(after[k], frozen[k]) for k in frozen)

    encoder = _encoder()
    target_layer = InjectionTarget("1.layers.0", "transformer", slot_id="block0")
    inject_slots(encoder, [target_layer], example_input=torch.randn(2, 5, 4), gates=permissive)
    encoder.esper_slots["block0"].germinate("toy_linear")
    drive(encoder.esper_slots["block0"], SeedStage.BLENDING)
    encoder.esper_slots["block0"].step_epoch()
    rng = random.Random(2)
    tokens, target = torch.randn(3, 5, 4), torch.randint(0, 3, (3, 5))
    for _ in range(TRIALS):
        before = _randomise_modes(encoder, rng)
        assert set(evaluate_injected(encoder, [(tokens, target)], _accuracy).contributions) == {"block0"}
        assert _modes(encoder) == before


def test_inject_probe_keeps_random_mode_maps() -> None:
    rng = random.Random(3)
    for _ in range(TRIALS):
        model = TinyResNet()
        before = _randomise_modes(model, rng)
        inject_slots(model, {"layer1.0": "cnn"}, example_input=torch.randn(2, 3, 8, 8))
        after = _modes(model)
        assert {k: v for k, v in after.items() if not k.startswith("esper_slots")} == before
