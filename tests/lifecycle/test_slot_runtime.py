"""Slot runtime details other parts rely on: the bounded stage history, the alpha buffer
that forward reads, the GroupNorm guard on every seed, and ``copy.deepcopy``."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from esper_core import groupnorm
from esper_core.blend import BlendAlgorithm
from esper_core.checkpoint import load_checkpoint
from esper_core.gates import QualityGates
from esper_core.slot import SeedSlot
from esper_core.slot_state import HISTORY_BOUND
from esper_core.stages import SeedStage as S

_LIFE = [S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED]


def _history(slot: SeedSlot) -> list[S]:
    seed = slot.state.seed
    return [] if seed is None else list(seed.history)


# ---- stage history ------------------------------------------------------------------------------


def test_history_records_every_stage_entered(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot()
    assert _history(slot) == []  # an empty slot has no seed, hence no history
    lc.drive(slot, S.FOSSILIZED)
    assert _history(slot) == _LIFE


def test_history_covers_the_cooldown_and_restarts_at_the_next_germination(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(embargo_epochs=1), S.TRAINING)
    slot.prune("test", "tester")
    slot.step_epoch()
    slot.step_epoch()
    assert _history(slot) == [S.GERMINATED, S.TRAINING, S.PRUNED, S.EMBARGOED, S.RESETTING]
    slot.step_epoch()
    assert slot.stage is S.DORMANT and _history(slot) == []
    slot.germinate("lc_conv")
    assert _history(slot) == [S.GERMINATED]


def _cycle_holding(slot: SeedSlot, cycles: int) -> None:
    """HOLDING -> BLENDING -> HOLDING, ``cycles`` times (two history entries each)."""
    for _ in range(cycles):
        slot.set_alpha_target(0.5, 0)
        slot.set_alpha_target(1.0, 0)
        assert slot.advance(S.HOLDING).passed


def test_history_is_bounded_and_the_bound_survives_a_checkpoint(lc) -> None:  # type: ignore[no-untyped-def]
    source = lc.drive(lc.make_slot(), S.HOLDING)
    _cycle_holding(source, HISTORY_BOUND // 2 + 3)
    history = _history(source)
    assert len(history) == HISTORY_BOUND
    assert history[-2:] == [S.BLENDING, S.HOLDING] and history[0] is not S.GERMINATED

    target = lc.make_slot()
    target.load_state_dict(source.state_dict())
    assert _history(target) == history
    _cycle_holding(target, 1)
    assert len(_history(target)) == HISTORY_BOUND  # still bounded after the resume


# ---- the alpha buffer ----------------------------------------------------------------------------


def test_alpha_buffer_tracks_the_schedule_and_the_checkpoint(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.BLENDING, ramp_epochs=4)
    for _ in range(3):
        assert slot._alpha_value.item() == pytest.approx(slot.alpha)
        slot.step_epoch()
    assert 0.0 < slot.alpha < 1.0
    assert "_alpha_value" not in slot.state_dict()
    restored = lc.make_slot()
    restored.load_state_dict(slot.state_dict())
    assert restored._alpha_value.item() == pytest.approx(slot.alpha)
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(restored(x), slot(x))
    slot.prune("test", "tester")
    assert slot._alpha_value.item() == 0.0


# ---- every GroupNorm of every seed is guarded (the channels_last backward crash) -------------


def _guards(module: nn.Module) -> list[int]:
    """How many GroupNorm guards each GroupNorm of ``module`` carries."""
    return [
        sum(hook is groupnorm._groupnorm_pre_hook for hook in m._forward_pre_hooks.values())
        for m in module.modules()
        if isinstance(m, nn.GroupNorm)
    ]


def test_every_groupnorm_of_a_seed_is_guarded_once(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.BLENDING, "lc_norm")
    assert _guards(slot.seed) == [1]
    checkpoint = slot.state_dict()
    for _ in range(3):  # restoring the same seed in place keeps its module (and its one guard)
        slot.load_state_dict(checkpoint)
    assert _guards(slot.seed) == [1]
    fresh = lc.make_slot()
    fresh.load_state_dict(checkpoint)  # a rebuilt seed module is guarded too
    assert fresh.seed is not slot.seed and _guards(fresh.seed) == [1]
    assert _guards(groupnorm.guard_groupnorms(fresh.seed)) == [1]  # idempotent


def test_g0_probe_leaves_batchnorm_statistics_and_modes_alone() -> None:
    from esper_core._build import probe_seed
    from esper_core.registry import get_topology

    seed = nn.Sequential(nn.BatchNorm2d(4, affine=False), nn.GroupNorm(2, 4))
    seed[1].eval()  # a mixed-mode module must keep each submodule's own mode
    before = seed[0].running_mean.clone()
    probe = probe_seed(seed, get_topology("cnn"), 4, torch.zeros(0))
    assert probe.shape_preserved and probe.dtype_preserved and probe.input_preserved
    assert torch.equal(seed[0].running_mean, before)
    assert seed[0].num_batches_tracked.item() == 0
    assert seed.training and seed[0].training and not seed[1].training


# ---- copying --------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(BlendAlgorithm))
def test_deepcopy_of_a_slot_is_independent_and_equal(lc, algorithm) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.BLENDING, "lc_norm", algorithm=algorithm, ramp_epochs=4)
    slot.step_epoch()
    clone = copy.deepcopy(slot)
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(clone(x), slot(x))
    assert clone.stage is S.BLENDING and _history(clone) == _history(slot)
    assert clone.seed is not slot.seed and _guards(clone.seed) == [1]
    assert clone.gates == slot.gates
    clone.step_epoch()
    assert clone.alpha > slot.alpha
    assert clone._alpha_value.item() == pytest.approx(clone.alpha)
    assert slot._alpha_value.item() == pytest.approx(slot.alpha)
    clone.prune("test", "tester")
    assert slot.stage is S.BLENDING and slot.seed is not None


def test_quality_gates_copy_and_pickle() -> None:
    gates = QualityGates("strict", min_activity=0.25)
    assert copy.copy(gates) is gates and copy.deepcopy(gates) is gates  # immutable: shared
    again = pickle.loads(pickle.dumps(gates))
    assert again == gates and again.thresholds.min_activity == 0.25
    with pytest.raises(AttributeError):
        again._policy = "permissive"  # type: ignore[misc]


def test_deepcopy_of_a_model_with_live_seeds(lc) -> None:  # type: ignore[no-untyped-def]
    from esper_core.hosts import TransformerHost
    from esper_core.model import MorphogeneticModel

    def build() -> MorphogeneticModel:
        torch.manual_seed(0)
        host = TransformerHost(vocab_size=7, n_embd=8, n_head=2, n_layer=2, block_size=4)
        return MorphogeneticModel(host, gates=QualityGates("permissive"))

    model = build()
    lc.drive(model.slot("r0c0"), S.FOSSILIZED, "lc_mlp")
    lc.drive(model.slot("r0c1"), S.BLENDING, "lc_lora", algorithm=BlendAlgorithm.GATE)
    model.slot("r0c1").step_epoch()
    clone = copy.deepcopy(model)
    tokens = torch.randint(0, 7, (2, 4))
    torch.testing.assert_close(clone(tokens), model(tokens))
    resumed = build()
    load_checkpoint(resumed, clone.state_dict())
    torch.testing.assert_close(resumed(tokens), model(tokens))
