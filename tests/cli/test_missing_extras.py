"""A feature whose optional extra is not installed says so in one line, through the real command.

The reported instance: ``esper demo`` without the ``demo`` extra printed a raw
``ModuleNotFoundError: No module named 'sklearn'`` traceback. Each check runs the installed
``esper`` console script in a child process where the named modules cannot be imported: a
``sitecustomize`` on its ``PYTHONPATH`` puts a meta path finder first that refuses them, as
an environment without the distribution would. The kind is guarded by a scan of the
library's own imports: every module outside the core's dependencies is imported lazily and
belongs to an extra that :func:`esper_core._extras.require_extras` checks.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import esper_core
from esper_core._extras import EXTRAS, require_extras
from esper_core.errors import MissingExtraError

ESPER = Path(sys.executable).with_name("esper")

_BLOCKER = """
import os, sys

_BLOCKED = {name for name in os.environ.get("ESPER_TEST_BLOCKED", "").split(",") if name}


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Block())
"""


def esper_without(
    blocked: tuple[str, ...], *args: str, tmp_path: Path, python: str | None = None
) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESPER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env["ESPER_TEST_BLOCKED"] = ",".join(blocked)
    command = [sys.executable, "-c", python] if python is not None else [str(ESPER), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)


@pytest.mark.parametrize(
    ("blocked", "args", "named", "install"),
    [
        (("sklearn",), (), ["scikit-learn (No module named 'sklearn')"], "esper-core[demo]"),
        (("matplotlib",), (), ["matplotlib (No module named 'matplotlib')"], "esper-core[demo]"),
        (
            ("rich", "sklearn"),
            ("--topology", "transformer"),
            ["scikit-learn (No module named 'sklearn')", "rich (No module named 'rich')"],
            "esper-core[demo]",
        ),
        (
            ("tensorboard",),
            ("--tensorboard", "tb"),
            ["tensorboard (No module named 'tensorboard')"],
            "esper-core[tensorboard]",
        ),
        (
            ("sklearn", "tensorboard"),
            ("--tensorboard", "tb"),
            ["scikit-learn (No module named 'sklearn')", "tensorboard (No module named 'tensorboard')"],
            "esper-core[demo,tensorboard]",
        ),
    ],
)
def test_esper_demo_without_an_extra_says_what_to_install(
    blocked: tuple[str, ...], args: tuple[str, ...], named: list[str], install: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = esper_without(
        blocked, "demo", "--seeds", "1", "--epochs", "1", *args, "--out", str(out), tmp_path=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "esper demo: error: this run needs the 'demo' extra (scikit-learn, matplotlib, rich)"
    )
    for item in named:
        assert item in line
    assert line.endswith(f'install with: pip install "{install}"')
    assert not out.exists() and not (tmp_path / "tb").exists()  # refused before anything is created


def test_what_needs_no_extra_still_works_without_them(tmp_path: Path) -> None:
    every = ("sklearn", "matplotlib", "rich", "tensorboard", "transformers")
    for args in (["demo", "--help"], ["blueprints"], ["plugins"], ["--version"]):
        result = esper_without(every, *args, tmp_path=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_the_tensorboard_sink_without_tensorboard_names_the_extra(tmp_path: Path) -> None:
    script = (
        "from esper_core.errors import MissingExtraError\n"
        "from esper_core.sinks import TensorBoardSink\n"
        "try:\n"
        "    TensorBoardSink('runs')\n"
        "except MissingExtraError as exc:\n"
        "    print(exc.extras, exc.modules)\n"
        "    print(exc)\n"
    )
    result = esper_without(("tensorboard",), tmp_path=tmp_path, python=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "('tensorboard',) ('torch.utils.tensorboard',)",
        "TensorBoardSink needs the 'tensorboard' extra (tensorboard): cannot import tensorboard "
        "(No module named 'tensorboard'); install with: pip install \"esper-core[tensorboard]\"",
    ]
    assert not (tmp_path / "runs").exists()


def test_a_broken_module_is_named_with_its_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Installed but failing on import (a wrong binary, say): the error says which and why.
    (tmp_path / "rich").mkdir()
    (tmp_path / "rich" / "__init__.py").write_text(
        "raise ImportError('libbroken.so: cannot open shared object')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rich", raising=False)
    with pytest.raises(MissingExtraError) as info:
        require_extras("esper demo", "demo")
    assert "cannot import rich (rich: libbroken.so: cannot open shared object); install with" in str(
        info.value
    )
    assert isinstance(info.value, ImportError)
    assert (info.value.extras, info.value.modules) == (("demo",), ("rich",))


# ---- the kind: every optional import of the library is lazy and belongs to a checked extra --------

#: The core's own dependencies (pyproject.toml ``dependencies``) and itself.
_CORE = {"torch", "pluggy", "attrs", "numpy", "esper_core"}
#: pytest is imported only by the conformance kit (esper_core.testing), which runs inside a pack's
#: own pytest session: whoever calls it has pytest.
_TEST_KIT = {"pytest"}


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(module, at module level) for every absolute import; ``if TYPE_CHECKING:`` blocks count as lazy."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, top))
            else:
                deferred = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) or (
                    isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
                )
                visit(child, top and not deferred)

    visit(tree, True)
    return found


def test_every_optional_import_is_lazy_and_belongs_to_a_checked_extra() -> None:
    checked = {module for modules in EXTRAS.values() for module, _ in modules}
    optional: dict[str, list[str]] = {}
    for path in sorted(Path(esper_core.__file__).parent.rglob("*.py")):
        for module, top in _imports(ast.parse(path.read_text(), str(path))):
            root = module.split(".")[0]
            is_optional = module.startswith("torch.utils.tensorboard") or (
                root not in _CORE and root not in sys.stdlib_module_names and root not in _TEST_KIT
            )
            if is_optional:
                assert not top, f"{path}: imports the optional {module} at module level"
                optional.setdefault(module, []).append(path.name)
    # torch.utils.tensorboard is optional although torch is not: key it by the full name.
    key = {
        m: "torch.utils.tensorboard" if m.startswith("torch.utils.tensorboard") else m.split(".")[0]
        for m in optional
    }
    extras = {"torch.utils.tensorboard" if c.startswith("torch.") else c.split(".")[0] for c in checked}
    unchecked = {m: optional[m] for m in optional if key[m] not in extras}
    assert not unchecked, f"optional imports that belong to no extra in EXTRAS: {unchecked}"
    # Not vacuous, and EXTRAS lists nothing the library does not import.
    assert set(key.values()) == extras == {"sklearn", "matplotlib", "rich", "torch.utils.tensorboard"}
