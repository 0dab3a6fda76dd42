"""The checks of each quality gate, as pure functions of evidence, thresholds and policy.

Each ``judge_g*`` function adds its pass/fail tags to a :class:`Checks` collector and returns
``(score, title, detail)``: a score (clipped to [0, 1] by the caller), the gate's title, and
what was measured (shown when the gate passes). :meth:`esper_core.gates.QualityGates.evaluate`
picks the function for an edge's gate and builds the :class:`~esper_core.gates.GateResult`.
``policy`` is ``"strict"`` or ``"permissive"`` (checked by ``QualityGates``).
"""

from __future__ import annotations

from collections.abc import Callable

from esper_core._gate_inputs import GateEvidence, GateThresholds
from esper_core.alpha import AlphaMode
from esper_core.stages import SeedStage

__all__ = ["Checks", "Judge", "judge_g0", "judge_g1", "judge_g2", "judge_g3", "judge_g5"]


class Checks:
    """Collects pass/fail tags for one gate evaluation, and for each failure a sentence that
    names the measured value and the threshold with their units (the result's message)."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.reasons: list[str] = []

    def add(self, ok: bool, good: str, bad: str, why: str) -> None:
        (self.passed if ok else self.failed).append(good if ok else bad)
        if not ok:
            self.reasons.append(why)

    def message(self, title: str, detail: str = "") -> str:
        if self.failed:
            return f"{title} failed: {'; '.join(self.reasons)}"
        return f"{title} passed{': ' + detail if detail else ''}"


#: A gate's checks: ``(evidence, thresholds, policy, checks) -> (score, title, detail)``.
Judge = Callable[[GateEvidence, GateThresholds, str, Checks], tuple[float, str, str]]


def judge_g0(ev: GateEvidence, t: GateThresholds, policy: str, c: Checks) -> tuple[float, str, str]:
    """G0 (DORMANT -> GERMINATED): the seed has an id and a blueprint, keeps its input's
    shape, dtype and values, and its parameters and probe output are finite. The same under
    both policies."""
    c.add(bool(ev.seed_id), "seed_id_present", "seed_id_missing", "the seed has no id")
    c.add(bool(ev.blueprint), "blueprint_present", "blueprint_missing", "no blueprint was named")
    c.add(
        ev.shape_preserved,
        "shape_preserved",
        "shape_changed",
        "the seed's output shape differs from its input's",
    )
    c.add(
        ev.dtype_preserved,
        "dtype_preserved",
        "dtype_changed",
        "the seed's output dtype differs from its input's",
    )
    c.add(
        ev.input_preserved,
        "input_preserved",
        "input_modified_in_place",
        "the seed wrote into its input tensor (it would change the host's features)",
    )
    _finite(ev, c)  # a seed non-finite from the start can never pass a later gate
    return (0.0 if c.failed else 1.0), "G0 germination sanity", ""


def _finite(ev: GateEvidence, c: Checks) -> None:
    """Health: nothing non-finite in the seed's output, gradients or parameters."""
    found = ", ".join(ev.nonfinite)
    c.add(
        not ev.nonfinite,
        "finite",
        "nonfinite_" + "_".join(ev.nonfinite),
        f"the seed is unhealthy ({found})",
    )


def judge_g1(ev: GateEvidence, t: GateThresholds, policy: str, c: Checks) -> tuple[float, str, str]:
    """G1 (GERMINATED -> TRAINING): the seed is germinated and healthy. The same under both policies."""
    c.add(ev.stage is SeedStage.GERMINATED, "germinated", "not_germinated", f"stage is {ev.stage.name}")
    _finite(ev, c)
    return (0.0 if c.failed else 1.0), "G1 training readiness", ""


