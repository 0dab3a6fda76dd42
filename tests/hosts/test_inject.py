"""inject_slots / remove_slots on models the library did not write."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from esper_core.errors import UnknownTopologyError
from esper_core.gates import QualityGates
from esper_core.hosts import HostError
from esper_core.inject import (
    SLOTS_ATTRIBUTE,
    InjectionTarget,
    alpha_overrides,
    evaluate_injected,
    get_injection,
    inject_slots,
    remove_slots,
)
from esper_core.optim import OptimizerBinding, host_parameters
from esper_core.stages import SeedStage

from .conftest import drive


class BasicBlock(nn.Module):
    """What a user's ResNet block looks like: two 3x3 convs with BatchNorm and a skip."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (
            nn.Identity() if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 8, 1))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2))
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer2(self.layer1(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def _encoder() -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def _hooks(model: nn.Module) -> dict[str, int]:
    return {name: len(m._forward_hooks) for name, m in model.named_modules()}


def _set_seed_weights(slot: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.fill_(value)


def test_transformer_encoder_round_trip(permissive: QualityGates) -> None:
    model = _encoder().eval()
    x = torch.randn(3, 5, 16)
    before = model(x)
    keys = list(model.state_dict())
    hooks = _hooks(model)
    slots = inject_slots(
        model, {"layers.0": "transformer", "layers.1": "transformer"}, example_input=x, gates=permissive
    )
    assert list(slots) == ["layers_0", "layers_1"]
    assert slots["layers_0"].dim == 16 and slots["layers_1"].topology == "transformer"
    assert getattr(model, SLOTS_ATTRIBUTE) is slots
    assert torch.equal(model(x), before)  # empty slots are exact pass-through
    slots["layers_1"].germinate("toy_linear")
    drive(slots["layers_1"], SeedStage.BLENDING)
    slots["layers_1"].step_epoch()
    _set_seed_weights(slots["layers_1"], 0.1)
    assert not torch.equal(model(x), before)
    with pytest.raises(HostError, match=r"slots 'layers_1' \(BLENDING\) hold seeds"):
        remove_slots(model)  # the seed would be thrown away: refused, nothing removed
    assert get_injection(model) is not None and getattr(model, SLOTS_ATTRIBUTE) is slots
    removed = remove_slots(model, discard_seeds=True)
    assert removed is slots and removed["layers_1"].stage is SeedStage.BLENDING
    assert torch.equal(model(x), before)
    assert list(model.state_dict()) == keys
    assert _hooks(model) == hooks
    assert not hasattr(model, SLOTS_ATTRIBUTE) and get_injection(model) is None


def test_transformer_encoder_seeds_train_and_fossilize(permissive: QualityGates) -> None:
    model = _encoder()
    x, target = torch.randn(4, 6, 16), torch.randn(4, 6, 16)
    slots = inject_slots(
        model, [InjectionTarget("layers.0", "transformer", dim=16, slot_id="early")], gates=permissive
    )
    optimizer = torch.optim.AdamW(host_parameters(model, slots), lr=1e-2)
    binding = OptimizerBinding(optimizer, slots, lr=5e-2)
    slots["early"].germinate("toy_linear")
    assert binding.group("early") is not None
    start = [p.detach().clone() for p in slots["early"].seed_parameters()]
    for stage in (SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED):
        for _ in range(2):
            optimizer.zero_grad()
            F.mse_loss(model(x), target).backward()
            optimizer.step()
        drive(slots["early"], stage)
    assert slots["early"].stage is SeedStage.FOSSILIZED
    assert all(not torch.equal(a, b) for a, b in zip(start, slots["early"].seed_parameters(), strict=True))


def test_user_resnet_germinate_train_fossilize(permissive: QualityGates) -> None:
    torch.manual_seed(0)
    model = TinyResNet()
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    slots = inject_slots(model, {"layer1": "cnn", "layer2.0": "cnn"}, example_input=x, gates=permissive)
    assert {s: slots[s].dim for s in slots} == {"layer1": 8, "layer2_0": 16}
    optimizer = torch.optim.SGD(host_parameters(model, slots), lr=0.05, momentum=0.9)
    OptimizerBinding(optimizer, slots, lr=0.1)
    for slot_id in slots:
        slots[slot_id].germinate("toy_conv")
    start = {s: [p.detach().clone() for p in slots[s].seed_parameters()] for s in slots}
    for stage in (SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED):
        for _ in range(2):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        for slot_id in slots:
            drive(slots[slot_id], stage)
    for slot_id in slots:
        assert slots[slot_id].stage is SeedStage.FOSSILIZED
        changed = [
            not torch.equal(a, b)
            for a, b in zip(start[slot_id], slots[slot_id].seed_parameters(), strict=True)
        ]
        assert all(changed), slot_id
    assert torch.isfinite(model(x)).all()


def test_injected_counterfactual_matches_manual_ablation(permissive: QualityGates) -> None:
    torch.manual_seed(1)
    model = TinyResNet().eval()
    x = torch.randn(6, 3, 8, 8)
    y = model(x).argmax(-1)
    slots = inject_slots(model, {"layer1": "cnn", "layer2": "cnn"}, example_input=x, gates=permissive)
    for slot_id in slots:
        slots[slot_id].germinate("toy_conv")
        drive(slots[slot_id], SeedStage.HOLDING)
        with torch.no_grad():
            for p in slots[slot_id].seed_parameters():
                p.normal_(0, 0.3)

    def score(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (out.argmax(-1) == target).float()

    evaluation = evaluate_injected(model, [(x, y)], score)
    with torch.no_grad():
        main = score(model(x), y).mean().item() * 100
        assert evaluation.score == pytest.approx(main)
        for slot_id in slots:
            with alpha_overrides(model, {slot_id: torch.zeros(6, 1, 1, 1)}):
                off = score(model(x), y).mean().item() * 100
            assert evaluation.contributions[slot_id] == pytest.approx(main - off)


@pytest.mark.parametrize(
    ("targets", "kwargs", "error", "message"),
    [
        (
            {"layer3": "cnn"},
            {},
            HostError,
            r"target path 'layer3' does not exist in TinyResNet; submodules: \['stem'",
        ),
        (
            [InjectionTarget("layer1", "cnn", dim=9)],
            {"example": True},
            HostError,
            r"dim 9 given for 'layer1' does not match the probe: its output has 8",
        ),
        ({"layer1": "cnn"}, {}, HostError, r"targets \['layer1'\] have no dim"),
        (
            {"layer1": "transformer"},
            {"example": True},
            HostError,
            r"outputs shape \(2, 8, 8, 8\) but topology 'transformer' expects 3-d",
        ),
        ({"layer1": "graph"}, {}, UnknownTopologyError, "graph"),
        ([InjectionTarget("layer1", "cnn", dim=8, slot_id="a.b")], {}, HostError, r"slot id 'a.b'"),
        (
            [InjectionTarget("layer1", "cnn", 8, "s"), InjectionTarget("layer2", "cnn", 16, "s")],
            {},
            HostError,
            "unique",
        ),
        ({}, {}, HostError, "at least one target"),
        ({"layer1": "cnn"}, {"dim": 8}, HostError, r"slot options \['dim'\] are set per target"),
    ],
)
def test_bad_targets_leave_the_model_untouched(
    targets: object, kwargs: dict, error: type, message: str
) -> None:
    model = TinyResNet()
    keys, hooks = list(model.state_dict()), _hooks(model)
    example = torch.randn(2, 3, 8, 8) if kwargs.get("example") else None
    options = {k: v for k, v in kwargs.items() if k != "example"}
    with pytest.raises(error, match=message):
        inject_slots(model, targets, example_input=example, **options)
    assert list(model.state_dict()) == keys and _hooks(model) == hooks
    assert get_injection(model) is None and not hasattr(model, SLOTS_ATTRIBUTE)


def test_tuple_outputs_and_double_injection_are_rejected() -> None:
    model = _encoder()
    x = torch.randn(2, 4, 16)
    with pytest.raises(HostError, match=r"'layers.0.self_attn' returns tuple"):
        inject_slots(model, {"layers.0.self_attn": "transformer"}, example_input=x)
    inject_slots(model, {"layers.0": "transformer"}, example_input=x)
    with pytest.raises(HostError, match="already has injected slots"):
        inject_slots(model, {"layers.1": "transformer"}, example_input=x)
    remove_slots(model)
    with pytest.raises(HostError, match="no injected slots"):
        remove_slots(model)


def test_sequential_root_calls_the_slot_container_as_identity() -> None:
    """nn.Sequential calls every child, the injected slot container included."""
    from esper_core.inject import InjectedSlots

    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2))
    before = model(x)
    slots = inject_slots(model, [InjectionTarget("1", "cnn", slot_id="f")], example_input=x[:1])
    assert isinstance(slots, InjectedSlots)
    assert torch.equal(model(x), before)
    slots["f"].germinate("conv_small")
    slots["f"].advance()
    assert torch.equal(model(x), before)  # TRAINING: straight-through, output unchanged
    remove_slots(model, discard_seeds=True)
    assert torch.equal(model(x), before)


def test_one_module_under_two_paths_carries_both_slots_and_comes_off_cleanly(
    permissive: QualityGates,
) -> None:
    torch.manual_seed(0)
    shared = nn.Linear(8, 8)
    model = nn.Sequential(shared, nn.GELU(), shared)  # the same module at paths "0" and "2"
    x = torch.randn(2, 3, 8)
    before = model(x)
    targets = [
        InjectionTarget("0", "transformer", 8, "first"),
        InjectionTarget("2", "transformer", 8, "second"),
    ]
    slots = inject_slots(model, targets, gates=permissive)
    for slot_id in slots:
        slots[slot_id].germinate("toy_linear")
        drive(slots[slot_id], SeedStage.HOLDING)
        _set_seed_weights(slots[slot_id], 0.05)
    calls = []
    for slot_id in slots:
        slots[slot_id].register_forward_hook(lambda *_a, s=slot_id: calls.append(s))
    assert not torch.equal(model(x), before)
    assert calls == ["first", "second", "first", "second"]  # both slots at each call of the module
    remove_slots(model, discard_seeds=True)
    assert "forward" not in vars(shared) and torch.equal(model(x), before)


def test_remove_slots_refuses_when_a_target_forward_was_replaced_later() -> None:
    model = TinyResNet()
    x = torch.randn(2, 3, 8, 8)
    inject_slots(model, {"layer1": "cnn"}, example_input=x)
    model.layer1.forward = lambda h: h  # another library patches the target after injection
    with pytest.raises(
        HostError, match=r"the forward of targets \['layer1'\] was replaced after inject_slots"
    ):
        remove_slots(model)
    assert get_injection(model) is not None and hasattr(model, SLOTS_ATTRIBUTE)


def test_a_forward_patched_before_injection_is_kept_and_restored(permissive: QualityGates) -> None:
    torch.manual_seed(0)
    model = TinyResNet().eval()
    x = torch.randn(2, 3, 8, 8)
    original = model.layer1.forward

    def patched(h: torch.Tensor) -> torch.Tensor:  # what accelerate-style wrappers do
        return original(h) * 2.0

    model.layer1.forward = patched
    before = model(x)
    slots = inject_slots(model, {"layer1": "cnn"}, example_input=x, gates=permissive)
    assert torch.equal(model(x), before)  # the patch still runs, the empty slot adds nothing
    slots["layer1"].germinate("toy_conv")
    drive(slots["layer1"], SeedStage.HOLDING)
    _set_seed_weights(slots["layer1"], 0.05)
    assert not torch.equal(model(x), before)
    remove_slots(model, discard_seeds=True)
    assert vars(model.layer1)["forward"] is patched and torch.equal(model(x), before)
