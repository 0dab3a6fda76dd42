"""MorphogeneticModel: exact pass-through, routing through seeds, counts, fused counterfactuals."""

from __future__ import annotations

import pytest
import torch

from esper_core.errors import EsperError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost, HostError, TransformerHost
from esper_core.model import MorphogeneticModel, contribution_configs
from esper_core.stages import SeedStage

from .conftest import drive


def _cnn_model(**kwargs: object) -> tuple[MorphogeneticModel, torch.Tensor]:
    torch.manual_seed(0)
    return MorphogeneticModel(CNNHost(5, in_channels=1, base_channels=4), **kwargs), torch.randn(6, 1, 8, 8)


def _lm_model(**kwargs: object) -> tuple[MorphogeneticModel, torch.Tensor]:
    torch.manual_seed(0)
    host = TransformerHost(17, n_embd=16, n_head=2, n_layer=2, block_size=8)
    return MorphogeneticModel(host, **kwargs), torch.randint(0, 17, (4, 8))


@pytest.mark.parametrize("make", [_cnn_model, _lm_model])
def test_dormant_model_output_equals_host_exactly(make: object) -> None:
    model, x = make()
    model.eval()
    assert torch.equal(model(x), model.host(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    assert torch.equal(a, model.host(x))


def test_germinated_but_untrained_seeds_keep_output_exact(permissive: QualityGates) -> None:
    model, x = _cnn_model(gates=permissive)
    model.eval()
    expected = model.host(x)
    for slot_id in model.slot_ids:
        model.germinate(slot_id, "toy_conv")
    assert torch.equal(model(x), expected)
    for slot_id in model.slot_ids:
        drive(model.slots[slot_id], SeedStage.TRAINING)
    assert torch.equal(model(x), expected)  # TRAINING: straight-through, value is the host's


def test_slot_subset_and_order() -> None:
    model, _ = _cnn_model(slots=["r1c2", "r0c0"])
    assert model.slot_ids == ("r0c0", "r1c2")
    assert list(model.slots) == ["r0c0", "r1c2"]
    assert model.slots["r1c2"].dim == 16 and model.slots["r1c2"].topology == "cnn"


def test_unknown_slot_ids_are_rejected_and_nothing_is_germinated() -> None:
    with pytest.raises(HostError, match=r"unknown or repeated slot ids \['r7c0'\].*r0c0"):
        _cnn_model(slots=["r0c0", "r7c0"])
    model, _ = _cnn_model()
    with pytest.raises(HostError, match=r"unknown slot id 'mid'; this model has slots \['r0c0'"):
        model.germinate("mid", "toy_conv")
    assert all(model.slots[s].stage is SeedStage.DORMANT for s in model.slot_ids)
    with pytest.raises(HostError, match="must implement HostProtocol"):
        MorphogeneticModel(torch.nn.Linear(2, 2))


def test_blueprint_of_the_wrong_topology_is_rejected() -> None:
    model, _ = _cnn_model()
    with pytest.raises(EsperError, match="toy_linear") as info:
        model.germinate("r0c0", "toy_linear")
    assert "toy_conv" in str(info.value)  # the message lists what the topology accepts
    assert model.slots["r0c0"].stage is SeedStage.DORMANT and model.slots["r0c0"].seed is None
    lm, _ = _lm_model()
    with pytest.raises(EsperError, match="toy_conv"):
        lm.germinate("r0c1", "toy_conv")
    assert lm.seed_param_count() == 0


def test_exact_param_counts_through_the_lifecycle(permissive: QualityGates) -> None:
    model, _ = _cnn_model(gates=permissive)
    host = model.host_param_count
    assert host == sum(p.numel() for p in model.host.parameters())
    assert model.total_param_count == host and model.seed_param_count() == 0
    model.germinate("r0c1", "toy_conv")  # dim 8: 8*8 + 8
    model.germinate("r1c0", "toy_scale")  # dim 4
    assert model.active_seed_param_count == 72 + 4
    drive(model.slots["r0c1"], SeedStage.FOSSILIZED)
    assert model.fossilized_param_count == 72
    assert model.active_seed_param_count == 4
    for p in model.slots["r0c1"].seed_parameters():
        p.requires_grad_(False)  # counts do not depend on requires_grad
    assert model.total_param_count == host + 76
    model.prune("r1c0", "test", "test")
    assert model.total_param_count == host + 72


def test_a_blended_seed_changes_the_output_and_routes_in_order(permissive: QualityGates) -> None:
    model, x = _cnn_model(gates=permissive)
    model.eval()
    model.germinate("r1c1", "toy_conv")
    drive(model.slots["r1c1"], SeedStage.BLENDING)
    model.slots["r1c1"].step_epoch()  # the first alpha tick
    assert model.slots["r1c1"].alpha > 0
    with torch.no_grad():
        model.slots["r1c1"].seed.conv.bias.fill_(0.5)
    h = model.host.forward_segment(x, None, "r1c1")
    expected = model.host.forward_segment(model.slots["r1c1"](h), "r1c1", None)
    assert torch.equal(model(x), expected)
    assert not torch.equal(model(x), model.host(x))


def test_contribution_configs_is_leave_one_out() -> None:
    assert contribution_configs([0.5, 1.0]) == [[0.5, 1.0], [0.0, 1.0], [0.5, 0.0]]
    assert contribution_configs([]) == [[]]


@pytest.mark.parametrize("make", [_cnn_model, _lm_model])
def test_fused_counterfactual_equals_separate_passes(make: object, permissive: QualityGates) -> None:
    model, x = make(gates=permissive)
    live = list(model.slot_ids[:2])
    blueprint = "toy_conv" if model.topology == "cnn" else "toy_linear"
    torch.manual_seed(3)
    for slot_id in live:
        model.germinate(slot_id, blueprint)
        drive(model.slots[slot_id], SeedStage.HOLDING)
        with torch.no_grad():
            for p in model.slots[slot_id].seed_parameters():
                p.normal_(0, 0.5)
    y = model.host(x).argmax(-1)  # targets the host gets right, so seeds can only change the score
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]

    def score(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (out.argmax(-1) == target).float()

    model.train()
    evaluation = model.evaluate(batches, score)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        main = score(model(x), y).mean().item() * 100
        assert evaluation.score == pytest.approx(main)
        assert set(evaluation.contributions) == set(live)
        for slot_id in live:
            shape = (x.shape[0],) + (1,) * (3 if model.topology == "cnn" else 2)
            off = score(model.forward_with_alphas(x, {slot_id: torch.zeros(shape)}), y).mean().item() * 100
            assert evaluation.contributions[slot_id] == pytest.approx(main - off)
    assert evaluation.samples == y.numel()


def test_override_shape_is_checked() -> None:
    model, x = _cnn_model()
    with pytest.raises(
        HostError, match=r"got torch.float32 \(6, 1\) on cpu; accepted: .* of shape \(6, 1, 1, 1\)"
    ):
        model.forward_with_alphas(x, {"r0c0": torch.ones(6, 1)})
    with pytest.raises(HostError, match="unknown slot id 'zz'"):
        model.forward_with_alphas(x, {"zz": torch.ones(6, 1, 1, 1)})