def judge_g2(ev: GateEvidence, t: GateThresholds, policy: str, c: Checks) -> tuple[float, str, str]:
    """G2 (TRAINING -> BLENDING): the seed can learn and is healthy; strict also asks for
    accuracy improvement, dwell and activity, permissive only for its shorter dwell. Score:
    improvement / 5 pp."""
    imp = ev.improvement
    c.add(
        ev.trainable,
        "seed_trainable",
        "seed_not_trainable",
        "the seed cannot learn (no parameter requires grad, or its output does not)",
    )
    _finite(ev, c)
    if policy == "strict":
        if imp is None:
            c.add(
                False, "", "improvement_unmeasured",
                "no accuracy recorded since TRAINING began (record_accuracy, in percentage points 0-100)",
            )  # fmt: skip
        else:
            c.add(
                imp >= t.min_training_improvement,
                f"improvement_{imp:.2f}pp",
                f"improvement_insufficient_{imp:.2f}pp_below_{t.min_training_improvement:.2f}pp",
                f"accuracy improved {imp:.2f} pp since TRAINING began, below min_training_improvement "
                f"{t.min_training_improvement:.2f} pp (accuracies are percentage points, 0-100: 93.1, not 0.931)",
            )
        c.add(
            ev.evaluations_in_stage >= t.min_training_evaluations,
            "training_dwell_met",
            f"training_dwell_{ev.evaluations_in_stage}_of_{t.min_training_evaluations}",
            f"{ev.evaluations_in_stage} evaluations recorded in TRAINING, below min_training_evaluations "
            f"{t.min_training_evaluations}",
        )
        if ev.activity is None:
            c.add(
                False, "", "activity_unmeasured",
                "seed activity not measured yet (it is taken by record_accuracy while the seed runs)",
            )  # fmt: skip
        else:
            c.add(
                ev.activity >= t.min_activity,
                f"seed_active_{ev.activity:.2e}",
                f"seed_inactive_{ev.activity:.2e}_below_{t.min_activity:.2e}",
                f"seed activity {ev.activity:.2e} (relative parameter change per epoch), below min_activity "
                f"{t.min_activity:.2e}"
                + (
                    ": the seed's parameters did not change at all; is an optimizer stepping them "
                    "(OptimizerBinding adds each seed to your optimizer)?"
                    if ev.activity == 0.0
                    else ""
                ),
            )
    else:
        c.add(
            ev.evaluations_in_stage >= t.permissive_training_evaluations,
            "training_dwell_met",
            f"training_dwell_{ev.evaluations_in_stage}_of_{t.permissive_training_evaluations}",
            f"{ev.evaluations_in_stage} evaluations recorded in TRAINING, below permissive_training_evaluations "
            f"{t.permissive_training_evaluations}",
        )
    score = 0.0 if imp is None or imp <= 0 else min(1.0, imp / 5.0)
    measured = "improvement unmeasured" if imp is None else f"improvement {imp:.2f} pp"
    return score, f"G2 blending readiness ({policy})", measured


def judge_g3(ev: GateEvidence, t: GateThresholds, policy: str, c: Checks) -> tuple[float, str, str]:
    """G3 (BLENDING -> HOLDING): alpha reached a full target and the seed is healthy; strict
    also asks for dwell in BLENDING. Score: alpha."""
    c.add(
        ev.alpha_target >= 1.0 - t.alpha_tolerance,
        "alpha_target_full",
        f"alpha_target_not_full_{ev.alpha_target:.4f}",
        f"alpha target {ev.alpha_target:.4f}, below full alpha (1 - alpha_tolerance {t.alpha_tolerance:g})",
    )
    c.add(
        ev.alpha_mode is AlphaMode.HOLD and abs(ev.alpha - ev.alpha_target) <= t.alpha_tolerance,
        "alpha_target_reached",
        f"alpha_ramping_{ev.alpha:.4f}_to_{ev.alpha_target:.4f}_{ev.alpha_mode.name}",
        f"alpha {ev.alpha:.4f} has not reached its target {ev.alpha_target:.4f} (schedule {ev.alpha_mode.name})",
    )
    _finite(ev, c)
    if policy == "strict":
        c.add(
            ev.evaluations_in_stage >= t.min_blending_evaluations,
            "blending_dwell_met",
            f"blending_dwell_{ev.evaluations_in_stage}_of_{t.min_blending_evaluations}",
            f"{ev.evaluations_in_stage} evaluations recorded in BLENDING, below min_blending_evaluations "
            f"{t.min_blending_evaluations}",
        )
    return ev.alpha, f"G3 holding readiness ({policy})", f"alpha {ev.alpha:.4f}"


def judge_g5(ev: GateEvidence, t: GateThresholds, policy: str, c: Checks) -> tuple[float, str, str]:
    """G5 (HOLDING -> FOSSILIZED): a measured, non-negative counterfactual contribution from a
    healthy seed; strict also asks for ``min_fossilize_contribution``. Score: contribution / 10 pp."""
    cf = ev.counterfactual
    title = f"G5 fossilization readiness ({policy})"
    if cf is None:
        c.add(
            False, "", "counterfactual_unmeasured",
            "no counterfactual contribution measured (record_counterfactual, in percentage points)",
        )  # fmt: skip
        return 0.0, title, ""
    _finite(ev, c)
    c.add(
        cf >= 0.0,
        f"contribution_non_negative_{cf:.2f}pp",
        f"contribution_negative_{cf:.2f}pp",
        f"contribution {cf:.2f} pp is negative (the model is better without the seed)",
    )
    if policy == "strict":
        c.add(
            cf >= t.min_fossilize_contribution,
            f"contribution_sufficient_{cf:.2f}pp",
            f"contribution_insufficient_{cf:.2f}pp_below_{t.min_fossilize_contribution:.2f}pp",
            f"contribution {cf:.2f} pp, below min_fossilize_contribution {t.min_fossilize_contribution:.2f} pp",
        )
    score = 0.0 if cf <= 0 else min(1.0, cf / 10.0)
    return score, title, f"contribution {cf:.2f} pp"
