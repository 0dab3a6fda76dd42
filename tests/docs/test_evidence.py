"""The README caption and docs/evidence.md say exactly what the committed demo reports say.

The generated blocks must equal what ``esper_core.demo.evidence`` renders from the reports
(so they cannot go stale), and, independently of that renderer, the caption's numbers are
recomputed here from the reports' per-seed values.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest

from esper_core.demo.evidence import (
    COMMANDS,
    REPORTS,
    blocks_in,
    capacity_table,
    caption,
    evidence_section,
    replace_block,
    verdict,
)

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EVIDENCE = ROOT / "docs" / "evidence.md"


def _report(topology: str) -> dict:
    return json.loads((ROOT / REPORTS[topology]).read_text())


def _block(document: str, name: str) -> str:
    match = re.search(
        rf"<!-- BEGIN generated: {name} -->\n(.*?)\n<!-- END generated: {name} -->", document, re.S
    )
    assert match, f"no generated block {name!r}"
    return match.group(1)


@pytest.mark.parametrize("topology", sorted(COMMANDS))
def test_committed_reports_come_from_the_documented_commands(topology: str) -> None:
    report = _report(topology)
    assert report["command"] == shlex.join(COMMANDS[topology])
    assert report["topology"] == topology
    assert len(report["settings"]["seeds"]) >= 5
    assert report["settings"]["gates"] == {**report["settings"]["gates"], "policy": "strict", "overrides": {}}
    assert set(report["settings"]["strategies"]) == {"gain_per_param", "cheapest"}
    assert (ROOT / f"docs/evidence/{topology}/growth.png").read_bytes()[:4] == b"\x89PNG"
    assert f"`{report['command']}`" in EVIDENCE.read_text()


def test_evidence_page_blocks_are_what_the_reports_render() -> None:
    text = EVIDENCE.read_text()
    assert set(blocks_in(text)) >= {"cnn", "transformer", "capacity-cnn", "capacity-transformer"}
    for topology in COMMANDS:
        assert _block(text, topology) == evidence_section(_report(topology)), f"regenerate: {topology}"
    for name in ("capacity-cnn", "capacity-transformer"):
        data = json.loads((ROOT / f"docs/evidence/{name}.json").read_text())
        assert _block(text, name) == capacity_table(data), f"regenerate: {name}"


def test_readme_figure_and_caption_come_from_the_cnn_report() -> None:
    text = README.read_text()
    assert "](docs/evidence/cnn/growth.png)" in text
    report = _report("cnn")
    assert _block(text, "caption") == caption(report), (
        "regenerate with scripts/make_evidence.py --render-only"
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_caption_numbers_match_the_per_seed_values() -> None:
    """Recompute from ``runs`` (not from the report's own summary) what the caption states."""
    report = _report("cnn")
    text = _block(README.read_text(), "caption")
    strategy = report["settings"]["strategies"][0]
    runs = report["runs"]
    for name, key in (("grown", f"grown:{strategy}"), ("host alone", "host_alone")):
        mean, std = _mean_std([r["models"][key]["final"]["accuracy"] for r in runs])
        assert f"{name} {mean:.2f} ± {std:.2f}%" in text
    mean, std = _mean_std([r["models"][f"static:{strategy}"]["final"]["accuracy"] for r in runs])
    assert f"static model of the grown size {mean:.2f} ± {std:.2f}%" in text
    diffs = [
        r["models"][f"grown:{strategy}"]["final"]["accuracy"] - r["models"]["host_alone"]["final"]["accuracy"]
        for r in runs
    ]
    mean, std = _mean_std(diffs)
    half = {4: 2.776, 5: 2.571, 6: 2.447}.get(len(diffs) - 1, 2.776) * std / math.sqrt(len(diffs))
    assert f"Grown minus host: {mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] at equal epochs" in text
    ratio = sum(
        r["models"][f"grown:{strategy}"]["train_flops"] / r["models"][f"static:{strategy}"]["train_flops"]
        for r in runs
    ) / len(runs)
    assert f"with {ratio:.2f}x the static model's training FLOPs" in text
    assert f"seeds {runs[0]['seed']}-{runs[-1]['seed']}, {report['settings']['epochs']} epochs" in text


def test_verdicts_follow_the_interval_and_the_metric_direction() -> None:
    def comparison(lo: float, hi: float, higher: bool) -> dict:
        return {"higher_is_better": higher, "equal_epochs": {"ci95": [lo, hi]}}

    assert verdict(comparison(0.5, 2.0, True), "equal_epochs") == "better"
    assert verdict(comparison(0.5, 2.0, False), "equal_epochs") == "worse"  # bits/char went up
    assert verdict(comparison(-2.0, -0.1, False), "equal_epochs") == "better"
    assert verdict(comparison(-2.0, 0.1, True), "equal_epochs") == "no clear difference"
    assert (
        verdict({"higher_is_better": True, "equal_epochs": {"ci95": None}}, "equal_epochs")
        == "one seed: no interval"
    )


def test_replace_block_rewrites_only_its_block() -> None:
    doc = "a\n<!-- BEGIN generated: x -->\nold\n<!-- END generated: x -->\nb\n"
    assert (
        replace_block(doc, "x", "new\ntext")
        == "a\n<!-- BEGIN generated: x -->\nnew\ntext\n<!-- END generated: x -->\nb\n"
    )
    empty = "<!-- BEGIN generated: x -->\n<!-- END generated: x -->"
    assert replace_block(empty, "x", "t") == "<!-- BEGIN generated: x -->\nt\n<!-- END generated: x -->"
    with pytest.raises(KeyError, match="no generated block 'y'"):
        replace_block(doc, "y", "z")
