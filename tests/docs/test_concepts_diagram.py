"""The lifecycle diagram in docs/concepts.md draws exactly the transition and gate tables,
and docs/api.md has an entry for every public name of the core modules it covers.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from esper_core.gates import EDGE_GATES
from esper_core.stages import TRANSITIONS, SeedStage

DOCS = Path(__file__).resolve().parents[2] / "docs"
EDGE = re.compile(r"^\s*(\w+) --> (\w+)(?::\s*(.*))?$")
GATE = re.compile(r"\bG\d\b")


def diagram_edges() -> dict[tuple[str, str], str]:
    text = (DOCS / "concepts.md").read_text()
    block = re.search(r"```mermaid\n(.*?)```", text, re.DOTALL)
    assert block is not None, "concepts.md has no mermaid block"
    edges: dict[tuple[str, str], str] = {}
    for line in block.group(1).splitlines():
        match = EDGE.match(line)
        if match and "[*]" not in line:
            key = (match.group(1), match.group(2))
            assert key not in edges, f"edge {key} drawn twice"
            edges[key] = match.group(3) or ""
    return edges


def test_diagram_draws_every_edge_of_the_transition_table_and_no_other() -> None:
    table = {(a.name, b.name) for a, targets in TRANSITIONS.items() for b in targets}
    assert set(diagram_edges()) == table


def test_diagram_shows_every_stage() -> None:
    drawn = {stage for edge in diagram_edges() for stage in edge}
    assert drawn == {stage.name for stage in SeedStage}


def test_diagram_labels_exactly_the_gated_edges_with_their_gate() -> None:
    gated = {(a.name, b.name): level.name for (a, b), level in EDGE_GATES.items()}
    for edge, label in diagram_edges().items():
        assert GATE.findall(label) == ([gated[edge]] if edge in gated else []), (edge, label)


API_MODULES = [
    "errors", "options", "spec", "topology", "hookspecs", "plugins", "registry", "stages", "gates",
    "alpha", "blend", "activity", "metrics", "groupnorm", "isolation", "telemetry", "sinks", "slot",
    "slot_state", "commands", "transition", "evidence", "codec", "checkpoint", "restore", "distributed",
    "hosts", "model", "inject", "attachment", "folding", "seed_checkpoint", "hf", "optim", "optim_state", "lr_schedulers", "modes", "control",
    "governor", "testing", "cli", "demo",
]  # fmt: skip


@pytest.mark.parametrize("module", API_MODULES)
def test_api_reference_has_an_entry_for_every_public_name(module: str) -> None:
    text = (DOCS / "api.md").read_text()
    section = text.split(f"## `esper_core.{module}`", 1)
    assert len(section) == 2, f"docs/api.md has no section for esper_core.{module}"
    body = section[1].split("\n## ", 1)[0]
    missing = [
        name
        for name in importlib.import_module(f"esper_core.{module}").__all__
        if f"**`{name}`**" not in body
    ]
    assert not missing, f"docs/api.md lacks entries for esper_core.{module}: {missing}"
