"""Two real processes (gloo on 127.0.0.1) driving the lifecycle through rank 0.

Process start-up dominates the cost, so every scenario runs in ONE group of two ranks
(module-scoped fixture), each on its own subgroup; these tests only inspect the facts
the ranks reported. The harness kills the ranks at a deadline, so a deadlock fails here
instead of hanging the suite.
"""

from __future__ import annotations

import pytest
from dist_ranks import run_ranks

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_ranks(
        "dist_scenarios_standin,dist_scenarios_real", tmp_path_factory.mktemp("ranks"), deadline=200
    )


def _scenario(ranks: list[dict], name: str) -> tuple[dict, dict]:
    zero, one = ranks[0][name], ranks[1][name]
    for rank, facts in enumerate((zero, one)):
        assert facts["ok"], f"rank {rank} {name} failed: {facts.get('error')}\n{facts.get('tb', '')}"
    return zero, one


def test_every_rank_applies_rank_zeros_arguments(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "commands")
    assert zero["calls"] == one["calls"]
    applied = zero["calls"][1]
    assert zero["calls"][0] == []  # rank 1 named slot s0; rank 0 chose s1
    assert applied[0].startswith("('germinate', 'dist_probe', {'act': 'relu', 'bias': False, 'gain': 0.25")
    assert "'seed-a'" in applied[0] and "GATE" in applied[0] and "SIGMOID" in applied[0]
    assert applied[1] == "('set_alpha_target', 0.30000000000000004, 4, <AlphaCurve.COSINE: 'cosine'>)"
    assert applied[3] == "('prune', 'rent too high', 'governor')"
    # The seed was built under an RNG forked identically on both ranks ...
    assert zero["params"] == one["params"] and len(zero["params"]) > 0
    # ... without touching each rank's own global RNG stream (seeded per rank).
    assert zero["rng_after"] != one["rng_after"]


@pytest.mark.parametrize(
    ("name", "expected"), [("real_gate_rank1_passes", False), ("real_gate_rank0_passes", True)]
)
def test_gate_verdicts_follow_rank_zero(ranks: list[dict], name: str, expected: bool) -> None:
    zero, one = _scenario(ranks, name)
    # The ranks' own evidence disagrees ...
    assert zero["local"] == {"a": expected, "b": expected}
    assert one["local"] == {"a": not expected, "b": not expected}
    # ... and both commit rank 0's verdict, for advance() and for step_epoch's auto-advance.
    stage = "BLENDING" if expected else "TRAINING"
    assert zero["stages"] == one["stages"] == {"a": stage, "b": stage}
    assert zero["explicit_passed"] is one["explicit_passed"] is expected
    assert (zero["overruled"], one["overruled"]) == (0, 2)


def test_real_slots_stay_identical_through_every_mutation(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "real_all_ops")
    for key in ("stages", "gate_params", "seed_params", "checksums", "events", "stage_holding"):
        assert zero[key] == one[key], key
    assert zero["stage_holding"] == "HOLDING"
    assert zero["gate_params"], "GATE algorithm must have created a gate module"
    assert zero["stages"][0] in {"PRUNED", "EMBARGOED"} and zero["stages"][1] == "EMBARGOED"
    assert any(e.startswith("a:") and "Pruned" in e for e in zero["events"])


def test_direct_slot_mutation_on_one_rank_is_reported_on_both(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "real_bypass")
    for facts in (zero, one):
        assert (
            facts["error"].startswith("DistributedError") and "slot 'a' was changed outside" in facts["error"]
        )
    assert "this rank: nothing" in zero["error"]
    assert "SeedPruned" in one["error"] and "stage" in one["error"]


def test_exchange_gives_every_rank_all_headers_and_rank_zeros_record(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "channel_exchange")
    assert zero["rows"] == one["rows"] == [[0, 3, 1, 0, 10], [1, 3, 1, 1, 11]]
    assert zero["record"] == one["record"] == "rank-0-!"
    for facts in (zero, one):  # both ranks raise the same error, and the channel stays usable
        assert facts["mismatch"]["type"] == "DistributedError"
        assert "rank 0 called 3 (call #2); rank 1 called 4 (call #2)" in facts["mismatch"]["message"]
        assert facts["gates"]["type"] == "DistributedError"
        assert "rank 0: slot 's0' -> BLENDING; rank 1: slot 's1' -> BLENDING" in facts["gates"]["message"]
    assert zero["bare"] == one["bare"] == "12345678"
    assert zero["long"] == one["long"] == "x" * 5000 + "-end"
    assert zero["verdict"] is one["verdict"] is False  # rank 0 said False; rank 1's True is overruled


def test_lone_mutation_is_detected_on_both_ranks(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "lone_mismatch")
    for facts in (zero, one):
        assert facts["error"]["type"] == "DistributedError"
        assert "rank 0 called step_epoch" in facts["error"]["message"]
        assert "rank 1 called prune" in facts["error"]["message"]
        assert facts["unchanged"] is True
        assert facts["stage_after"] == 8  # the follow-up symmetric prune worked


def test_lone_mutation_without_partner_times_out(ranks: list[dict]) -> None:
    _, one = _scenario(ranks, "lone_timeout")
    assert one["error"]["type"] == "DistributedError"
    assert "did not complete within 1.5 s" in one["error"]["message"]
    assert one["later"]["type"] == "DistributedError" and "unusable" in one["later"]["message"]
    assert one["stage"] == 1  # nothing was applied


def test_drift_names_the_slot(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "drift")
    for facts in (zero, one):
        assert facts["clean"]["type"] is None
        assert facts["alpha"]["type"] == "DistributedError"
        assert "['s2']" in facts["alpha"]["message"] and "alpha" in facts["alpha"]["message"]
        assert "['s1']" in facts["params"]["message"] and "parameter_sum" in facts["params"]["message"]
        assert facts["without_params"]["type"] is None


def test_rank_zero_rejection_raises_everywhere(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "rank0_rejects")
    for key, cls in (
        ("unknown", "UnknownBlueprintError"),
        ("too_long", "LifecycleError"),
        ("bad_slot", "LifecycleError"),
    ):
        assert zero[key]["type"] == one[key]["type"] == cls
        assert one[key]["message"].startswith("rank 0 rejected")
    assert zero["calls"] == one["calls"] == []
    assert zero["stage"] == one["stage"] == 1


def test_different_slot_sets_are_refused(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "config_mismatch")
    assert "rank(s) [1]" in zero["error"] and "rank(s) [1]" in one["error"]


def test_ddp_with_mid_run_germination_keeps_replicas_identical(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "ddp_rewrap")
    for facts in (zero, one):
        assert facts["identical"] is True
        assert facts["seed_trained"] is True
        assert facts["rebuilds"] == 1
        assert facts["drift"] is None
        assert facts["stage"] == "TRAINING"


def test_stale_ddp_wrapper_diverges_and_is_caught(ranks: list[dict]) -> None:
    zero, one = _scenario(ranks, "ddp_stale_wrapper")
    for facts in (zero, one):
        assert facts["identical"] is False
        assert facts["drift"] is not None and "['s0']" in facts["drift"] and "parameter" in facts["drift"]
