"""SeedSlot: lifecycle through the public API, atomicity, cooldown, reports."""

from __future__ import annotations

import pytest
import torch

from esper_core.alpha import AlphaCurve, AlphaMode
from esper_core.blend import BlendAlgorithm
from esper_core.errors import LifecycleError, MissingGateError, OptionError, UnknownBlueprintError
from esper_core.gates import GateLevel, QualityGates
from esper_core.stages import SeedStage
from esper_core.telemetry import (
    AlphaTargetSet,
    GateEvaluated,
    PruneScheduled,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    StageChanged,
)

S = SeedStage
ALL_STAGES = [
    S.DORMANT,
    S.GERMINATED,
    S.TRAINING,
    S.BLENDING,
    S.HOLDING,
    S.FOSSILIZED,
    S.PRUNED,
    S.EMBARGOED,
    S.RESETTING,
]
NOT_RUNNING = [S.DORMANT, S.GERMINATED, S.PRUNED, S.EMBARGOED, S.RESETTING]


def _events(slot):  # type: ignore[no-untyped-def]
    seen: list = []
    slot.add_observer(seen.append)
    return seen


def test_happy_path_strict(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot(policy="strict")
    events = _events(slot)
    slot.germinate("lc_conv", ramp_epochs=3, curve=AlphaCurve.COSINE)
    assert slot.stage is S.GERMINATED and slot.alpha == 0.0
    assert slot.advance().passed and slot.stage is S.TRAINING
    h = torch.randn(4, 8, 5, 5)
    target = torch.randn(4, 8, 5, 5)
    opt = torch.optim.SGD(slot.seed_parameters(), lr=0.05)
    for epoch in range(3):
        loss = (slot(h) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        slot.record_accuracy(50.0 + epoch)
        slot.step_epoch()
    result = slot.advance()
    assert result.passed, result.checks_failed
    assert slot.stage is S.BLENDING
    for _ in range(3):
        assert slot.advance().passed is False  # G3 waits for the ramp and the dwell
        slot.record_accuracy(53.0)
        slot.step_epoch()
    assert slot.alpha == 1.0 and slot.schedule.mode is AlphaMode.HOLD
    assert slot.advance().passed and slot.stage is S.HOLDING
    assert not slot.advance().passed  # no counterfactual yet
    slot.record_counterfactual(1.5)
    assert slot.advance().passed and slot.stage is S.FOSSILIZED
    kinds = [type(e) for e in events]
    assert kinds[:2] == [GateEvaluated, SeedGerminated]
    assert kinds[-1] is SeedFossilized
    changes = [(e.from_stage, e.to_stage) for e in events if isinstance(e, StageChanged)]
    assert changes == [
        (S.GERMINATED, S.TRAINING),
        (S.TRAINING, S.BLENDING),
        (S.BLENDING, S.HOLDING),
        (S.HOLDING, S.FOSSILIZED),
    ]


def test_cooldown_exact_tick_sequence(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.TRAINING)
    calls = []
    slot.seed.register_forward_hook(lambda *a: calls.append(1))
    slot.prune("policy_prune", "policy")
    h = torch.randn(2, 8, 3, 3)
    seen = [slot.stage]
    for _ in range(7):
        with pytest.raises(LifecycleError, match="unavailable"):
            slot.germinate("lc_conv")
        assert slot(h) is h
        slot.step_epoch()
        seen.append(slot.stage)
    assert seen == [
        S.PRUNED,
        S.EMBARGOED,
        S.EMBARGOED,
        S.EMBARGOED,
        S.EMBARGOED,
        S.EMBARGOED,
        S.RESETTING,
        S.DORMANT,
    ]
    assert calls == []
    slot.germinate("lc_conv")  # reusable, with fresh metrics
    assert slot.metrics.evaluations_total == 0 and slot.seed_id == "r0c0-lc_conv-2"


@pytest.mark.parametrize("embargo", [1, 3])
def test_cooldown_length_follows_embargo(lc, embargo: int) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(embargo_epochs=embargo), S.GERMINATED)
    slot.prune("p", "policy")
    ticks = 0
    while slot.stage is not S.DORMANT:
        slot.step_epoch()
        ticks += 1
    assert ticks == embargo + 2


@pytest.mark.parametrize("stage", NOT_RUNNING)
def test_forward_is_identity_and_seed_not_called(lc, stage: SeedStage) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot()
    lc.drive(slot, stage)
    h = torch.randn(2, 8, 3, 3, requires_grad=True)
    if slot.seed is not None:
        slot.seed.register_forward_hook(lambda *a: pytest.fail("seed called"))
    assert slot(h) is h


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_training_output_is_exactly_the_host(lc, topology: str) -> None:  # type: ignore[no-untyped-def]
    blueprint = "lc_conv" if topology == "cnn" else "lc_mlp"
    slot = lc.drive(lc.make_slot(topology), S.TRAINING, blueprint)
    torch.nn.init.normal_(next(iter(reversed(list(slot.seed.parameters())))))  # seed no longer identity
    h = slot._topology.example_input(8, batch=3)
    assert torch.equal(slot(h), h)


def test_blending_changes_output_and_holding_equals_seed(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.BLENDING)
    for p in slot.seed.parameters():
        torch.nn.init.normal_(p, std=0.1)
    h = torch.randn(2, 8, 3, 3)
    slot.step_epoch()
    s = slot.seed(h)
    torch.testing.assert_close(slot(h), h + slot.alpha * (s - h))
    slot.step_epoch()
    assert slot.advance().passed
    assert torch.equal(slot(h), slot.seed(h))


def test_alpha_override_replaces_the_schedule(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.HOLDING)
    for p in slot.seed.parameters():
        torch.nn.init.normal_(p, std=0.1)
    h = torch.randn(2, 8, 3, 3)
    override = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    out = slot(h, alpha_override=override)
    assert torch.equal(out[0], h[0])
    assert torch.equal(out[1], slot.seed(h)[1])
    with pytest.raises(LifecycleError, match="alpha_override"):
        slot(h, alpha_override=torch.ones(2, 1))


def test_advance_errors(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot()
    with pytest.raises(LifecycleError, match="germinate"):
        slot.advance()
    lc.drive(slot, S.HOLDING)
    with pytest.raises(MissingGateError, match="HOLDING->BLENDING"):
        slot.advance(S.BLENDING)
    with pytest.raises(LifecycleError, match="prune"):
        slot.advance(S.PRUNED)
    with pytest.raises(LifecycleError, match="illegal"):
        slot.advance(S.TRAINING)
    with pytest.raises(LifecycleError, match="reserved"):
        slot.advance(5)  # type: ignore[arg-type]
    slot.record_counterfactual(1.0)
    slot.advance()
    with pytest.raises(LifecycleError, match="terminal"):
        slot.advance()


def test_evaluate_does_not_mutate(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.TRAINING)
    events = _events(slot)
    before = lc.snapshot(slot)
    result = slot.evaluate()
    assert result.gate is GateLevel.G2 and result.passed
    assert lc.same_snapshot(before, lc.snapshot(slot)) and events == []


REJECTED_CALLS = [
    ("germinate", S.TRAINING, lambda s: s.germinate("lc_conv")),
    ("germinate bad blueprint", S.DORMANT, lambda s: s.germinate("no_such_blueprint")),
    ("germinate bad option", S.DORMANT, lambda s: s.germinate("lc_conv", options={"hidden": -1})),
    ("germinate unknown option", S.DORMANT, lambda s: s.germinate("lc_conv", options={"nope": 1})),
    ("germinate bad ramp_epochs", S.DORMANT, lambda s: s.germinate("lc_conv", ramp_epochs=0)),
    ("germinate bad target", S.DORMANT, lambda s: s.germinate("lc_conv", alpha_target=0.0)),
    ("germinate shape probe", S.DORMANT, lambda s: s.germinate("lc_shrink")),
    ("germinate wrong topology", S.DORMANT, lambda s: s.germinate("lc_lora")),
    ("advance terminal", S.FOSSILIZED, lambda s: s.advance()),
    ("advance missing gate", S.HOLDING, lambda s: s.advance(S.BLENDING)),
    ("prune fossilized", S.FOSSILIZED, lambda s: s.prune("x", "policy")),
    ("prune dormant", S.DORMANT, lambda s: s.prune("x", "policy")),
    ("prune twice", S.PRUNED, lambda s: s.prune("x", "policy")),
    ("prune empty reason", S.TRAINING, lambda s: s.prune("", "policy")),
    ("schedule_prune bad steps", S.HOLDING, lambda s: s.schedule_prune(-1, reason="r", initiator="i")),
    ("schedule_prune fossilized", S.FOSSILIZED, lambda s: s.schedule_prune(3, reason="r", initiator="i")),
    ("set_alpha_target training", S.TRAINING, lambda s: s.set_alpha_target(0.5, 2)),
    ("set_alpha_target zero", S.HOLDING, lambda s: s.set_alpha_target(0.0, 2)),
    ("set_alpha_target mid-ramp", S.BLENDING, lambda s: s.set_alpha_target(0.5, 2)),
    ("set_alpha_target bad algorithm", S.HOLDING, lambda s: s.set_alpha_target(0.5, 2, algorithm="gate")),
    ("record_accuracy out of range", S.TRAINING, lambda s: s.record_accuracy(101.0)),
    ("record_accuracy nan", S.TRAINING, lambda s: s.record_accuracy(float("nan"))),
    ("record_accuracy empty", S.DORMANT, lambda s: s.record_accuracy(50.0)),
    ("record_counterfactual inf", S.HOLDING, lambda s: s.record_counterfactual(float("inf"))),
]


@pytest.mark.parametrize(("name", "stage", "call"), REJECTED_CALLS, ids=[c[0] for c in REJECTED_CALLS])
def test_rejected_calls_change_nothing(lc, name: str, stage: SeedStage, call) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), stage)
    events = _events(slot)
    before = lc.snapshot(slot)
    with pytest.raises((LifecycleError, UnknownBlueprintError, OptionError)):
        call(slot)
    assert lc.same_snapshot(before, lc.snapshot(slot))
    assert all(isinstance(e, GateEvaluated) for e in events)  # only a G0 verdict may have been reported


