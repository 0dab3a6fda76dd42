"""docs/api.md says its signatures are taken from the code: each documented parameter list must
name exactly the parameters the code has, in order (annotations and defaults are prose)."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "docs" / "api.md"
ENTRY = re.compile(r"^- \*\*`(\w+)`\*\*`([^`]*)`", re.M)


def _top_level_params(span: str) -> list[str] | None:
    """Parameter names of a ``(a: int, b=1, *, c) -> X`` span, or None when it is no call signature."""
    if not span.startswith("("):
        return None
    depth, end = 0, None
    for i, char in enumerate(span):
        depth += char in "([{"
        depth -= char in ")]}"
        if depth == 0:
            end = i
            break
    assert end is not None, f"unbalanced signature {span!r}"
    params, depth, current = [], 0, ""
    for char in span[1:end] + ",":
        if char == "," and depth == 0:
            params.append(current.strip())
            current = ""
            continue
        depth += char in "([{"
        depth -= char in ")]}"
        current += char
    names = [re.split(r"[:=]", p)[0].strip().lstrip("*") for p in params if p.strip()]
    return [n for n in names if n and n != "/"]


def _entries() -> list[tuple[str, str, list[str]]]:
    text = API.read_text()
    found = []
    for module, body in re.findall(r"^## `(esper_core[\w.]*)`\n(.*?)(?=^## |\Z)", text, re.M | re.S):
        for name, span in ENTRY.findall(body):
            params = _top_level_params(span)
            if params is not None:
                found.append((module, name, params))
    return found


ENTRIES = _entries()


def test_the_reference_has_signatures_to_check() -> None:
    assert len(ENTRIES) > 150


@pytest.mark.parametrize(("module", "name", "documented"), ENTRIES, ids=[f"{m}.{n}" for m, n, _ in ENTRIES])
def test_documented_parameters_are_the_codes(module: str, name: str, documented: list[str]) -> None:
    obj = getattr(importlib.import_module(module), name)
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to compare
        return
    actual = [p.name for p in signature.parameters.values() if p.name != "self"]
    assert documented == actual, (
        f"docs/api.md documents {name}{tuple(documented)}, the code has {tuple(actual)}"
    )
