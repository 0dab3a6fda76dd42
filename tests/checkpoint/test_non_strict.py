"""``strict=False`` loads: nothing the file holds disappears without a word.

torch registers a slot's empty seed and blend-gate places as ``None`` submodules, and its
``load_state_dict`` skips them silently, even in the keys it reports. ``load_checkpoint``
lists every tensor no module took in ``unexpected_keys``.
"""

from __future__ import annotations

import pytest
import torch

from esper_core import CNNHost, MorphogeneticModel, QualityGates, load_checkpoint
from esper_core.blend import BlendAlgorithm
from esper_core.stages import SeedStage


def _grown() -> MorphogeneticModel:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(10), gates=QualityGates("permissive"))
    model.slot("r0c0").germinate("conv_light")
    model.slot("r0c1").germinate("bottleneck", algorithm=BlendAlgorithm.GATE)
    for slot_id in ("r0c0", "r0c1"):
        model.slot(slot_id).advance()
    model.slot("r0c1").record_accuracy(50.0)
    model.slot("r0c1").advance()  # BLENDING with a blend gate
    return model


def _prefix(model: MorphogeneticModel, slot_id: str) -> str:
    key = next(k for k in model.state_dict() if k.endswith(f"{slot_id}._extra_state"))
    return key.removesuffix("_extra_state")


def test_tensors_of_a_slot_without_its_envelope_are_reported_unexpected() -> None:
    grown = _grown()
    state = grown.state_dict()
    prefix = _prefix(grown, "r0c1")
    del state[prefix + "_extra_state"]
    target = MorphogeneticModel(CNNHost(10), gates=QualityGates("permissive"))
    result = load_checkpoint(target, state, strict=False)
    orphans = sorted(k for k in state if k.startswith((prefix + "seed.", prefix + "blend_gate.")))
    assert orphans and any(".blend_gate." in k for k in orphans)
    assert sorted(result.unexpected_keys) == orphans
    assert result.missing_keys == [prefix + "_extra_state"]
    assert target.slot("r0c1").stage is SeedStage.DORMANT  # it kept its own lifecycle
    assert target.slot("r0c0").stage is SeedStage.TRAINING  # the other slot loaded
    # MorphogeneticModel.load_state_dict is the same function.
    again = MorphogeneticModel(CNNHost(10), gates=QualityGates("permissive"))
    assert sorted(again.load_state_dict(state, strict=False).unexpected_keys) == orphans


def test_seed_tensors_next_to_a_dormant_envelope_are_reported_unexpected() -> None:
    grown = _grown()
    empty = MorphogeneticModel(CNNHost(10), gates=QualityGates("permissive"))
    state = empty.state_dict()  # every envelope DORMANT ...
    prefix = _prefix(grown, "r0c0")
    extra = {k: v for k, v in grown.state_dict().items() if k.startswith(prefix + "seed.")}
    state.update(extra)  # ... and a seed's tensors beside one of them
    result = load_checkpoint(grown, state, strict=False)
    assert sorted(result.unexpected_keys) == sorted(extra)
    assert grown.slot("r0c0").stage is SeedStage.DORMANT and grown.slot("r0c0").seed is None


def test_a_matching_file_reports_nothing() -> None:
    grown = _grown()
    result = load_checkpoint(_grown(), grown.state_dict(), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_a_plain_load_into_an_injected_model_reports_them_too() -> None:
    # The slot's own load hooks report the dropped tensors, so torch's load_state_dict of a
    # model Esper did not build says the same: strict=False lists them, strict=True raises.
    from torch import nn

    from esper_core.inject import InjectionTarget, get_injection, inject_slots

    def build() -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        inject_slots(
            model, [InjectionTarget("0", "cnn", dim=8, slot_id="a")], gates=QualityGates("permissive")
        )
        return model

    grown = build()
    get_injection(grown).slots["a"].germinate("conv_light")
    state = grown.state_dict()
    envelope = next(k for k in state if k.endswith("a._extra_state"))
    state[envelope] = build().state_dict()[envelope]  # a DORMANT envelope beside the seed's tensors
    orphans = sorted(k for k in state if ".seed." in k)
    assert orphans
    assert sorted(build().load_state_dict(state, strict=False).unexpected_keys) == orphans
    with pytest.raises(RuntimeError, match="Unexpected key"):
        build().load_state_dict(state)
