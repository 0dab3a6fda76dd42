"""Every public name of ``esper_core.sinks`` and ``esper_core.cli`` has an API reference entry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import esper_core.cli
import esper_core.sinks

API = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")


def section(module: str) -> str:
    match = re.search(rf"^## `{re.escape(module)}`\n(.*?)(?=^## )", API, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/api.md has no section for {module}"
    return match.group(1)


@pytest.mark.parametrize(
    ("module", "name"),
    [(m.__name__, n) for m in (esper_core.sinks, esper_core.cli) for n in m.__all__],
)
def test_public_name_has_an_entry(module: str, name: str) -> None:
    assert f"- **`{name}`**" in section(module), f"{module}.{name} has no entry in docs/api.md"
