"""The fuzzing harness can fail: each kind of broken behaviour is counted as a failure."""

from __future__ import annotations

import math

import torch

from esper_core.errors import LifecycleError

from .fuzzing import Tally, judge, same


def _run(call, check=lambda _result: None, state=None) -> Tally:
    state = {"value": torch.zeros(2)} if state is None else state
    tally = Tally("self-test")
    judge(tally, "call", lambda: {k: v.clone() for k, v in state.items()}, lambda: call(state), check)
    return tally


def test_a_clean_rejection_and_a_clean_acceptance_pass() -> None:
    def reject(_state):
        raise LifecycleError("bad value")

    assert _run(reject).rejected == 1 and _run(lambda s: None).accepted == 1


def test_each_broken_behaviour_is_a_failure() -> None:
    def changed_then_rejected(state):
        state["value"] += 1
        raise LifecycleError("bad value")

    def raw_error(_state):
        raise TypeError("not ours")

    def moved_rng(_state):
        torch.rand(1)
        raise LifecycleError("bad value")

    def flooding(_state):
        raise LifecycleError("x" * 10_000)

    def accepted_but_broken(_state):
        return math.nan

    cases = [changed_then_rejected, raw_error, moved_rng, flooding]
    for call in cases:
        assert _run(call).failed == 1, call.__name__
    assert _run(accepted_but_broken, check=lambda r: (_ for _ in ()).throw(AssertionError(r))).failed == 1


def test_same_compares_tensors_bit_for_bit_with_nan() -> None:
    nan = torch.tensor([math.nan, 1.0])
    assert same({"a": nan}, {"a": nan.clone()})
    assert not same({"a": nan}, {"a": torch.tensor([math.nan, 2.0])})
    assert not same(torch.zeros(2), torch.zeros(2, dtype=torch.float64))
