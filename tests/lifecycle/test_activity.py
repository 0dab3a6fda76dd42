"""The scale-free activity measure that feeds G2."""

from __future__ import annotations

import math

import attrs
import pytest
import torch

from esper_core.activity import ActivityMeter, relative_changes
from esper_core.codec import from_data, to_data
from esper_core.errors import CheckpointError, LifecycleError
from esper_core.evidence import Evidence
from esper_core.metrics import ActivityState
from esper_core.registry import get_blueprint
from esper_core.stages import SeedStage
from esper_core.transition import evaluate

S = SeedStage


def _lora() -> str:
    """The pack's LoRA when it is installed, else the equivalent test blueprint."""
    try:
        spec = get_blueprint("transformer", "lora")
    except Exception:
        return "lc_lora"
    return "lora" if any(o.name == "rank" for o in spec.options) else "lc_lora"


def test_relative_changes_math() -> None:
    before = [torch.tensor([3.0, 4.0]), torch.zeros(3), torch.zeros(2), torch.ones(4)]
    after = [torch.tensor([3.0, 4.0]) * 1.5, torch.tensor([0.0, 0.1, 0.0]), torch.zeros(2), torch.ones(4)]
    r = relative_changes(before, after)
    assert r == pytest.approx([2.5 / 7.5, 1.0, 0.0, 0.0])
    with pytest.raises(LifecycleError):
        relative_changes(before, after[:1])


def test_relative_change_does_not_depend_on_size() -> None:
    torch.manual_seed(0)
    small, large = torch.randn(8, 4), torch.randn(8, 64)
    rs = relative_changes([small], [small * 1.1])
    rl = relative_changes([large], [large * 1.1])
    assert rs == pytest.approx(rl)


def test_ema_and_unmeasured_state() -> None:
    state = ActivityState()
    assert not state.measured and state.ema is None
    state = state.update(0.4, decay=0.5)
    assert state.ema == 0.4 and state.samples == 1  # first reading taken as is
    state = state.update(0.0, decay=0.5)
    assert state.ema == pytest.approx(0.2) and state.last == 0.0
    assert from_data(ActivityState, to_data(state)) == state
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(LifecycleError):
            state.update(bad)
    with pytest.raises(CheckpointError):
        from_data(ActivityState, {"ema": None, "last": None, "samples": 3})
    with pytest.raises(CheckpointError):
        from_data(ActivityState, {"ema": 0.1})


def test_meter_flags_nonfinite_values() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    meter = ActivityMeter()
    assert meter.measure([p]).value is None  # no reference yet
    with torch.no_grad():
        p[0] = float("nan")
    p.grad = torch.tensor([1.0, float("inf"), 0.0])
    reading = meter.measure([p])
    assert reading.value is None and reading.nonfinite_parameters and reading.nonfinite_gradients


def _train(slot, data, epochs: int = 3, include_in_optimizer: bool = True) -> None:  # type: ignore[no-untyped-def]
    x, y = data
    params = [p for p in slot.seed_parameters() if p.requires_grad] if include_in_optimizer else []
    opt = torch.optim.Adam(params, lr=1e-2) if params else None
    for epoch in range(epochs):
        for _ in range(5):
            loss = (slot(x) - y).pow(2).mean()
            if opt is not None:
                opt.zero_grad()
            if loss.requires_grad:
                loss.backward()
            if opt is not None:
                opt.step()
        slot.record_accuracy(50.0 + epoch)


def _task(topology: str):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(7)
    if topology == "transformer":
        x = torch.randn(4, 6, 16, generator=g)
        w = torch.randn(16, 16, generator=g) / 4
        return x, x + x @ w
    x = torch.randn(4, 16, 5, 5, generator=g)
    return x, x + 0.5 * torch.tanh(x.roll(1, dims=1))


def _trained(lc, topology: str, blueprint: str, options=None, **kw):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    slot = lc.make_slot(topology, dim=16, policy="strict")
    slot.germinate(blueprint, options=options or {})
    slot.advance()
    _train(slot, _task(topology), **kw)
    return slot


def test_lora_rank_8_and_16_get_the_same_decision(lc) -> None:  # type: ignore[no-untyped-def]
    name = _lora()
    r8 = _trained(lc, "transformer", name, {"rank": 8})
    r16 = _trained(lc, "transformer", name, {"rank": 16})
    a8, a16 = r8.report().activity, r16.report().activity
    assert a8 is not None and a16 is not None
    assert 0.5 < a8 / a16 < 2.0  # twice the parameters, about the same activity
    d8, d16 = r8.evaluate(), r16.evaluate()
    assert d8.passed == d16.passed
    assert d8.passed, d8.checks_failed


def test_seed_that_does_not_move_is_inactive(lc) -> None:  # type: ignore[no-untyped-def]
    slot = _trained(lc, "cnn", "lc_conv", include_in_optimizer=False)
    assert slot.report().activity == 0.0
    result = slot.evaluate()
    assert not result.passed
    assert [c for c in result.checks_failed if c.startswith("seed_inactive")]


def test_frozen_seed_reads_as_inactive(lc) -> None:  # type: ignore[no-untyped-def]
    slot = _trained(lc, "cnn", "lc_frozen")
    assert slot.report().activity == 0.0
    assert not slot.evaluate().passed


@pytest.mark.parametrize(
    ("topology", "first", "second"), [("transformer", "lc_mlp", "lc_lora"), ("cnn", "lc_conv", "lc_norm")]
)
def test_two_families_that_learn_are_both_active(lc, topology: str, first: str, second: str) -> None:  # type: ignore[no-untyped-def]
    for blueprint in (first, second):
        slot = _trained(lc, topology, blueprint)
        result = slot.evaluate()
        assert result.passed, (blueprint, result.checks_failed)


def test_unmeasured_activity_fails_strict_g2(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot(dim=16, policy="strict")
    slot.germinate("lc_conv")
    slot.advance()
    seed = slot.state.seed
    metrics = seed.metrics
    for epoch in range(3):
        metrics = metrics.record_accuracy(50.0 + epoch)  # accuracy without any capture
    state = attrs.evolve(slot.state, seed=attrs.evolve(seed, metrics=metrics))
    assert state.seed.activity.ema is None
    result = evaluate(state, slot.config, None, Evidence(trainable_params=True))
    assert "activity_unmeasured" in result.checks_failed
