"""The package's top level is a fixed, documented set of names; every other public name is
imported from its module, and asking the package for a name it no longer re-exports says
which module has it.

The sets are written out here on purpose: a name joining or leaving the top level is an API
change and should show up as a change to this file.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import esper_core

ROOT = Path(__file__).resolve().parents[2]

# name -> the module that provides it (the package re-exports that very object)
TOP_LEVEL = {
    "EsperError": "esper_core.errors",
    "RegistryError": "esper_core.errors",
    "LifecycleError": "esper_core.errors",
    "CheckpointError": "esper_core.errors",
    "hookimpl": "esper_core.hookspecs",
    "BlueprintSpec": "esper_core.spec",
    "Option": "esper_core.options",
    "Topology": "esper_core.topology",
    "list_blueprints": "esper_core.registry",
    "get_blueprint": "esper_core.registry",
    "create_blueprint": "esper_core.registry",
    "get_topology": "esper_core.registry",
    "SeedSlot": "esper_core.slot",
    "SeedStage": "esper_core.stages",
    "QualityGates": "esper_core.gates",
    "GateLevel": "esper_core.gates",
    "BlendAlgorithm": "esper_core.alpha",
    "AlphaCurve": "esper_core.alpha",
    "MorphogeneticModel": "esper_core.model",
    "CNNHost": "esper_core.hosts",
    "TransformerHost": "esper_core.hosts",
    "inject_slots": "esper_core.inject",
    "remove_slots": "esper_core.inject",
    "InjectionTarget": "esper_core.inject",
    "evaluate_injected": "esper_core.inject",
    "OptimizerBinding": "esper_core.optim",
    "HeuristicController": "esper_core.control",
    "ControllerConfig": "esper_core.control",
    "Governor": "esper_core.governor",
    "fold": "esper_core.folding",
    "save_seeds": "esper_core.seed_checkpoint",
    "load_seeds": "esper_core.seed_checkpoint",
    "load_checkpoint": "esper_core.checkpoint",
    "DistributedLifecycle": "esper_core.distributed",
    "DDPRewrapper": "esper_core.distributed",
}

# names the package no longer re-exports -> the module to import them from
NOT_REEXPORTED = {
    "OptionError": "esper_core.errors",
    "HostError": "esper_core.errors",
    "FoldError": "esper_core.errors",
    "param_count": "esper_core.registry",
    "flop_count": "esper_core.registry",
    "list_topologies": "esper_core.registry",
    "plugin_report": "esper_core.registry",
    "plan_fold": "esper_core.folding",
}


def test_the_top_level_is_exactly_the_public_names() -> None:
    assert len(esper_core.__all__) == len(set(esper_core.__all__)), "a name is listed twice"
    assert set(esper_core.__all__) == set(TOP_LEVEL)
    assert len(TOP_LEVEL) <= 36
    assert dir(esper_core) == sorted(TOP_LEVEL)


@pytest.mark.parametrize(("name", "module"), sorted(TOP_LEVEL.items()))
def test_a_top_level_name_is_its_modules_object(name: str, module: str) -> None:
    assert getattr(esper_core, name) is getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(("name", "module"), sorted(NOT_REEXPORTED.items()))
def test_a_name_not_reexported_says_where_it_lives(name: str, module: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None  # the advice is right
    with pytest.raises(AttributeError) as info:
        getattr(esper_core, name)
    assert str(info.value) == f"esper_core.{name} is not re-exported; import it from {module}"
    assert info.value.name == name
    assert not hasattr(esper_core, name)
    assert name not in dir(esper_core)
    with pytest.raises(ImportError, match=rf"cannot import name {name!r} from 'esper_core'"):
        exec(f"from esper_core import {name}", {})


def test_an_unknown_name_is_a_plain_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"^module 'esper_core' has no attribute 'no_such_name'$"):
        esper_core.no_such_name  # noqa: B018
    assert not hasattr(esper_core, "no_such_name")


def test_importing_every_module_leaks_nothing_into_the_top_level() -> None:
    """In a fresh process, after every module of the package is imported (submodules bind
    themselves as attributes of the package), the names not re-exported are still refused.
    ``__main__`` modules are entry points that run when imported, so they are left out."""
    code = (
        "import importlib, pkgutil, esper_core\n"
        "for info in pkgutil.walk_packages(esper_core.__path__, 'esper_core.'):\n"
        "    if not info.name.endswith('.__main__'):\n"
        "        importlib.import_module(info.name)\n"
        f"names = {sorted(NOT_REEXPORTED)!r}\n"
        "leaked = [n for n in names if n in vars(esper_core) or hasattr(esper_core, n)]\n"
        "assert not leaked, leaked\n"
        "print(len(names))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(NOT_REEXPORTED))


def test_the_api_reference_lists_the_top_level() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("\n## Importable from `esper_core`\n", 1)[1].split("\n## ", 1)[0]
    documented = {
        name: module
        for module, names in re.findall(r"^\| `(esper_core[\w.]*)` \| (.*) \|$", section, re.M)
        for name in re.findall(r"`(\w+)`", names)
    }
    assert documented == TOP_LEVEL


# ---- the repository itself uses only the top level that exists ---------------------------------

FROM_IMPORT = re.compile(r"\bfrom\s+esper_core\s+import\s+(\([^)]*\)|[\w ,]*(?:\\\n[\w ,]*)*)")
ALIAS = re.compile(r"\bimport\s+esper_core\s+as\s+(\w+)")
# `esper_core.X is not re-exported` quotes the error message itself
ATTRIBUTE = r"(?<![\w.]){prefix}\.(\w+)\b(?!\s+is\s+not\s+re-exported)"


def _sources() -> list[Path]:
    skip = {".venv", ".git", "build", "dist"}
    return sorted(
        path
        for path in ROOT.rglob("*")
        if path.suffix in {".py", ".md"}
        and path.name != "CHANGELOG.md"  # the history names what changed
        and path != Path(__file__).resolve()  # this file names them on purpose
        and not any(part in skip or part.endswith(".egg-info") for part in path.relative_to(ROOT).parts)
    )


def _undefined_top_level_uses(text: str, known: set[str]) -> list[str]:
    found = []
    for match in FROM_IMPORT.finditer(text):
        body = re.sub(r"#[^\n]*", "", match.group(1)).strip("()")
        names = [item.split()[0] for item in body.replace("\\\n", " ").split(",") if item.split()]
        found.extend(f"from esper_core import {n}" for n in names if n not in known)
    for prefix in {"esper_core", *ALIAS.findall(text)}:
        for match in re.finditer(ATTRIBUTE.format(prefix=re.escape(prefix)), text):
            if match.group(1) not in known and not match.group(1).startswith("__"):
                found.append(f"{prefix}.{match.group(1)}")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    known = {*TOP_LEVEL, "errors"}
    text = (
        "from esper_core import (\n    SeedSlot,  # a comment\n    plan_fold,\n)\n"
        "from esper_core import fold, OptionError as E\n"
        "code = 'from esper_core import param_count\\nx = 1'\n"
        "import esper_core as ec\nec.plugin_report()\nesper_core.HostError\n"
        "esper_core.errors.HostError, esper_core.__all__, fold.plan_fold\n"
        "`esper_core.FoldError is not\nre-exported; import it from esper_core.errors`\n"
    )
    assert sorted(_undefined_top_level_uses(text, known)) == [
        "ec.plugin_report",
        "esper_core.HostError",
        "from esper_core import OptionError",
        "from esper_core import param_count",
        "from esper_core import plan_fold",
    ]


def test_code_and_docs_use_only_names_the_package_has() -> None:
    """Every `from esper_core import X` and `esper_core.X` in the repository's code, tests,
    docs (prose and code blocks), examples, scripts and benchmarks names a top-level name or a
    module of the package."""
    known = set(esper_core.__all__) | {m.name for m in pkgutil.iter_modules(esper_core.__path__)}
    sources = _sources()
    assert len(sources) > 100
    problems = [
        f"{path.relative_to(ROOT)}: {use}"
        for path in sources
        for use in _undefined_top_level_uses(path.read_text(encoding="utf-8"), known)
    ]
    assert not problems, "\n".join(problems)
