"""Every gate check, under both policies; edge lookup without a default pass."""

from __future__ import annotations

import itertools

import attrs
import pytest

from esper_core.alpha import AlphaMode
from esper_core.errors import LifecycleError, MissingGateError
from esper_core.gates import EDGE_GATES, GateEvidence, GateLevel, GateThresholds, QualityGates, gate_for_edge
from esper_core.stages import SeedStage

S = SeedStage
POLICIES = ["strict", "permissive"]

# Evidence that passes every check of each gate under the strict (hence also permissive) policy.
GOOD = {
    GateLevel.G0: GateEvidence(stage=S.DORMANT, seed_id="s", blueprint="b"),
    GateLevel.G1: GateEvidence(stage=S.GERMINATED),
    GateLevel.G2: GateEvidence(stage=S.TRAINING, evaluations_in_stage=3, improvement=0.5, activity=1e-3),
    GateLevel.G3: GateEvidence(stage=S.BLENDING, evaluations_in_stage=3, alpha=1.0, alpha_target=1.0),
    GateLevel.G5: GateEvidence(stage=S.HOLDING, counterfactual=1.0),
}
EDGE = {level: edge for edge, level in EDGE_GATES.items()}

# (gate, changed evidence fields, failed check prefix, policies in which it fails)
FAILURES = [
    (GateLevel.G0, {"seed_id": ""}, "seed_id_missing", POLICIES),
    (GateLevel.G0, {"blueprint": ""}, "blueprint_missing", POLICIES),
    (GateLevel.G0, {"shape_preserved": False}, "shape_changed", POLICIES),
    (GateLevel.G0, {"dtype_preserved": False}, "dtype_changed", POLICIES),
    (GateLevel.G1, {"nonfinite": ("parameters",)}, "nonfinite_parameters", POLICIES),
    (GateLevel.G2, {"trainable": False}, "seed_not_trainable", POLICIES),
    (GateLevel.G2, {"nonfinite": ("gradients",)}, "nonfinite_gradients", POLICIES),
    (GateLevel.G2, {"improvement": 0.49}, "improvement_insufficient", ["strict"]),
    (GateLevel.G2, {"improvement": None}, "improvement_unmeasured", ["strict"]),
    (GateLevel.G2, {"evaluations_in_stage": 2}, "training_dwell_2_of_3", ["strict"]),
    (GateLevel.G2, {"evaluations_in_stage": 0}, "training_dwell_0_of_", POLICIES),
    (GateLevel.G2, {"activity": 0.0009}, "seed_inactive", ["strict"]),
    (GateLevel.G2, {"activity": None}, "activity_unmeasured", ["strict"]),
    (GateLevel.G3, {"alpha_target": 0.7, "alpha": 0.7}, "alpha_target_not_full", POLICIES),
    (GateLevel.G3, {"alpha": 0.9, "alpha_mode": AlphaMode.UP}, "alpha_ramping", POLICIES),
    (GateLevel.G3, {"nonfinite": ("output",)}, "nonfinite_output", POLICIES),
    (GateLevel.G3, {"evaluations_in_stage": 2}, "blending_dwell_2_of_3", ["strict"]),
    (GateLevel.G5, {"counterfactual": None}, "counterfactual_unmeasured", POLICIES),
    (GateLevel.G5, {"counterfactual": -0.01}, "contribution_negative", POLICIES),
    (GateLevel.G5, {"nonfinite": ("gradients",)}, "nonfinite_gradients", POLICIES),
    (GateLevel.G5, {"counterfactual": 0.99}, "contribution_insufficient", ["strict"]),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("level", list(GateLevel))
def test_good_evidence_passes(policy: str, level: GateLevel) -> None:
    result = QualityGates(policy).evaluate(EDGE[level], GOOD[level])
    assert result.passed, result.checks_failed
    assert result.gate is level and result.edge == EDGE[level] and result.policy == policy
    assert 0.0 <= result.score <= 1.0


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("level", "change", "tag", "failing"), FAILURES)
def test_each_check(policy: str, level: GateLevel, change: dict, tag: str, failing: list[str]) -> None:
    result = QualityGates(policy).evaluate(EDGE[level], attrs.evolve(GOOD[level], **change))
    if policy in failing:
        assert not result.passed
        assert any(c.startswith(tag) for c in result.checks_failed), result.checks_failed
    else:
        assert result.passed, result.checks_failed


