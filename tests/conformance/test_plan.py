"""The sweep plan: which dims and option values the kit tries (pure functions)."""

from __future__ import annotations

import pytest

from esper_core.errors import OptionError
from esper_core.options import Option
from esper_core.testing.plan import (
    DEFAULT_DIMS,
    FULL_DIMS,
    FULL_ENV,
    REAL_DIM_LIMIT,
    full_requested,
    invalid_values,
    make_plan,
    option_variants,
)

EXPANSION = Option("expansion", int, 2, "width multiple", minimum=1, maximum=4)
ACT = Option("act", str, "gelu", "activation", choices=("gelu", "tanh", "relu"))
BIAS = Option("bias", bool, False, "bias")
RATE = Option("rate", float, 0.1, "a rate", minimum=0.0, maximum=0.5)
HEADS = Option("n_head", int, 4, "heads")
NAME = Option("label", str, "x", "free text")


def test_default_sweep_has_small_odd_prime_and_a_meta_only_large_dim():
    real = [d for d in DEFAULT_DIMS if d <= REAL_DIM_LIMIT]
    assert any(d % 2 == 0 for d in real)
    assert any(d % 2 == 1 and any(d % k == 0 for k in range(3, d)) for d in real)  # odd composite
    assert any(d > 2 and all(d % k for k in range(2, d)) for d in real)  # prime
    assert any(d > REAL_DIM_LIMIT for d in DEFAULT_DIMS)
    assert set(DEFAULT_DIMS) < set(FULL_DIMS)


def test_variants_change_one_option_at_a_time_and_cover_declared_values():
    variants = option_variants([EXPANSION, ACT, BIAS], {})
    for variant in variants:
        assert len(variant) == 1
    assert {v["act"] for v in variants if "act" in v} == {"gelu", "tanh", "relu"} - {"gelu"}
    assert [v["bias"] for v in variants if "bias" in v] == [True]
    expansions = {v["expansion"] for v in variants if "expansion" in v}
    assert {1, 4} <= expansions and expansions <= {1, 2, 3, 4}
    assert 2 not in expansions  # the base value is not a variant


def test_variants_start_from_the_given_base():
    variants = option_variants([EXPANSION, BIAS], {"expansion": 3, "bias": True})
    assert all(v.keys() == {"expansion", "bias"} for v in variants)
    assert {"expansion": 3, "bias": False} in variants
    assert {"expansion": 3, "bias": True} not in variants


def test_variant_values_are_all_accepted_by_their_option():
    for option in (EXPANSION, ACT, BIAS, RATE, HEADS, NAME):
        for variant in option_variants([option], {}):
            assert option.validate(variant[option.name]) == variant[option.name]


def test_unbounded_int_and_free_string_still_get_sensible_variants():
    assert {v["n_head"] for v in option_variants([HEADS], {})} == {5, 8}
    assert option_variants([NAME], {}) == []


@pytest.mark.parametrize("option", [EXPANSION, ACT, BIAS, RATE, HEADS, NAME], ids=lambda o: o.name)
def test_invalid_values_are_rejected_by_the_option(option):
    values = invalid_values(option)
    assert values
    for value in values:
        with pytest.raises(OptionError):
            option.validate(value)


def test_out_of_range_values_are_probed():
    assert {0, 5} <= set(invalid_values(EXPANSION))
    assert "__not_a_choice__" in invalid_values(ACT)


def test_plan_uses_explicit_dims_and_splits_real_from_meta():
    plan = make_plan([EXPANSION], dims=[4, 4, 300, 7], full=False)
    assert plan.dims == (4, 300, 7)
    assert plan.real_dims == (4, 7)
    assert plan.meta_dims == (300,)
    assert plan.option_sets()[0] == {}
    assert plan.compile_backend == "aot_eager"


def test_full_mode_from_the_environment(monkeypatch):
    monkeypatch.setenv(FULL_ENV, "1")
    assert full_requested()
    plan = make_plan([])
    assert plan.dims == FULL_DIMS and plan.full and plan.compile_backend == "inductor"
    monkeypatch.setenv(FULL_ENV, "0")
    assert not full_requested()
    assert make_plan([]).dims == DEFAULT_DIMS
    assert make_plan([], full=True).dims == FULL_DIMS  # an explicit argument wins


def test_full_requested_reads_a_given_mapping():
    assert full_requested({FULL_ENV: "yes"})
    assert not full_requested({})
