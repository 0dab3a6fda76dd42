"""The docs stay complete: every hook, public name and CLI option is documented, and every
code block marked ``python runnable`` in the README and docs/ runs.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

import esper_core
from esper_core import hookspecs
from esper_core.cli import build_parser
from esper_core.demo.cli import build_parser as build_demo_parser

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = re.compile(r"^```python runnable\n(.*?)^```", re.MULTILINE | re.DOTALL)


def all_docs() -> str:
    return "\n".join(path.read_text() for path in DOC_FILES)


def runnable_blocks() -> list[pytest.param]:
    params = []
    for path in DOC_FILES:
        for index, match in enumerate(RUNNABLE.finditer(path.read_text())):
            params.append(pytest.param(match.group(1), id=f"{path.relative_to(ROOT)}#{index}"))
    return params


def cli_options() -> list[str]:
    """Every subcommand and every option string of the esper CLI."""
    found = []
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"esper {name}")
                found.extend(o for a in sub._actions for o in a.option_strings if o not in ("-h", "--help"))
    found.extend(
        o
        for a in build_demo_parser()._actions
        if a.help != argparse.SUPPRESS
        for o in a.option_strings
        if o not in ("-h", "--help")
    )
    return found


@pytest.mark.parametrize("hook", sorted(n for n in dir(hookspecs) if n.startswith("esper_")))
def test_every_hook_is_documented(hook: str) -> None:
    assert hook in all_docs()


@pytest.mark.parametrize("name", sorted(esper_core.__all__))
def test_every_public_name_is_documented(name: str) -> None:
    assert re.search(rf"\b{re.escape(name)}\b", all_docs()), f"{name} is exported but not in docs/"


@pytest.mark.parametrize("name", sorted(esper_core.__all__))
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(esper_core, name) is not None


def test_every_cli_command_and_option_is_documented() -> None:
    docs = all_docs()
    missing = [option for option in cli_options() if option not in docs]
    assert not missing, f"undocumented CLI commands/options: {missing}"


def test_there_are_runnable_examples() -> None:
    assert len(runnable_blocks()) >= 3


@pytest.mark.parametrize("code", runnable_blocks())
def test_runnable_block_runs(code: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
