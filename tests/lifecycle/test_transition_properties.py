"""The pure lifecycle: thousands of random command sequences, no module built, no torch.

``esper_core.transition.transition`` is driven directly with random commands, random
evidence and random gate verdicts. Whatever happens, every state reached is a valid value
that the codec writes and reads back exactly, a rejected or refused command changes nothing,
every stage change is a legal edge reported by exactly one ``StageChanged`` event, and the
whole run is a pure function of its inputs.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from esper_core import stages
from esper_core.alpha import AlphaCurve, BlendAlgorithm
from esper_core.codec import decode_envelope, encode_envelope, state_checksum
from esper_core.commands import (
    Advance,
    CaptureActivity,
    Germinate,
    ObserveOutput,
    Prune,
    RecordAccuracy,
    RecordCounterfactual,
    SchedulePrune,
    SetAlphaTarget,
    StepEpoch,
)
from esper_core.errors import LifecycleError
from esper_core.evidence import ActivityEvidence, Evidence, Probe
from esper_core.gates import GateLevel, QualityGates
from esper_core.slot_state import SlotConfig, SlotState
from esper_core.stages import SeedStage
from esper_core.telemetry import GateEvaluated, SeedFossilized, SeedGerminated, SeedPruned, StageChanged
from esper_core.transition import transition

_TEXT = st.sampled_from(["policy", "governor", "user", "a reason with spaces"])
_SOME_STAGE = st.sampled_from([s for s in SeedStage if s.value not in (0,)])

commands = st.one_of(
    st.builds(
        Germinate,
        blueprint=st.sampled_from(["conv", "lora", "norm"]),
        options=st.dictionaries(st.sampled_from(["rank", "hidden"]), st.integers(1, 8), max_size=2),
        seed_id=st.none() | st.just("named"),
        algorithm=st.sampled_from(BlendAlgorithm),
        ramp_epochs=st.integers(1, 4),
        curve=st.sampled_from(AlphaCurve),
        alpha_target=st.sampled_from([1.0, 0.5, 1e-6]),
    ),
    st.builds(Advance, target=st.none() | _SOME_STAGE),
    st.builds(Prune, reason=_TEXT, initiator=_TEXT),
    st.builds(
        SchedulePrune,
        epochs=st.integers(0, 3),
        curve=st.sampled_from(AlphaCurve),
        reason=_TEXT,
        initiator=_TEXT,
    ),
    st.builds(
        SetAlphaTarget,
        target=st.sampled_from([1.0, 0.5, 0.25]),
        epochs=st.integers(0, 3),
        algorithm=st.none() | st.sampled_from(BlendAlgorithm),
    ),
    st.just(StepEpoch()),
    st.just(StepEpoch()),
    st.builds(RecordAccuracy, accuracy=st.floats(0.0, 100.0)),
    st.builds(RecordCounterfactual, contribution=st.floats(-5.0, 5.0)),
    st.just(CaptureActivity()),
    st.builds(ObserveOutput, requires_grad=st.booleans()),
)

evidence = st.builds(
    Evidence,
    trainable_params=st.booleans(),
    param_count=st.integers(0, 1000),
    probe=st.builds(
        Probe, shape_preserved=st.booleans(), dtype_preserved=st.booleans(), input_preserved=st.booleans()
    )
    | st.just(Probe(shape_preserved=True, dtype_preserved=True)),
    activity=st.none()
    | st.builds(
        ActivityEvidence,
        value=st.none() | st.floats(0.0, 2.0),
        nonfinite_parameters=st.booleans(),
        nonfinite_gradients=st.booleans(),
        nonfinite_output=st.booleans(),
    ),
)

configs = st.builds(
    SlotConfig,
    slot_id=st.just("r0c0"),
    topology=st.just("cnn"),
    dim=st.just(8),
    gates=st.sampled_from([QualityGates("permissive"), QualityGates("strict", min_training_evaluations=1)]),
    embargo_epochs=st.integers(1, 3),
    auto_advance=st.sets(st.sampled_from([GateLevel.G1, GateLevel.G2, GateLevel.G3])),
)

steps = st.lists(st.tuples(commands, evidence, st.none() | st.booleans()), max_size=40)


def run(config: SlotConfig, plan: list) -> list:
    """Apply ``plan``; return (state, outcome-or-error) per step, checking the invariants on the way."""
    state = SlotState()
    trace = []
    for command, ev, verdict in plan:
        decide = None if verdict is None else (lambda _result, v=verdict: v)
        try:
            outcome = transition(state, config, command, ev, decide)
        except LifecycleError as exc:
            trace.append((state, str(exc)))
            continue  # a rejected command changed nothing: ``state`` is still the same value
        check_step(config, command, state, outcome)
        state = outcome.state
        trace.append((state, outcome))
    return trace


def check_step(config: SlotConfig, command: object, before: SlotState, outcome) -> None:
    after = outcome.state
    changes = [e for e in outcome.events if isinstance(e, StageChanged)]
    born = [e for e in outcome.events if isinstance(e, SeedGerminated)]
    # A germination (DORMANT -> GERMINATED) is reported by SeedGerminated; every other stage
    # change by exactly one StageChanged.
    path = [before.stage, *([SeedStage.GERMINATED] if born else [])]
    for event in changes:
        assert event.from_stage is path[-1], (path, event)
        path.append(event.to_stage)
    assert path[-1] is after.stage, (path, after.stage)
    for a, b in itertools.pairwise(path):
        assert stages.is_legal_transition(a, b), (a, b)
    refused = outcome.result is not None and not outcome.result.passed
    if refused and isinstance(command, Advance | Germinate):
        assert after is before  # a refused gate changes nothing
        assert [type(e) for e in outcome.events] == [GateEvaluated]
    assert (after.seed is None) == (after.stage is SeedStage.DORMANT)
    assert 0.0 <= after.alpha <= 1.0
    assert after.germinations == before.germinations + len(born)
    if any(isinstance(e, SeedPruned) for e in outcome.events):
        assert after.stage is SeedStage.PRUNED
    if any(isinstance(e, SeedFossilized) for e in outcome.events):
        assert after.stage is SeedStage.FOSSILIZED
    # The codec writes every state and reads it back exactly; the checksum is of the same value.
    decoded = decode_envelope(encode_envelope(config, after)).state
    assert decoded == after and state_checksum(decoded) == state_checksum(after)


@settings(max_examples=1500, deadline=None)
@given(configs, steps)
def test_random_sequences_keep_every_invariant(config: SlotConfig, plan: list) -> None:
    trace = run(config, plan)
    assert run(config, plan) == trace  # pure: the same inputs give the same states and messages


@settings(max_examples=300, deadline=None)
@given(configs, st.integers(0, 3))
def test_the_cooldown_always_ends_dormant(config: SlotConfig, extra: int) -> None:
    state = transition(
        SlotState(),
        config,
        Germinate(blueprint="conv"),
        Evidence(probe=Probe(shape_preserved=True, dtype_preserved=True)),
    ).state
    state = transition(state, config, Prune(reason="r", initiator="i")).state
    for _ in range(config.embargo_epochs + 2):
        assert state.stage in stages.FAILURE
        state = transition(state, config, StepEpoch()).state
    assert state.stage is SeedStage.DORMANT and state.seed is None and state.germinations == 1
    for _ in range(extra):
        state = transition(state, config, StepEpoch()).state
    assert state.stage is SeedStage.DORMANT


def test_the_lifecycle_core_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "import esper_core.transition, esper_core.codec, esper_core.commands, esper_core.slot_state\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
