"""Measurements count only where they mean something, and a value in the wrong unit is seen.

A leave-one-out contribution measures the seed's effect on the model's output, so it exists
only while the seed's output is blended in (BLENDING, HOLDING, FOSSILIZED). G5 judges the
seed at full strength: a contribution measured while alpha was still ramping does not carry
into HOLDING. Accuracies are percentage points; one that looks like a fraction is reported
as a Python warning as well as an event.
"""

from __future__ import annotations

import warnings

import pytest

from esper_core.errors import LifecycleError, LifecycleWarning
from esper_core.stages import BLENDED, LIVE, SeedStage

S = SeedStage


@pytest.mark.parametrize("stage", sorted(LIVE - BLENDED), ids=lambda s: s.name)
def test_a_contribution_before_blending_is_refused_and_changes_nothing(lc, stage: SeedStage) -> None:
    slot = lc.drive(lc.make_slot(), stage)
    before = lc.snapshot(slot)
    with pytest.raises(
        LifecycleError, match=rf"record_counterfactual needs .*BLENDING.*stage is {stage.name}"
    ):
        slot.record_counterfactual(5.0)
    assert lc.same_snapshot(before, lc.snapshot(slot))


@pytest.mark.parametrize("stage", sorted(BLENDED), ids=lambda s: s.name)
def test_a_contribution_is_recorded_once_the_seed_is_blended_in(lc, stage: SeedStage) -> None:
    slot = lc.drive(lc.make_slot(), stage)
    slot.record_counterfactual(3.0)
    assert slot.metrics.counterfactual == 3.0


def test_g5_needs_a_contribution_measured_in_holding(lc) -> None:
    """The user report's kind: a value recorded before full strength must not fossilize a seed."""
    slot = lc.drive(lc.make_slot(), S.BLENDING, ramp_epochs=2)
    slot.record_counterfactual(5.0)  # measured at alpha < 1
    while slot.alpha < 1.0:
        slot.step_epoch()
    assert slot.advance(S.HOLDING).passed
    assert slot.metrics.counterfactual is None
    assert slot.metrics.previous_counterfactual == 5.0
    refused = slot.advance(S.FOSSILIZED)
    assert not refused.passed and slot.stage is S.HOLDING
    assert "counterfactual" in " ".join(refused.checks_failed)
    slot.record_counterfactual(2.0)  # measured at full strength
    assert slot.advance(S.FOSSILIZED).passed


@pytest.mark.parametrize("history", [(0.93,), (93.0, 0.94)], ids=["first", "after_percent"])
def test_an_accuracy_that_looks_like_a_fraction_warns_once(lc, history: tuple[float, ...]) -> None:
    slot = lc.drive(lc.make_slot(), S.GERMINATED)
    slot.advance(S.TRAINING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for accuracy in history:
            slot.record_accuracy(accuracy)
        slot.record_accuracy(0.95)
    found = [w for w in caught if issubclass(w.category, LifecycleWarning)]
    assert len(found) == 1, [str(w.message) for w in caught]
    assert "percentage points" in str(found[0].message) and "'r0c0'" in str(found[0].message)
    assert "accuracy_looks_like_a_fraction" in slot.report().warnings


def test_percent_accuracies_do_not_warn(lc) -> None:
    slot = lc.drive(lc.make_slot(), S.GERMINATED)
    slot.advance(S.TRAINING)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LifecycleWarning)
        for accuracy in (12.5, 40.0, 93.1):
            slot.record_accuracy(accuracy)


@pytest.mark.parametrize("shape", [(2, 16, 4, 4), (2, 8, 4), (8, 4, 4)], ids=["width", "rank3", "unbatched"])
def test_features_of_the_wrong_width_name_the_slot_and_both_widths(lc, shape: tuple[int, ...]) -> None:
    import torch

    slot = lc.drive(lc.make_slot(dim=8), S.TRAINING)
    with pytest.raises(LifecycleError, match=r"slot 'r0c0' \(cnn, dim 8\) received features of shape"):
        slot(torch.randn(*shape))
    assert slot.stage is S.TRAINING
    slot(torch.randn(2, 8, 4, 4))  # the right width still runs


def test_a_seed_no_optimizer_steps_is_named_at_g2(lc) -> None:
    """Exactly zero activity almost always means the seed is in no optimizer: G2 says so."""
    import torch

    from esper_core.gates import QualityGates

    slot = lc.drive(lc.make_slot(), S.TRAINING)
    slot.reconfigure(gates=QualityGates("strict"))
    for accuracy in (50.0, 60.0, 70.0, 80.0):
        slot(torch.randn(2, 8, 4, 4)).sum().backward()  # gradients, but no optimizer step
        slot.record_accuracy(accuracy)
    result = slot.advance(S.BLENDING)
    assert not result.passed
    assert "OptimizerBinding" in result.message
