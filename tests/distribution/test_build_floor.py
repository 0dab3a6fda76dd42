"""The declared build requirement is a real floor: the oldest setuptools it admits builds
every distribution, and a build environment below it is told what to install.

The issue this guards: ``license = "MIT"`` (a PEP 639 expression) was declared with
``setuptools>=61``, but setuptools 65 (what a fresh Python 3.11 venv carries) fails on it.
The floor is read from each ``pyproject.toml``; the test installs exactly that setuptools
release (from the package index) into a fresh venv and builds without isolation, as
``pip wheel --no-build-isolation`` users and distro packagers do.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "esper-core": ROOT,
    "esper-blueprints-cnn": ROOT / "esper_blueprints_cnn",
    "esper-blueprints-transformer": ROOT / "esper_blueprints_transformer",
    "esper-blueprints-example": ROOT / "examples" / "esper-blueprints-example",
}
KEEP_FOR_CORE = ["pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in", "esper_core"]
CACHES = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".pytest_cache")


def setuptools_floor(source: Path) -> Requirement:
    requires = tomllib.loads((source / "pyproject.toml").read_text())["build-system"]["requires"]
    (found,) = [r for r in map(Requirement, requires) if r.name == "setuptools"]
    return found


def floor_version(requirement: Requirement) -> str:
    (lower,) = [s.version for s in requirement.specifier if s.operator == ">="]
    return lower


def copy_source(name: str, into: Path) -> Path:
    target = into / name
    source = SOURCES[name]
    if name == "esper-core":  # the root also holds the other distributions, tests and benchmarks
        target.mkdir()
        for item in KEEP_FOR_CORE:
            path = source / item
            if path.is_dir():
                shutil.copytree(path, target / item, ignore=CACHES)
            else:
                shutil.copy(path, target / item)
    else:
        shutil.copytree(source, target, ignore=CACHES)
    return target


def pip(venv: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_every_distribution_builds_with_the_oldest_setuptools_it_admits(tmp_path: Path) -> None:
    floors = {name: setuptools_floor(source) for name, source in SOURCES.items()}
    assert len({str(f) for f in floors.values()}) == 1, floors  # one floor for all four
    requirement = floors["esper-core"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    sources = {name: copy_source(name, tmp_path) for name in SOURCES}
    out = tmp_path / "wheels"
    build = ("wheel", "--no-deps", "--no-build-isolation", "--check-build-dependencies", "-w", out)

    # Below the floor (the venv's own setuptools, or none): pip names what the build needs.
    refused = pip(venv, *build, sources["esper-core"], cwd=tmp_path)
    assert refused.returncode != 0
    assert str(requirement) in refused.stdout + refused.stderr, refused.stderr

    installed = pip(venv, "install", f"setuptools=={floor_version(requirement)}", cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    for name, source in sources.items():
        result = pip(venv, *build, source, cwd=tmp_path)
        assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
        (wheel_path,) = out.glob(f"{name.replace('-', '_')}-*.whl")
        with zipfile.ZipFile(wheel_path) as wheel:
            (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
            metadata = email.message_from_string(wheel.read(meta).decode())
        assert metadata["License-Expression"] == "MIT", name