def test_germinate_rejected_keeps_blend_settings_of_live_seed(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.TRAINING, algorithm=BlendAlgorithm.MULTIPLY)
    with pytest.raises(LifecycleError):
        slot.germinate("lc_conv", algorithm=BlendAlgorithm.GATE)
    assert slot.algorithm is BlendAlgorithm.MULTIPLY and slot.blend_gate is None


def test_schedule_prune_from_holding(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.HOLDING)
    events = _events(slot)
    slot.schedule_prune(2, AlphaCurve.LINEAR, reason="low_value", initiator="policy")
    assert slot.stage is S.BLENDING and slot.report().pending_prune
    with pytest.raises(LifecycleError, match="ramping"):
        slot.set_alpha_target(1.0, 1)
    slot.step_epoch()
    assert slot.stage is S.BLENDING and slot.alpha == 0.5
    slot.step_epoch()
    assert slot.stage is S.PRUNED and slot.seed is None
    pruned = [e for e in events if isinstance(e, SeedPruned)]
    assert [(p.reason, p.initiator, p.from_stage) for p in pruned] == [("low_value", "policy", S.BLENDING)]
    assert any(isinstance(e, PruneScheduled) for e in events)


@pytest.mark.parametrize("stage", [S.GERMINATED, S.TRAINING])
def test_schedule_prune_without_amplitude_is_immediate(lc, stage: SeedStage) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), stage)
    slot.schedule_prune(3, reason="r", initiator="governor")
    assert slot.stage is S.PRUNED