def test_permissive_g2_needs_no_activity_or_improvement() -> None:
    ev = GateEvidence(stage=S.TRAINING, evaluations_in_stage=1, improvement=None, activity=None)
    assert QualityGates("permissive").evaluate(EDGE[GateLevel.G2], ev).passed
    assert not QualityGates("strict").evaluate(EDGE[GateLevel.G2], ev).passed


@pytest.mark.parametrize(
    ("field", "level", "change"),
    [
        ("min_training_improvement", GateLevel.G2, {"improvement": 2.0}),
        ("min_training_evaluations", GateLevel.G2, {"evaluations_in_stage": 5}),
        ("min_activity", GateLevel.G2, {"activity": 0.05}),
        ("min_blending_evaluations", GateLevel.G3, {"evaluations_in_stage": 6}),
        ("min_fossilize_contribution", GateLevel.G5, {"counterfactual": 4.0}),
    ],
)
def test_every_threshold_is_configurable(field: str, level: GateLevel, change: dict) -> None:
    value = next(iter(change.values()))
    evidence = attrs.evolve(GOOD[level], **change)
    assert QualityGates("strict", **{field: value}).evaluate(EDGE[level], evidence).passed
    raised = value + (1 if isinstance(value, int) else value)
    assert not QualityGates("strict", **{field: raised}).evaluate(EDGE[level], evidence).passed


def test_permissive_dwell_is_configurable() -> None:
    gates = QualityGates("permissive", permissive_training_evaluations=2)
    assert not gates.evaluate(
        EDGE[GateLevel.G2], attrs.evolve(GOOD[GateLevel.G2], evaluations_in_stage=1)
    ).passed


def test_thresholds_object_and_overrides() -> None:
    gates = QualityGates("strict", thresholds=GateThresholds(min_activity=0.5), min_training_evaluations=7)
    assert gates.thresholds.min_activity == 0.5 and gates.thresholds.min_training_evaluations == 7
    with pytest.raises(LifecycleError, match="unknown gate threshold"):
        QualityGates("strict", min_magic=1)
    with pytest.raises(LifecycleError, match="policy"):
        QualityGates("lenient")
    with pytest.raises(LifecycleError, match="min_training_evaluations"):
        QualityGates("strict", min_training_evaluations=-1)
    with pytest.raises(LifecycleError, match="min_activity"):
        QualityGates("strict", min_activity=float("nan"))
    with pytest.raises(AttributeError):
        gates.policy = "permissive"  # type: ignore[misc]
    assert gates == QualityGates(
        "strict", thresholds=GateThresholds(min_activity=0.5, min_training_evaluations=7)
    )


UNGATED = [e for e in itertools.product(S, S) if e not in EDGE_GATES]


@pytest.mark.parametrize("edge", UNGATED)
def test_edges_without_a_gate_raise(edge: tuple[SeedStage, SeedStage]) -> None:
    with pytest.raises(MissingGateError, match=f"{edge[0].name}->{edge[1].name}"):
        gate_for_edge(edge)
    with pytest.raises(MissingGateError):
        QualityGates("permissive").evaluate(edge, GateEvidence(stage=edge[0]))


def test_gates_are_keyed_by_edge_not_target() -> None:
    # HOLDING->BLENDING is a legal edge, but it is not judged by G2 (the TRAINING->BLENDING gate).
    assert gate_for_edge((S.TRAINING, S.BLENDING)) is GateLevel.G2
    with pytest.raises(MissingGateError):
        gate_for_edge((S.HOLDING, S.BLENDING))


def test_evidence_must_match_the_edge() -> None:
    with pytest.raises(LifecycleError, match="evidence"):
        QualityGates().evaluate((S.TRAINING, S.BLENDING), GOOD[GateLevel.G1])


def test_gate_levels() -> None:
    assert [int(g) for g in GateLevel] == [0, 1, 2, 3, 5]
