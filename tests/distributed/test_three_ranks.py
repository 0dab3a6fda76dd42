"""Three real processes (gloo on 127.0.0.1): records, headers and commands reach every peer."""

from __future__ import annotations

import pytest
from dist_ranks import run_ranks

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_ranks("dist_scenarios_three", tmp_path_factory.mktemp("ranks3"), world=3, deadline=200)


def _facts(ranks: list[dict], name: str) -> list[dict]:
    facts = [r[name] for r in ranks]
    for rank, f in enumerate(facts):
        assert f["ok"], f"rank {rank} {name} failed: {f.get('error')}\n{f.get('tb', '')}"
    return facts


def test_every_peer_holds_rank_zeros_records_and_every_header(ranks: list[dict]) -> None:
    facts = _facts(ranks, "channel_exchange")
    expected_rows = [[r, 3, 1, r, 10 + r] for r in range(3)]
    for f in facts:
        assert f["rows"] == expected_rows
        assert f["record"] == "rank-0-!"
        assert f["bare"] == "12345678"
        assert f["long"] == "x" * 5000 + "-end"  # longer than the capacity: a second message
        assert f["mismatch"]["type"] == "DistributedError"
        assert "rank 2 called 4 (call #2)" in f["mismatch"]["message"]
        assert f["verdict"] is False  # rank 0 said False; ranks 1 and 2 are overruled


def test_every_peer_applies_rank_zeros_commands(ranks: list[dict]) -> None:
    facts = _facts(ranks, "commands")
    assert facts[0]["calls"] == facts[1]["calls"] == facts[2]["calls"]
    assert facts[0]["calls"][1][0].startswith("('germinate', 'dist_probe'")
    assert facts[0]["params"] == facts[1]["params"] == facts[2]["params"]


def test_a_lone_call_is_named_on_every_rank(ranks: list[dict]) -> None:
    for f in _facts(ranks, "lone_mismatch"):
        assert f["error"]["type"] == "DistributedError"
        assert "rank 0 called step_epoch" in f["error"]["message"]
        assert f["unchanged"] is True