def test_set_alpha_target_partial_hold_and_back(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.HOLDING)
    events = _events(slot)
    slot.set_alpha_target(0.5, 2, AlphaCurve.SIGMOID)
    assert slot.stage is S.BLENDING
    slot.step_epoch()
    slot.step_epoch()
    assert slot.alpha == 0.5 and slot.schedule.at_rest
    assert not slot.advance().passed  # G3 needs a full target
    slot.set_alpha_target(1.0, 1)
    slot.step_epoch()
    assert slot.advance().passed and slot.stage is S.HOLDING
    assert [type(e) for e in events].count(AlphaTargetSet) == 2


def test_switching_to_gate_adds_parameters_and_back_removes_them(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.HOLDING)
    events = _events(slot)
    n = len(slot.seed_parameters())
    slot.set_alpha_target(1.0, 0, algorithm=BlendAlgorithm.GATE)
    assert slot.stage is S.HOLDING and slot.blend_gate is not None
    assert len(slot.seed_parameters()) > n and events[-1].parameters_changed
    h = torch.randn(2, 8, 3, 3)
    assert slot(h).shape == h.shape
    slot.set_alpha_target(1.0, 0, algorithm=BlendAlgorithm.ADD)
    assert slot.blend_gate is None and len(slot.seed_parameters()) == n


