"""Seeds and blend gates follow the host's dtype as they follow its device (issue 15 item 4).

The kind: a slot exists before its seed, and the seed is built in the slot's dtype. So a
slot must adopt the host's floating dtype when it is created (``MorphogeneticModel`` and
``inject_slots``), follow ``.to()`` afterwards, and G0's probe must run in that dtype.
Every blueprint of both packs is germinated in every floating dtype and walked through
the stages with a training step in each; a blueprint that changes the dtype is refused
by G0 in a bf16 slot (and accepted in a float32 one, so the probe really uses the slot's
dtype). Under CPU autocast an injected ``nn.TransformerEncoder`` with empty slots returns
the plain model's output exactly, dtype included.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from esper_core._placement import host_placement
from esper_core.alpha import BlendAlgorithm
from esper_core.errors import LifecycleError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost, TransformerHost
from esper_core.inject import InjectionTarget, inject_slots
from esper_core.model import MorphogeneticModel
from esper_core.registry import list_blueprints, temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage

_S = SeedStage
DTYPES = (torch.float16, torch.bfloat16, torch.float64)
_ORDER = (_S.TRAINING, _S.BLENDING, _S.HOLDING, _S.FOSSILIZED)


def _host(topology: str) -> nn.Module:
    torch.manual_seed(0)
    if topology == "cnn":
        return CNNHost(num_classes=3, n_blocks=2, base_channels=8)
    return TransformerHost(vocab_size=11, n_embd=16, n_head=2, n_layer=2, block_size=6)


def _input(topology: str, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if topology == "cnn":
        return torch.randn(2, 3, 8, 8, generator=g).to(dtype)
    return torch.randint(0, 11, (2, 6), generator=g)


def _step(model: nn.Module, x: torch.Tensor, dtype: torch.dtype, slot: SeedSlot) -> None:
    """One forward and backward: output, seed and gradients all in ``dtype`` and finite."""
    model.zero_grad(set_to_none=True)
    out = model(x)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    for p in slot.seed_parameters():
        assert p.dtype == dtype
        assert p.grad is None or (p.grad.dtype == dtype and torch.isfinite(p.grad).all())


def _walk(model: nn.Module, slot: SeedSlot, x: torch.Tensor, dtype: torch.dtype) -> None:
    """Advance through every stage (alpha ramped to 1 in BLENDING), a training step in each."""
    _step(model, x, dtype, slot)
    for stage in _ORDER:
        if stage is _S.HOLDING:
            while not (slot.schedule.at_rest and slot.alpha == 1.0):
                slot.step_epoch()
                _step(model, x, dtype, slot)
        if stage is _S.FOSSILIZED:
            slot.record_counterfactual(1.0)
        slot.record_accuracy(50.0)
        assert slot.advance(stage).passed, stage
        _step(model, x, dtype, slot)


def _blueprints(topology: str) -> list[str]:
    """Every registered blueprint with parameters (``noop`` has no tensor to put in a dtype)."""
    return [spec.name for spec in list_blueprints(topology) if spec.name != "noop"]


CASES = [(t, b) for t in ("cnn", "transformer") for b in _blueprints(t)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("topology", "blueprint"), CASES)
def test_every_blueprint_follows_a_morphogenetic_models_dtype(
    topology: str, blueprint: str, dtype: torch.dtype
) -> None:
    model = MorphogeneticModel(_host(topology).to(dtype), gates=QualityGates("permissive"))
    slot_id = model.slot_ids[-1]
    slot = model.slot(slot_id)
    assert slot._anchor.dtype == dtype  # adopted at creation, before any seed
    algorithm = BlendAlgorithm.GATE if len(blueprint) % 2 else BlendAlgorithm.MULTIPLY
    model.germinate(slot_id, blueprint, algorithm=algorithm, ramp_epochs=2)
    assert all(p.dtype == dtype for p in slot.seed_parameters())
    _walk(model, slot, _input(topology, dtype), dtype)


class UserNet(nn.Module):
    """A user's model: a conv trunk and a token-style MLP branch, both injected."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.mlp = nn.Sequential(nn.Linear(8, 8), nn.GELU())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x).flatten(2).transpose(1, 2)  # (B, HW, 8) tokens
        return self.head(self.mlp(h)).mean(1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("algorithm", list(BlendAlgorithm))
def test_injected_slots_take_the_models_dtype_at_creation(
    dtype: torch.dtype, algorithm: BlendAlgorithm
) -> None:
    torch.manual_seed(0)
    model = UserNet().to(dtype)
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(2)).to(dtype)
    plain = model(x)
    targets = [InjectionTarget("trunk", "cnn"), InjectionTarget("mlp.1", "transformer", slot_id="act")]
    slots = inject_slots(model, targets, example_input=x, gates=QualityGates("permissive"))
    assert [s._anchor.dtype for s in slots.values()] == [dtype, dtype]
    torch.testing.assert_close(model(x), plain, rtol=0, atol=0)
    blueprints = {"trunk": "conv_light", "act": "mlp_small"}
    for slot_id, slot in slots.items():
        slot.germinate(blueprints[slot_id], algorithm=algorithm, ramp_epochs=2)
        assert all(p.dtype == dtype for p in slot.seed_parameters())
    for slot in slots.values():
        _walk(model, slot, x, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_slots_follow_to_after_creation_and_after_germination(dtype: torch.dtype) -> None:
    model = MorphogeneticModel(_host("cnn"), gates=QualityGates("permissive"))
    first, second = (model.slot(s) for s in model.slot_ids[:2])
    first.germinate("conv_small", algorithm=BlendAlgorithm.GATE)
    model.to(dtype)  # a float32 seed (and gate) already there, and an empty slot
    second.germinate("norm", algorithm=BlendAlgorithm.GATE)
    for slot in (first, second):
        assert {p.dtype for p in slot.seed_parameters()} == {dtype}
        assert slot._alpha_value.dtype == dtype
    x = _input("cnn", dtype)
    _walk(model, first, x, dtype)
    _walk(model, second, x, dtype)


def test_placement_prefers_the_target_then_the_model() -> None:
    model = UserNet().to(torch.bfloat16)
    model.head.float()  # a part kept in float32 inside a bf16 model
    assert host_placement(model.head, model).dtype == torch.float32
    assert host_placement(model.mlp[1], model).dtype == torch.bfloat16  # GELU: no tensors of its own
    ints = nn.Module()
    ints.register_buffer("index", torch.arange(3))
    assert host_placement(ints).dtype is None  # integer tensors say nothing about the dtype
    assert host_placement(nn.GELU()).device is None
    x = torch.randn(2, 3, 5, 5)
    slots = inject_slots(
        model,
        [InjectionTarget("head", "transformer", dim=3), InjectionTarget("mlp.1", "transformer", dim=8)],
        gates=QualityGates("permissive"),
    )
    assert slots["head"]._anchor.dtype == torch.float32
    assert slots["mlp_1"]._anchor.dtype == torch.bfloat16
    slots["head"].germinate("lora", options={"rank": 1})
    slots["head"].advance(_S.TRAINING)
    model.mlp.float()  # the float32 head sees float32 input: the whole forward runs
    model.trunk.float()
    assert model(x).dtype == torch.float32


class KeepsFloat32(nn.Module):
    """Returns float32 whatever its input: harmless in a float32 slot, a dtype change elsewhere."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.scale * x).float()


def test_g0_probes_in_the_slots_dtype() -> None:
    spec = BlueprintSpec("keeps_float32", "cnn", KeepsFloat32, lambda dim: dim, "test: returns float32")
    with temporary_blueprints(spec):
        fp32 = SeedSlot("a", topology="cnn", dim=4)
        fp32.germinate("keeps_float32")
        assert fp32.stage is _S.GERMINATED
        bf16 = SeedSlot("b", topology="cnn", dim=4).to(torch.bfloat16)
        rng = torch.random.get_rng_state()
        with pytest.raises(LifecycleError, match="dtype_changed"):
            bf16.germinate("keeps_float32")
        assert bf16.stage is _S.DORMANT and bf16.seed is None
        assert torch.equal(torch.random.get_rng_state(), rng)


def _encoder(norm_first: bool, nested: bool) -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=nested and not norm_first)


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=str)
def test_empty_slots_under_cpu_autocast_return_the_plain_output_and_dtype(
    autocast_dtype: torch.dtype,
) -> None:
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(4))
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    seen_dtypes = set()
    for norm_first, nested, training, grad, masked in itertools.product([False, True], repeat=5):
        plain = _encoder(norm_first, nested).train(training)
        injected = copy.deepcopy(plain)
        inject_slots(
            injected, {"layers.0": "transformer", "layers.1.linear2": "transformer"}, example_input=x
        )
        kwargs = {"src_key_padding_mask": mask} if masked else {}
        with torch.autocast("cpu", dtype=autocast_dtype), torch.set_grad_enabled(grad):
            try:
                want = plain(x, **kwargs)
            except RuntimeError:  # torch's own fused nested path does not run under autocast
                continue
            got = injected(x, **kwargs)
        case = (norm_first, nested, training, grad, masked)
        assert got.dtype == want.dtype, case
        assert got.is_nested == want.is_nested, case
        if want.is_nested:
            want, got = want.to_padded_tensor(0.0), got.to_padded_tensor(0.0)
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=str(case))
        seen_dtypes.add(want.dtype)
    assert seen_dtypes == {torch.float32, autocast_dtype}  # both the fused and the plain path ran
