"""The example pack in examples/ installs with pip and passes the kit through its entry point.

The pack is installed with ``pip install --target`` into a temporary folder (from a copy,
so the build leaves nothing in the repository), and a child Python gets that folder on
its path: Esper then finds the pack exactly as it would after a user's ``pip install``,
through the distribution's ``esper.blueprints`` entry point, without touching the
project's environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "esper-blueprints-example"
DIST = "esper-blueprints-example"
FULL_ENV_NAME = "ESPER_CONFORMANCE_FULL"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """Environment for a child process that sees the example pack as installed."""
    root = tmp_path_factory.mktemp("example-pack")
    source = root / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(site), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env["ESPER_LOAD_PLUGINS"] = DIST  # only this pack: its test must not depend on the others
    env["ESPER_STRICT_PLUGINS"] = "1"  # a load failure must fail loudly, not skip
    env.pop(FULL_ENV_NAME, None)
    env["ESPER_EXAMPLE_SOURCE"] = str(source)
    return env


def _run(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_esper_plugins_and_blueprints_show_the_installed_pack(installed):
    # one child process for both commands: each start costs a torch import
    script = (
        "from esper_core.cli import main; main(['plugins', '--json']); print('\\x1e');"
        "main(['blueprints', '--dim', '16', '--json'])"
    )
    result = _run(installed, "-c", script)
    assert result.returncode == 0, result.stderr
    plugins_json, blueprints_json = result.stdout.split("\x1e")
    plugins = {p["distribution"]: p for p in json.loads(plugins_json)}
    pack = plugins[DIST]
    assert pack["loaded"] and pack["error"] is None
    assert pack["version"] == "0.1.0"
    assert sorted(pack["blueprints"]) == ["cnn:pointwise", "transformer:token_shift"]
    assert pack["hooks"] == ["esper_register_blueprints"]

    rows = {(r["topology"], r["name"]): r for r in json.loads(blueprints_json)}
    pointwise = rows["cnn", "pointwise"]
    assert pointwise["distribution"] == DIST
    assert pointwise["params"] == 2 * 2 * 16 * 16  # expansion 2, no bias
    assert pointwise["options"] == {"expansion": 2, "bias": False}
    assert rows["transformer", "token_shift"]["params"] == 16 * 16 + 16


def test_the_packs_one_function_conformance_test_passes(installed):
    source = Path(installed["ESPER_EXAMPLE_SOURCE"])
    result = _run(installed, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests", cwd=source)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test_conformance[cnn:pointwise] PASSED" in output
    assert "test_conformance[transformer:token_shift] PASSED" in output
    assert "2 passed" in output