def test_gate_algorithm_from_germination(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot("transformer"), S.BLENDING, "lc_mlp", algorithm=BlendAlgorithm.GATE)
    slot.step_epoch()
    h = torch.randn(2, 6, 8)
    out = slot(h)
    s = slot.seed(h)
    torch.testing.assert_close(out, h + slot.alpha * 0.5 * (s - h))


def test_counterfactual_velocity_reaches_report(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.HOLDING)
    assert slot.report().contribution_velocity is None
    slot.record_counterfactual(1.0)
    assert slot.report().metrics.counterfactual == 1.0 and slot.report().contribution_velocity is None
    slot.record_counterfactual(3.0)
    assert slot.report().contribution_velocity == pytest.approx(2.0)
    slot.record_counterfactual(2.0)
    assert slot.report().contribution_velocity == pytest.approx(0.7 * 2.0 + 0.3 * -1.0)


def test_param_counts_do_not_depend_on_requires_grad(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.BLENDING)
    before = slot.report().seed_param_count
    assert before == sum(p.numel() for p in slot.seed.parameters()) > 0
    slot.seed.requires_grad_(False)
    assert slot.report().seed_param_count == before
    from esper_core.registry import param_count

    assert before == param_count("cnn", "lc_conv", 8)


def test_report_fields(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.BLENDING)
    slot.step_epoch()
    r = slot.report()
    assert (r.stage, r.blueprint, r.algorithm, r.alpha_target) == (
        S.BLENDING,
        "lc_conv",
        BlendAlgorithm.ADD,
        1.0,
    )
    assert r.alpha == slot.alpha == 0.5
    assert r.isolated and r.trainable and r.healthy
    assert not hasattr(r, "blending_progress")  # one term: the schedule's value is alpha everywhere


