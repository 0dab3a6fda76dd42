"""Checkpoints written by envelope version 1 still load, exactly, into a fresh model.

The files in ``tests/fixtures/checkpoints_v1`` were written by the library at commit
61e8de3 (see ``make_fixtures.py`` there). Each one is loaded with
``torch.load(weights_only=True)`` into a freshly built model; the model's output must equal
the recorded output bit for bit and every slot's lifecycle facts must equal the recorded
ones. Then the lifecycle must carry on (a tick and a forward work).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from esper_core.checkpoint import load_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints_v1"
FILES = sorted(FIXTURES.glob("*.pt"))


def _maker():
    spec = importlib.util.spec_from_file_location("make_v1_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_scenario_has_a_file() -> None:
    maker = _maker()
    names = {p.stem for p in FILES}
    assert names == {f"{t}_{s}" for t in ("cnn", "transformer") for s in maker.SCENARIOS}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_v1_checkpoint_loads_exactly(path: Path) -> None:
    maker = _maker()
    payload = torch.load(path, weights_only=True)
    model = maker.build(payload["config"]["topology"])
    load_checkpoint(model, payload["state_dict"])
    model.eval()
    with torch.no_grad():
        out = model(payload["input"])
    assert torch.equal(out, payload["output"])
    assert maker.report_facts(model) == json.loads(payload["reports"])
    # The lifecycle carries on from the loaded state.
    model.step_epoch()
    with torch.no_grad():
        model(payload["input"])


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_v1_checkpoint_loads_through_the_slots_own_hooks(path: Path) -> None:
    """``nn.Module.load_state_dict`` (no ``load_checkpoint``): each slot's pre-hook renames its
    version-1 keys (``gate_module.*``) and restores its envelope; same outputs and facts."""
    maker = _maker()
    payload = torch.load(path, weights_only=True)
    model = maker.build(payload["config"]["topology"])
    torch.nn.Module.load_state_dict(model, payload["state_dict"])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(payload["input"]), payload["output"])
    assert maker.report_facts(model) == json.loads(payload["reports"])


@pytest.mark.parametrize(
    ("envelope", "legacy"),
    [
        ('{"version":2,"slot_id":"a"}', False),  # what state_text writes
        ({"version": 2, "slot_id": "a"}, False),
        ('{"version": 2, "slot_id": "a"}', True),  # not our writer's text: scanned, to be safe
        ('{"version": 1, "slot_id": "a"}', True),
        ({"version": 1}, True),
        (None, True),
        ("", True),
    ],
)
def test_only_version_2_envelopes_skip_the_legacy_key_scan(envelope: object, legacy: bool) -> None:
    from esper_core._legacy import may_be_legacy

    assert may_be_legacy(envelope) is legacy
