"""fold(): a grown model becomes a plain module with the same outputs, or a clear refusal."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from esper_core.alpha import BlendAlgorithm
from esper_core.errors import FoldError, HostError
from esper_core.folding import FoldAction, FoldedModel, FoldedSeed, fold, plan_fold
from esper_core.hosts import CNNHost, TransformerHost
from esper_core.inject import InjectionTarget, get_injection, inject_slots, remove_slots
from esper_core.model import MorphogeneticModel
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

from .conftest import grow

S = SeedStage


def _no_esper_left(module: nn.Module) -> None:
    """No slot, no injection, no hook of the lifecycle anywhere in ``module``."""
    assert not any(isinstance(m, SeedSlot) for m in module.modules())
    assert get_injection(module) is None
    assert not hasattr(module, "esper_slots")
    for m in module.modules():
        assert "forward" not in m.__dict__, type(m).__name__


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(a, b), (a - b).abs().max()


def _cnn_model(permissive) -> MorphogeneticModel:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    host = CNNHost(num_classes=5, n_blocks=2, base_channels=8)
    model = MorphogeneticModel(host, gates=permissive, embargo_epochs=1)
    grow(model.slot("r0c0"), "ship_noisy_conv", seed=1)
    grow(model.slot("r1c1"), "ship_affine_conv", algorithm=BlendAlgorithm.GATE, seed=2)
    model.slot("r0c1").germinate("ship_noisy_conv")
    model.prune("r0c1", "test", "test")  # a slot cooling down folds to nothing
    return model


@pytest.mark.parametrize("train", [False, True])
def test_grown_cnn_folds_to_a_plain_module_with_equal_outputs(permissive, train: bool) -> None:
    model = _cnn_model(permissive)
    model.train(train)
    folded = fold(model)
    assert isinstance(folded, FoldedModel)
    _no_esper_left(folded)
    assert list(folded.seeds) == ["r0c0", "r1c1"]  # execution order, the pruned slot dropped
    assert folded.host is not model.host  # a deep copy; the grown model is untouched
    x = torch.randn(3, 3, 12, 12)
    for _ in range(2):  # twice: BatchNorm running stats move identically in train mode
        torch.manual_seed(7)
        expected = model(x)
        torch.manual_seed(7)
        _same(folded(x), expected)
    assert model.slot("r0c0").stage is S.FOSSILIZED


def test_fold_refuses_seeds_on_probation_naming_them(permissive) -> None:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(n_blocks=2, base_channels=8), gates=permissive)
    grow(model.slot("r0c0"), "ship_noisy_conv", target=S.BLENDING)
    grow(model.slot("r1c0"), "ship_noisy_conv", target=S.HOLDING)
    grow(model.slot("r0c1"), "ship_noisy_conv")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(FoldError, match=r"'r0c0' \(BLENDING\), 'r1c0' \(HOLDING\).*fossilize.*prune"):
        fold(model, inplace=True)
    assert model.slot("r0c0").stage is S.BLENDING
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if isinstance(before[k], torch.Tensor))


def test_fold_of_a_model_without_kept_seeds_is_the_host(permissive) -> None:
    model = MorphogeneticModel(CNNHost(n_blocks=1, base_channels=8), gates=permissive)
    folded = fold(model)
    assert type(folded) is CNNHost
    x = torch.randn(2, 3, 8, 8)
    model.eval(), folded.eval()
    _same(folded(x), model(x))


def test_fold_rejects_bad_arguments(permissive) -> None:
    with pytest.raises(FoldError, match="no seed slots"):
        fold(nn.Linear(2, 2))
    model = MorphogeneticModel(CNNHost(n_blocks=1, base_channels=8), gates=permissive)
    with pytest.raises(FoldError, match=r"merge must be one of \['none', 'auto', 'all'\]; got 'yes'"):
        fold(model, merge="yes")  # type: ignore[arg-type]


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn(self.conv(x)))


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(ResBlock(8), ResBlock(8))
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).mean(dim=(2, 3)))


def _injected_cnn(permissive) -> TinyNet:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = TinyNet()
    slots = inject_slots(
        net,
        {"stem": "cnn", "body.0": "cnn", "body.1.conv": "cnn"},
        example_input=torch.randn(1, 3, 8, 8),
        gates=permissive,
    )
    grow(slots["stem"], "ship_affine_conv", seed=3)
    grow(slots["body_0"], "ship_noisy_conv", algorithm=BlendAlgorithm.MULTIPLY, seed=4)
    grow(slots["body_1_conv"], "ship_affine_conv", seed=5)
    return net


@pytest.mark.parametrize("train", [False, True])
def test_injected_cnn_folds_with_folded_seeds_at_the_targets(permissive, train: bool) -> None:
    net = _injected_cnn(permissive)
    net.train(train)
    folded = fold(net)
    _no_esper_left(folded)
    assert type(folded) is TinyNet
    assert isinstance(folded.stem, FoldedSeed) and isinstance(folded.stem.base_layer, nn.Conv2d)
    assert isinstance(folded.body[0], FoldedSeed) and isinstance(folded.body[1].conv, FoldedSeed)
    assert folded.body[1].conv.weight is folded.body[1].conv.base_layer.weight  # attributes read through
    assert float(folded.body[1].conv.alpha) == pytest.approx(net.esper_slots["body_1_conv"].alpha)
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(3)
    expected = net(x)
    torch.manual_seed(3)
    _same(folded(x), expected)
    # a folded model copies and pickles like any module, and keeps its outputs
    folded.eval(), net.eval()
    _same(pickle.loads(pickle.dumps(folded))(x), net(x))


def test_merge_auto_merges_affine_seeds_on_convs_and_wraps_the_rest(permissive) -> None:
    net = _injected_cnn(permissive).eval()
    steps = {s.slot_id: s for s in plan_fold(net, merge="auto")}
    assert steps["stem"].action is FoldAction.MERGE
    assert steps["body_1_conv"].action is FoldAction.MERGE
    assert steps["body_0"].action is FoldAction.WRAP
    assert "MULTIPLY is not linear" in steps["body_0"].reason
    folded = fold(net, merge="auto")
    assert type(folded.stem) is nn.Conv2d and type(folded.body[1].conv) is nn.Conv2d
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    # exact in real arithmetic: in float64 the difference is rounding noise
    torch.testing.assert_close(
        fold(net.double(), merge="auto")(x.double()), net(x.double()), rtol=1e-12, atol=1e-12
    )


def test_merge_all_refuses_naming_each_seed_and_why(permissive) -> None:
    net = _injected_cnn(permissive)
    with pytest.raises(FoldError, match=r"'body_0': blend algorithm MULTIPLY is not linear"):
        fold(net, merge="all")
    assert get_injection(net) is not None  # nothing changed


def test_merge_all_gives_the_host_architecture_back(permissive) -> None:
    torch.manual_seed(0)
    net = TinyNet().eval()
    slots = inject_slots(net, {"stem": "cnn"}, example_input=torch.randn(1, 3, 8, 8), gates=permissive)
    grow(slots["stem"], "ship_affine_conv")
    folded = fold(net, merge="all")
    plain = TinyNet()
    assert [type(m) for m in folded.modules()] == [type(m) for m in plain.modules()]
    assert folded.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)


class TokenNet(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, d)
        self.proj = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d)
        self.head = nn.Linear(d, 20, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.out(torch.tanh(self.proj(self.emb(ids)))))


def test_merge_reasons_name_each_obstacle(permissive) -> None:
    torch.manual_seed(0)
    net = TokenNet()
    targets = [
        InjectionTarget("proj", "transformer", slot_id="nobias"),  # the seed adds a bias, the layer has none
        InjectionTarget("out", "transformer", slot_id="mlp"),  # not affine
        InjectionTarget("emb", "transformer", slot_id="emb"),  # not a linear layer
    ]
    slots = inject_slots(net, targets, example_input=torch.randint(0, 20, (1, 4)), gates=permissive)
    grow(slots["nobias"], "ship_affine")
    grow(slots["mlp"], "ship_mlp")
    grow(slots["emb"], "ship_affine")
    reasons = {s.slot_id: s.reason for s in plan_fold(net, merge="auto")}
    assert "adds a bias but torch.nn.Linear has none" in reasons["nobias"]
    assert "(tests.shipping.conftest.MLPToken)" in reasons["mlp"] and "affine_form" in reasons["mlp"]
    assert "the layer there (torch.nn.Embedding) is not one that merges" in reasons["emb"]


def test_merge_refuses_a_tied_weight(permissive) -> None:
    net = TokenNet()
    net.head = nn.Linear(8, 8, bias=False)
    net.head.weight = net.proj.weight  # proj and head share one weight
    slots = inject_slots(net, [InjectionTarget("proj", "transformer", dim=8)], gates=permissive)
    grow(slots["proj"], "ship_affine_nobias")
    (step,) = plan_fold(net, merge="auto")
    assert step.action is FoldAction.WRAP and "shared with ['head.weight']" in step.reason


class TupleLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None, torch.Tensor]:
        y = self.fc(x)
        return y, None, y.sum(-1)


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = TupleLayer()
        self.shared = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _none, total = self.layer(x)
        return self.shared(self.shared(h)) + total.unsqueeze(-1)


def test_tuple_outputs_shared_modules_and_two_slots_on_one_module_fold_exactly(permissive) -> None:
    torch.manual_seed(0)
    net = TupleNet()
    targets = [
        InjectionTarget("layer", "transformer", output=0),
        InjectionTarget("shared", "transformer", slot_id="first"),
        InjectionTarget("shared", "transformer", slot_id="second"),
    ]
    slots = inject_slots(net, targets, example_input=torch.randn(1, 4, 6), gates=permissive)
    grow(slots["layer"], "ship_mlp", seed=1)
    grow(slots["first"], "ship_affine", seed=2)
    grow(slots["second"], "ship_mix", algorithm=BlendAlgorithm.GATE, seed=3)
    net.eval()
    folded = fold(net)
    assert isinstance(folded.shared, FoldedSeed) and isinstance(folded.shared.base_layer, FoldedSeed)
    assert folded.shared.slot_id == "second" and folded.shared.base_layer.slot_id == "first"
    x = torch.randn(2, 5, 6)
    _same(folded(x), net(x))
    # the other elements of the tuple pass through untouched
    out = folded.layer(x)
    assert out[1] is None and torch.equal(out[2], folded.layer.base_layer(x)[2])


def test_fold_inplace_returns_the_model_itself(permissive) -> None:
    net = _injected_cnn(permissive).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = net(x)
    folded = fold(net, inplace=True)
    assert folded is net
    _no_esper_left(net)
    _same(net(x), expected)


def test_a_target_at_the_root_is_wrapped(permissive) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 6)
    slots = inject_slots(layer, [InjectionTarget("", "transformer", dim=6, slot_id="root")], gates=permissive)
    grow(slots["root"], "ship_mlp")
    layer.eval()
    folded = fold(layer)
    assert isinstance(folded, FoldedSeed) and type(folded.base_layer) is nn.Linear
    x = torch.randn(2, 3, 6)
    _same(folded(x), layer(x))


def test_transformer_host_folds_in_train_mode_with_dropout(permissive) -> None:
    torch.manual_seed(0)
    host = TransformerHost(vocab_size=30, n_embd=16, n_head=2, n_layer=2, block_size=16, dropout=0.1)
    model = MorphogeneticModel(host, gates=permissive)
    grow(model.slot("r0c0"), "ship_mlp", seed=1)
    grow(model.slot("r0c1"), "ship_mix", algorithm=BlendAlgorithm.GATE, seed=2)
    folded = fold(model)
    ids = torch.randint(0, 30, (2, 9))
    torch.manual_seed(5)
    expected = model(ids)
    torch.manual_seed(5)
    _same(folded(ids), expected)


def test_a_folded_seed_keeps_the_fused_encoder_path_off(permissive) -> None:
    """nn.TransformerEncoderLayer skips its submodules on the fused path; the folded seed must still run."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
    slots = inject_slots(
        layer,
        {"linear2": "transformer", "norm1": "transformer"},
        example_input=torch.randn(1, 3, 16),
        gates=permissive,
    )
    grow(slots["linear2"], "ship_mlp")
    grow(slots["norm1"], "ship_affine")
    layer.eval()
    folded = fold(layer)
    x = torch.randn(2, 5, 16)
    plain = copy.deepcopy(layer)
    remove_slots(plain, discard_seeds=True)
    with torch.no_grad():
        _same(folded(x), layer(x))
        assert not torch.allclose(plain(x), layer(x))  # the seeds do change the output


def test_folded_seed_needs_a_gate_exactly_for_gate() -> None:
    with pytest.raises(FoldError, match="GATE"):
        FoldedSeed(nn.Identity(), algorithm=BlendAlgorithm.GATE, alpha=torch.tensor(1.0), topology="cnn")
    seed = FoldedSeed(nn.Identity(), algorithm=BlendAlgorithm.ADD, alpha=torch.tensor(1.0), topology="cnn")
    with pytest.raises(FoldError, match="one tensor"):
        seed(torch.randn(1, 2, 3, 3), torch.randn(1))
    with pytest.raises(HostError, match="output must be None"):
        FoldedSeed(
            nn.Identity(), algorithm=BlendAlgorithm.ADD, alpha=torch.tensor(1.0), topology="cnn", output=-1
        )
