"""The measurements a seed records (accuracy, activity, contribution, its output), as pure functions."""

from __future__ import annotations

import attrs

from esper_core import stages as st
from esper_core._steps import require_live, warn_once
from esper_core.commands import (
    CaptureActivity,
    ObserveOutput,
    RecordAccuracy,
    RecordCounterfactual,
)
from esper_core.errors import LifecycleError
from esper_core.evidence import ActivityEvidence, Decide, Evidence, Outcome
from esper_core.slot_state import SeedState, SlotConfig, SlotState
from esper_core.telemetry import (
    SeedEvent,
)


def record_accuracy(
    state: SlotState, config: SlotConfig, cmd: RecordAccuracy, ev: Evidence, decide: Decide
) -> Outcome:
    seed = require_live(state, config, "record_accuracy")
    seed = attrs.evolve(seed, metrics=seed.metrics.record_accuracy(cmd.accuracy))
    events: tuple[SeedEvent, ...] = ()
    if 0.0 < seed.metrics.current_accuracy <= 1.0:  # type: ignore[operator]
        seed, events = warn_once(
            config,
            seed,
            "accuracy_looks_like_a_fraction",
            f"seed {seed.seed_id!r}: accuracy {cmd.accuracy!r} looks like a fraction; record_accuracy "
            "takes percentage points (0-100), e.g. 93.1 for 93.1 %, and the gates' thresholds are in "
            "percentage points too (if it really is at most 1 %, ignore this)",
        )
    if state.stage in st.RUNS_SEED:
        seed, more = capture(config, seed, ev.activity)
        events = (*events, *more)
    return Outcome(attrs.evolve(state, seed=seed), events)


def capture_activity(
    state: SlotState, config: SlotConfig, cmd: CaptureActivity, ev: Evidence, decide: Decide
) -> Outcome:
    seed = require_live(state, config, "capture_activity")
    seed, events = capture(config, seed, ev.activity)
    return Outcome(attrs.evolve(state, seed=seed), events)


def capture(
    config: SlotConfig, seed: SeedState, reading: ActivityEvidence | None
) -> tuple[SeedState, tuple[SeedEvent, ...]]:
    """Fold an activity reading in; any non-finite finding marks the seed unhealthy for good."""
    if reading is None:
        return seed, ()
    found = {
        "nonfinite_parameters": reading.nonfinite_parameters,
        "nonfinite_gradients": reading.nonfinite_gradients,
        "nonfinite_output": reading.nonfinite_output,
    }
    issues = list(seed.health_issues) + [
        i for i, present in found.items() if present and i not in seed.health_issues
    ]
    activity = (
        seed.activity if reading.value is None else seed.activity.update(reading.value, config.activity_decay)
    )
    seed = attrs.evolve(seed, activity=activity)
    if tuple(issues) == seed.health_issues:
        return seed, ()
    seed = attrs.evolve(seed, health_issues=tuple(issues))
    return warn_once(config, seed, "unhealthy", f"seed {seed.seed_id!r} is unhealthy: {', '.join(issues)}")


def record_counterfactual(
    state: SlotState, config: SlotConfig, cmd: RecordCounterfactual, ev: Evidence, decide: Decide
) -> Outcome:
    seed = require_live(state, config, "record_counterfactual")
    if state.stage not in st.BLENDED:
        raise LifecycleError(
            f"slot {config.slot_id!r}: record_counterfactual needs the seed blended into the output "
            f"(BLENDING, HOLDING or FOSSILIZED); stage is {state.stage.name}, where the seed's output is "
            "not in the model, so a leave-one-out contribution would measure nothing"
        )
    return Outcome(
        attrs.evolve(
            state, seed=attrs.evolve(seed, metrics=seed.metrics.record_counterfactual(cmd.contribution))
        )
    )


def observe_output(
    state: SlotState, config: SlotConfig, cmd: ObserveOutput, ev: Evidence, decide: Decide
) -> Outcome:
    seed = attrs.evolve(require_live(state, config, "observe_output"), output_requires_grad=cmd.requires_grad)
    events: tuple[SeedEvent, ...] = ()
    if not cmd.requires_grad:
        seed, events = warn_once(
            config,
            seed,
            "seed_output_not_trainable",
            f"seed {seed.seed_id!r} produced an output that does not require grad while grad mode is on; "
            "it cannot learn and G2 will fail",
        )
    return Outcome(attrs.evolve(state, seed=seed), events)
