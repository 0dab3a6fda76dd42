"""Refused candidates under two real ranks (gloo on 127.0.0.1): the same refusals, the same
germinations, identical controller memories on both ranks (scenarios in
``dist_scenarios_refusals.py``)."""

from __future__ import annotations

import pytest
from dist_ranks import run_ranks

pytestmark = [pytest.mark.timeout(240), pytest.mark.multiprocess]


def test_every_rank_refuses_the_same_candidates_and_remembers_the_same(tmp_path) -> None:
    zero, one = (r["refusals_agree"] for r in run_ranks("dist_scenarios_refusals", tmp_path, deadline=200))
    for rank, facts in enumerate((zero, one)):
        assert facts["ok"], f"rank {rank} failed: {facts.get('error')}\n{facts.get('tb', '')}"
    assert zero["state"] == one["state"]  # history, decisions, refusals, tried: all identical
    refusals = zero["state"]["refusals"]
    assert {r["blueprint"] for r in refusals} == {"dist_inplace", "dist_raises"}
    reasons = {r["blueprint"]: r["reason"] for r in refusals}
    assert "input_modified_in_place" in reasons["dist_inplace"]
    assert reasons["dist_raises"].startswith("BlueprintError:") and "cannot build" in reasons["dist_raises"]
    # rank 0's G0 verdict passed the blueprint that writes only on rank 1: germinated on both
    assert zero["blueprints"] == one["blueprints"] and "dist_rank1_writes" in zero["blueprints"].values()
    assert zero["stages"] == one["stages"]
    assert zero["rng"] == one["rng"]  # the failed builds left every rank's RNG alike
