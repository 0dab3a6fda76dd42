"""Stage values, the transition table and the predicates."""

from __future__ import annotations

import itertools

import pytest

from esper_core.errors import LifecycleError
from esper_core.stages import (
    RESERVED_STAGE_VALUES,
    TRANSITIONS,
    SeedStage,
    default_successor,
    has_seed_module,
    is_failure,
    is_legal_transition,
    is_terminal,
    runs_seed,
    stage_from_value,
    stage_index,
)

S = SeedStage

EXPECTED_VALUES = {
    "UNKNOWN": 0, "DORMANT": 1, "GERMINATED": 2, "TRAINING": 3, "BLENDING": 4,
    "HOLDING": 6, "FOSSILIZED": 7, "PRUNED": 8, "EMBARGOED": 9, "RESETTING": 10,
}  # fmt: skip

LEGAL = {
    (S.UNKNOWN, S.DORMANT),
    (S.DORMANT, S.GERMINATED),
    (S.GERMINATED, S.TRAINING), (S.GERMINATED, S.PRUNED),
    (S.TRAINING, S.BLENDING), (S.TRAINING, S.PRUNED),
    (S.BLENDING, S.HOLDING), (S.BLENDING, S.PRUNED),
    (S.HOLDING, S.FOSSILIZED), (S.HOLDING, S.BLENDING), (S.HOLDING, S.PRUNED),
    (S.PRUNED, S.EMBARGOED), (S.EMBARGOED, S.RESETTING), (S.RESETTING, S.DORMANT),
}  # fmt: skip


def test_numeric_values_are_the_wire_format() -> None:
    assert {s.name: s.value for s in SeedStage} == EXPECTED_VALUES


@pytest.mark.parametrize("value", [*sorted(RESERVED_STAGE_VALUES), 11, -1])
def test_reserved_and_unknown_values_are_rejected(value: int) -> None:
    with pytest.raises(LifecycleError, match=str(value)):
        stage_from_value(value)


@pytest.mark.parametrize("value", [True, 2.0, "2", None])
def test_non_int_values_are_rejected(value: object) -> None:
    with pytest.raises(LifecycleError):
        stage_from_value(value)


def test_every_valid_value_round_trips() -> None:
    for stage in SeedStage:
        assert stage_from_value(int(stage.value)) is stage


@pytest.mark.parametrize(("source", "target"), list(itertools.product(SeedStage, SeedStage)))
def test_every_pair_against_the_table(source: SeedStage, target: SeedStage) -> None:
    assert is_legal_transition(source, target) == ((source, target) in LEGAL)


def test_preference_order_of_successors() -> None:
    assert TRANSITIONS[S.HOLDING] == (S.FOSSILIZED, S.BLENDING, S.PRUNED)
    assert default_successor(S.GERMINATED) is S.TRAINING
    assert default_successor(S.TRAINING) is S.BLENDING
    assert default_successor(S.BLENDING) is S.HOLDING
    assert default_successor(S.HOLDING) is S.FOSSILIZED
    assert default_successor(S.FOSSILIZED) is None
    assert default_successor(S.PRUNED) is None


def test_predicates() -> None:
    assert [s for s in S if is_terminal(s)] == [S.FOSSILIZED]
    assert {s for s in S if is_failure(s)} == {S.PRUNED, S.EMBARGOED, S.RESETTING}
    assert {s for s in S if runs_seed(s)} == {S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED}
    assert {s for s in S if has_seed_module(s)} == {
        S.GERMINATED,
        S.TRAINING,
        S.BLENDING,
        S.HOLDING,
        S.FOSSILIZED,
    }


def test_stage_index_is_contiguous() -> None:
    assert sorted(stage_index(s) for s in S) == list(range(10))
    with pytest.raises(LifecycleError):
        stage_index(5)  # type: ignore[arg-type]


def test_a_stage_may_be_named(lc) -> None:
    """``slot.advance("TRAINING")`` (any case) is ``slot.advance(SeedStage.TRAINING)``; an unknown
    name lists the stages and changes nothing."""
    from esper_core.errors import LifecycleError
    from esper_core.stages import SeedStage

    slot = lc.drive(lc.make_slot(), SeedStage.GERMINATED)
    with pytest.raises(LifecycleError, match=r"unknown stage name 'TRAIN'; accepted: .*3=TRAINING"):
        slot.advance("TRAIN")
    assert slot.stage is SeedStage.GERMINATED
    assert slot.advance("training").passed and slot.stage is SeedStage.TRAINING