def test_decider_rules_every_gate_decision(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot(auto_advance={GateLevel.G1})
    asked: list = []

    def decider(s, result):  # type: ignore[no-untyped-def]
        asked.append(result.gate)
        return False

    slot.decider = decider
    with pytest.raises(LifecycleError, match="G0"):
        slot.germinate("lc_conv")
    assert slot.stage is S.DORMANT
    slot.decider = lambda s, r: asked.append(r.gate) or True
    slot.germinate("lc_conv")
    slot.decider = decider
    slot.step_epoch()  # auto-advance asks too
    assert slot.stage is S.GERMINATED
    result = slot.advance()
    assert not result.passed and "decider" in result.message
    assert asked == [GateLevel.G0, GateLevel.G0, GateLevel.G1, GateLevel.G1]
    slot.decider = lambda s, r: True
    assert slot.advance().passed
    slot.decider = lambda s, r: 1  # type: ignore[assignment,return-value]
    with pytest.raises(LifecycleError, match="bool"):
        slot.advance()
    assert slot.stage is S.TRAINING


def test_auto_advance_through_configured_gates(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot(auto_advance={GateLevel.G1, GateLevel.G2, GateLevel.G3})
    slot.germinate("lc_conv", ramp_epochs=2)
    slot.step_epoch()
    assert slot.stage is S.TRAINING
    slot.step_epoch()
    assert slot.stage is S.TRAINING  # permissive G2 needs one recorded epoch
    slot.record_accuracy(40.0)
    slot.step_epoch()
    assert slot.stage is S.BLENDING
    slot.step_epoch()
    slot.step_epoch()
    assert slot.stage is S.HOLDING
    for _ in range(3):
        slot.step_epoch()
    assert slot.stage is S.HOLDING  # fossilization is never automatic
    with pytest.raises(LifecycleError, match="auto_advance"):
        lc.make_slot(auto_advance={GateLevel.G5})


def test_unhealthy_seed_never_fossilizes(lc) -> None:  # type: ignore[no-untyped-def]
    for policy in ("strict", "permissive"):
        slot = lc.drive(lc.make_slot(), S.HOLDING)
        slot.reconfigure(gates=QualityGates(policy))
        h = torch.randn(2, 8, 3, 3)
        with torch.no_grad():
            next(iter(slot.seed.parameters())).fill_(float("nan"))
        slot(h).sum().backward()
        slot.record_accuracy(50.0)
        slot.record_counterfactual(5.0)
        result = slot.advance()
        assert not result.passed and any(c.startswith("nonfinite") for c in result.checks_failed)
        assert not slot.report().healthy
        assert slot.stage is S.HOLDING


def test_negative_contribution_is_unhealthy_under_permissive(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(policy="permissive"), S.HOLDING)
    slot.record_counterfactual(-0.5)
    assert not slot.advance().passed
    assert "negative_contribution" in slot.report().health_issues
    slot.record_counterfactual(0.0)
    assert slot.advance().passed


def test_observer_management(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot()
    seen: list = []
    slot.add_observer(seen.append)
    slot.germinate("lc_conv")
    slot.remove_observer(seen.append)
    slot.advance()
    assert [type(e) for e in seen] == [GateEvaluated, SeedGerminated]
    with pytest.raises(LifecycleError):
        slot.remove_observer(seen.append)
    with pytest.raises(LifecycleError):
        slot.add_observer("not callable")  # type: ignore[arg-type]


def test_constructor_validation() -> None:
    from esper_core.errors import UnknownTopologyError
    from esper_core.slot import SeedSlot

    with pytest.raises(UnknownTopologyError):
        SeedSlot("a", topology="graph", dim=4)
    with pytest.raises(LifecycleError):
        SeedSlot("", topology="cnn", dim=4)
    with pytest.raises(LifecycleError):
        SeedSlot("a", topology="cnn", dim=0)
    with pytest.raises(LifecycleError):
        SeedSlot("a", topology="cnn", dim=4, embargo_epochs=0)
    with pytest.raises(LifecycleError):
        SeedSlot("a", topology="cnn", dim=4, gates="strict")  # type: ignore[arg-type]


def test_state_checksum_tracks_lifecycle(lc) -> None:  # type: ignore[no-untyped-def]
    a, b = lc.drive(lc.make_slot(), S.BLENDING), lc.drive(lc.make_slot(), S.BLENDING)
    assert torch.equal(a.state_checksum(), b.state_checksum())
    assert a.state_checksum().dtype == torch.float64
    a.step_epoch()
    assert not torch.equal(a.state_checksum(), b.state_checksum())


def test_slot_moves_with_dtype(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot().to(torch.float64)
    slot.germinate("lc_conv")
    assert next(slot.seed.parameters()).dtype == torch.float64


LIVE = [
    S.DORMANT,
    S.GERMINATED,
    S.TRAINING,
    S.BLENDING,
    S.HOLDING,
    S.FOSSILIZED,
    S.PRUNED,
    S.EMBARGOED,
    S.RESETTING,
]
GATED = {
    (S.GERMINATED, S.TRAINING),
    (S.TRAINING, S.BLENDING),
    (S.BLENDING, S.HOLDING),
    (S.HOLDING, S.FOSSILIZED),
}


@pytest.mark.parametrize("source", LIVE)
def test_advance_to_every_target(lc, source: SeedStage) -> None:  # type: ignore[no-untyped-def]
    """advance() commits exactly the gated edges; every other (source, target) raises unchanged."""
    for target in SeedStage:
        slot = lc.drive(lc.make_slot(), source)
        if source is S.BLENDING:
            slot.step_epoch()
            slot.step_epoch()
        if source is S.HOLDING:
            slot.record_counterfactual(1.0)
        before = lc.snapshot(slot)
        if (source, target) in GATED:
            assert slot.advance(target).passed
            assert slot.stage is target
        else:
            with pytest.raises(LifecycleError):
                slot.advance(target)
            assert lc.same_snapshot(before, lc.snapshot(slot))


@pytest.mark.parametrize("stage", [S.TRAINING, S.BLENDING, S.HOLDING, S.DORMANT])
def test_slot_forward_compiles_fullgraph(lc, stage: SeedStage) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), stage)
    if stage is S.BLENDING:
        slot.step_epoch()
    h = torch.randn(2, 8, 3, 3, requires_grad=True)
    expected = slot(h)
    compiled = torch.compile(slot, fullgraph=True, backend="eager")
    out = compiled(h)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert h.grad is not None
