"""Injected slots and torch's fused inference paths (``nn.TransformerEncoder``), nested tensors.

The kind: torch turns its fused paths off when any forward hook is attached, and skips the
submodule calls inside a fused block. An empty slot must leave the model's computation
exactly as it was (same aten ops, same output); a slot with a seed must run wherever it
sits (on a whole layer or inside one). A NestedTensor reaching a slot with a seed - what
``nn.TransformerEncoder`` produces by default in inference with a padding mask - must
either give the right values or raise an Esper error saying what to change.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from esper_core.gates import QualityGates
from esper_core.hosts import HostError
from esper_core.inject import InjectionTarget, inject_slots, remove_slots
from esper_core.stages import SeedStage

from .conftest import drive

FUSED = "_transformer_encoder_layer_fwd"


class AtenOps(TorchDispatchMode):
    """Records the name of every aten op that runs (dispatch level: it does not change the
    Python-level fast-path decisions, unlike a TorchFunctionMode)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _encoder(nested: bool = True) -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 3, enable_nested_tensor=nested).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three sequences of lengths 6, 4 and 2, padded at the end (True = padding)."""
    x = torch.randn(3, 6, 16, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([6, 4, 2])
    return x, torch.arange(6)[None, :] >= lengths[:, None]


def _ops(model: nn.Module, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, list[str]]:
    with torch.no_grad(), AtenOps() as recorder:
        out = model(*args, **kwargs)
    return out, recorder.ops


def _inject(model: nn.Module, paths: list[str]) -> nn.ModuleDict:
    return inject_slots(
        model, [InjectionTarget(p, "transformer", dim=16) for p in paths], gates=QualityGates("permissive")
    )


def _grow(slot: nn.Module, blueprint: str = "toy_linear", stage: SeedStage = SeedStage.HOLDING) -> None:
    slot.germinate(blueprint)
    drive(slot, stage)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


def _unfused(model: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The same model through the regular path: grad mode on turns every fused path off."""
    with torch.enable_grad():
        return model(x, src_key_padding_mask=mask).detach()


PATHS = {
    "layers": ["layers.0", "layers.1", "layers.2"],
    "inside_layers": ["layers.0.linear2", "layers.1.norm1", "layers.2.dropout2"],
}


@pytest.mark.parametrize("where", list(PATHS))
@pytest.mark.parametrize("masked", [False, True])
def test_empty_slots_keep_the_fused_path_and_the_output(where: str, masked: bool) -> None:
    x, mask = _batch()
    kwargs = {"src_key_padding_mask": mask} if masked else {}
    plain_out, plain_ops = _ops(_encoder(), x, **kwargs)
    assert plain_ops.count(FUSED) == 3
    model = _encoder()
    _inject(model, PATHS[where])
    out, ops = _ops(model, x, **kwargs)
    assert ops == plain_ops
    torch.testing.assert_close(out, plain_out, rtol=0, atol=0)


@pytest.mark.parametrize("where", list(PATHS))
def test_a_seed_runs_wherever_it_sits_and_the_fused_path_returns_when_it_goes(where: str) -> None:
    x, _ = _batch()
    model = _encoder(nested=False)
    plain, _ = _ops(model, x)
    slots = _inject(model, PATHS[where])
    slot = slots[PATHS[where][1].replace(".", "_")]
    _grow(slot)
    out, ops = _ops(model, x)
    assert (out - plain).abs().max() > 1e-2, "the seed did not run"
    torch.testing.assert_close(out, _unfused(model, x))
    assert ops.count(FUSED) == 2  # the layer holding the seed runs unfused, the others fused
    slot.prune("test", "tester")
    out, ops = _ops(model, x)
    assert ops.count(FUSED) == 3
    torch.testing.assert_close(out, plain, rtol=0, atol=0)


