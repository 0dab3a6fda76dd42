"""The heuristic controller under two real ranks (gloo on 127.0.0.1): reduced evaluations, one
set of decisions, identical models; per-rank evaluations stop both ranks with a clear error."""

from __future__ import annotations

import pytest
from dist_ranks import run_ranks

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_ranks("dist_scenarios_control", tmp_path_factory.mktemp("control"), deadline=200)


def _scenario(ranks: list[dict], name: str) -> tuple[dict, dict]:
    zero, one = ranks[0][name], ranks[1][name]
    for rank, facts in enumerate((zero, one)):
        assert facts["ok"], f"rank {rank} {name} failed: {facts.get('error')}\n{facts.get('tb', '')}"
    return zero, one


def test_reduced_evaluations_make_every_rank_decide_the_same(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "controller_agrees")
    for a, b in zip(zero["seen"], one["seen"], strict=True):
        assert a["local"] != b["local"]  # each rank measured its own shard ...
        assert a["shared"] == b["shared"]  # ... and both decide from the same numbers:
        (score0, c0), (score1, c1) = a["local"], b["local"]
        assert a["shared"][0] == pytest.approx((390 * score0 + 10 * score1) / 400)  # sample-weighted
        assert a["shared"][2] == 400
        for slot_id in c0:
            assert a["shared"][1][slot_id] == pytest.approx((390 * c0[slot_id] + 10 * c1[slot_id]) / 400)
    assert zero["decisions"] == one["decisions"]
    assert [d[2] for d in zero["decisions"]][:3] == ["germinate", "advance", "advance"]
    assert zero["stages"] == one["stages"] and zero["seed_values"] == one["seed_values"]
    assert zero["overruled"] == one["overruled"] == 0


def test_per_rank_evaluations_stop_both_ranks_naming_each_call(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "controller_disagrees")
    for facts in (zero, one):
        error = facts["error"]
        assert error is not None and error["type"] == "DistributedError"
        assert (
            "rank 0 called germinate" in error["message"] and "rank 1 called step_epoch" in error["message"]
        )
    assert zero["error"]["epoch"] == one["error"]["epoch"]
    assert zero["stages"] == one["stages"]  # nothing was applied on either rank
    assert set(zero["stages"].values()) == {"DORMANT"}


def test_reduce_evaluation_refuses_different_slots_on_every_rank(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "reduce_mismatch")
    for facts in (zero, one):
        assert facts["error"]["type"] == "DistributedError"
        assert "different slots" in facts["error"]["message"]
