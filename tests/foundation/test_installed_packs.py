"""Real packs, really pip-installed, seen through the real entry-point mechanism.

The fixture packs under ``tests/fixtures`` are installed with pip into a throwaway target
directory once per session; each check runs the ``esper`` CLI in a subprocess whose
``PYTHONPATH`` includes that directory, so discovery goes through ``importlib.metadata``
exactly as for a user's ``pip install``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PACKS = [
    "esper-fixture-good",
    "esper-fixture-import-error",
    "esper-fixture-misspelled",
    "esper-fixture-collide-a",
    "esper-fixture-collide-b",
]


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            *(str(FIXTURES / p) for p in PACKS),
        ],
        check=True,
        timeout=240,
    )
    return target


def esper(site_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ESPER_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(site_dir), environment.get("PYTHONPATH", "")])
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-W", "ignore::RuntimeWarning", "-m", "esper_core.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def by_distribution(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {entry["distribution"]: entry for entry in json.loads(result.stdout)}


def test_plugins_json_reports_each_outcome(site_dir: Path) -> None:
    plugins = by_distribution(esper(site_dir, "plugins", "--json"))
    good = plugins["esper-fixture-good"]
    assert good["loaded"] and good["version"] == "1.4.2"
    assert good["blueprints"] == ["cnn:fixture_gain"] and good["hooks"] == ["esper_register_blueprints"]
    broken = plugins["esper-fixture-import-error"]
    assert not broken["loaded"] and "fixture_dependency_that_is_not_installed" in broken["error"]
    typo = plugins["esper-fixture-misspelled"]
    assert not typo["loaded"] and "esper_register_blueprint'" in typo["error"]
    assert plugins["esper-fixture-collide-a"]["loaded"]
    collide = plugins["esper-fixture-collide-b"]
    assert collide["loaded"] and collide["blueprints"] == []  # its one entry clashed
    (refused,) = collide["refused"]
    assert "esper-fixture-collide-a 1.0.0" in refused and "esper-fixture-collide-b 2.0.0" in refused
    assert plugins["esper-core"]["topologies"] == ["cnn", "transformer"]


def test_plugins_text_output_names_failures(site_dir: Path) -> None:
    result = esper(site_dir, "plugins")
    assert result.returncode == 0
    assert "esper-fixture-import-error 0.3.0)  FAILED" in result.stdout
    assert "error:       import failed: ModuleNotFoundError" in result.stdout
    assert "failed to load" in result.stdout.splitlines()[-1]


def test_blueprints_lists_the_installed_pack(site_dir: Path) -> None:
    result = esper(site_dir, "blueprints", "fixture_*", "--dim", "8", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["distribution"] == "esper-fixture-good" and row["version"] == "1.4.2"
    assert row["params"] == 1 and row["options"] == {"groups": 1}


def test_allow_list_and_strict_mode(site_dir: Path) -> None:
    only_good = by_distribution(esper(site_dir, "plugins", "--json", ESPER_LOAD_PLUGINS="esper_fixture_good"))
    assert set(only_good) == {"esper-core", "esper-fixture-good"}
    strict = esper(site_dir, "plugins", ESPER_STRICT_PLUGINS="1")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert "esper-fixture-import-error 0.3.0)  FAILED" in strict.stdout  # the report is printed
    assert "ESPER_STRICT_PLUGINS is set: 2 plugin(s) failed to load and 1 entry refused" in strict.stderr
    clean = esper(site_dir, "plugins", ESPER_STRICT_PLUGINS="1", ESPER_LOAD_PLUGINS="esper-fixture-good")
    assert clean.returncode == 0, clean.stderr