@pytest.mark.parametrize("where", list(PATHS))
@pytest.mark.parametrize("blueprint", ["toy_linear", "attention", "mlp_small", "norm"])
def test_seed_on_nested_tensors_matches_the_regular_path_on_every_real_token(
    where: str, blueprint: str
) -> None:
    """The default encoder (enable_nested_tensor=True) with a padding mask under no_grad."""
    x, mask = _batch()
    model = _encoder(nested=True)
    slots = _inject(model, PATHS[where])
    for slot in slots.values():
        _grow(slot, blueprint)
    with torch.no_grad(), AtenOps() as recorder:
        out = model(x, src_key_padding_mask=mask)
    assert "_nested_tensor_from_mask" in recorder.ops  # the nested path really ran
    want = _unfused(model, x, mask)
    real = ~mask
    torch.testing.assert_close(out[real], want[real], rtol=1e-4, atol=1e-4)
    assert (out[real] - _encoder(nested=False)(x, src_key_padding_mask=mask)[real]).abs().max() > 1e-2


def test_issue_instance_default_encoder_with_padding_mask_and_a_seed() -> None:
    """Issue 15 item 10: torch's own NotImplementedError from a slot that received a NestedTensor."""
    x, mask = _batch()
    model = _encoder()
    slots = inject_slots(
        model, {"layers.0": "transformer"}, example_input=(x, None, mask), gates=QualityGates("permissive")
    )
    assert slots["layers_0"].dim == 16
    _grow(slots["layers_0"], "mlp_small", SeedStage.BLENDING)
    with torch.no_grad():
        out = model(x, src_key_padding_mask=mask)
    torch.testing.assert_close(out[~mask], _unfused(model, x, mask)[~mask], rtol=1e-4, atol=1e-4)


class NestedFeatures(nn.Module):
    """A user model that hands a NestedTensor of ``layout`` to a linear layer, then pads it."""

    def __init__(self, layout: torch.layout, ragged_features: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.layout = layout
        self.ragged_features = ragged_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x[0, :5], x[1, :3]]
        nested = torch.nested.as_nested_tensor(parts, layout=self.layout)
        h = self.proj(nested)
        return (h + nested).to_padded_tensor(0.0)


@pytest.mark.parametrize("layout", [torch.strided, torch.jagged])
def test_nested_tensors_of_either_layout_work(layout: torch.layout) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4)
    model = NestedFeatures(layout)
    slots = inject_slots(
        model, [InjectionTarget("proj", "transformer", dim=4)], gates=QualityGates("permissive")
    )
    _grow(slots["proj"])
    got = model(x)
    # The same computation on regular tensors, one sequence at a time.
    slot, proj = model.esper_slots["proj"], model.proj
    want = [
        slot(F.linear(x[i : i + 1, :n], proj.weight, proj.bias))[0] + x[i, :n] for i, n in enumerate((5, 3))
    ]
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1, :3], want[1])


def test_nested_tensor_ragged_off_the_sequence_axis_is_a_clear_error() -> None:
    class RaggedImages(nn.Module):
        """Images of different heights as one NestedTensor (B, C, H*, W)."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(torch.nested.as_nested_tensor([x[0, :, :3], x[1]])).to_padded_tensor(0.0)

    model = RaggedImages()
    slots = inject_slots(model, [InjectionTarget("features", "cnn", dim=4)], gates=QualityGates("permissive"))
    x = torch.randn(2, 4, 5, 5)
    before = model(x)  # empty: passed through untouched
    _grow(slots["features"], "toy_conv")
    with pytest.raises(
        HostError,
        match=r"slot 'features' at 'features' received a 4-d NestedTensor ragged along axes \[2\]; "
        r"topology 'cnn' .* only when it is ragged along its causal sequence axis \(none\)\. "
        r"Give the slot regular tensors",
    ):
        model(x)
    remove_slots(model, discard_seeds=True)
    torch.testing.assert_close(model(x), before)


def test_probe_accepts_a_nested_target_output_and_names_a_ragged_feature_axis() -> None:
    class Ragged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Identity()
            self.widths = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.widths(torch.nested.as_nested_tensor([x[0, :, :3], x[1]]))
            return self.tokens(torch.nested.as_nested_tensor([x[0, :2], x[1]])).to_padded_tensor(0.0)

    x = torch.randn(2, 4, 6)
    slots = inject_slots(Ragged(), {"tokens": "transformer"}, example_input=x)
    assert slots["tokens"].dim == 6
    with pytest.raises(
        HostError, match=r"'widths' outputs a NestedTensor \(2, 4, \*\) nested whose feature axis"
    ):
        inject_slots(Ragged(), {"widths": "transformer"}, example_input=x)
