"""The release metadata of the three distributions (and the example pack) agree with each other.

Fast checks on the files themselves; ``test_wheels.py`` builds and installs them for real.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {
    "esper-core": ROOT,
    "esper-blueprints-cnn": ROOT / "esper_blueprints_cnn",
    "esper-blueprints-transformer": ROOT / "esper_blueprints_transformer",
}
ALL = {**SHIPPED, "esper-blueprints-example": ROOT / "examples" / "esper-blueprints-example"}
# setuptools 76.1.0 rejects `license = "MIT"` (a PEP 639 expression); 77.0.1 builds it.
LAST_TOO_OLD, FIRST_GOOD = Version("76.1.0"), Version("77.0.1")


def pyproject(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))


def requirement(requirements: list[str], name: str) -> Requirement:
    (found,) = [r for r in map(Requirement, requirements) if r.name == name]
    return found


@pytest.mark.parametrize("name", ALL)
def test_names_license_and_build_floor(name: str) -> None:
    data = pyproject(ALL[name])
    project = data["project"]
    assert project["name"] == name
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    setuptools = requirement(data["build-system"]["requires"], "setuptools")
    assert setuptools.specifier.contains(FIRST_GOOD), setuptools
    assert not setuptools.specifier.contains(LAST_TOO_OLD), f"{setuptools} admits a setuptools that fails"


@pytest.mark.parametrize("name", ALL)
def test_each_distribution_carries_the_same_mit_license(name: str) -> None:
    text = (ALL[name] / "LICENSE").read_text(encoding="utf-8")
    assert text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 The Esper developers\n")


def test_shipped_versions_agree_with_the_changelog() -> None:
    versions = {name: pyproject(folder)["project"]["version"] for name, folder in SHIPPED.items()}
    assert len(set(versions.values())) == 1, versions
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## \[([^\]]+)\]", changelog, re.MULTILINE)
    assert first is not None and first.group(1) == versions["esper-core"]
    for name in SHIPPED:
        assert f"### {name}" in changelog


@pytest.mark.parametrize("name", [n for n in ALL if n != "esper-core"])
def test_packs_require_a_core_range_that_admits_this_core(name: str) -> None:
    core = Version(pyproject(ROOT)["project"]["version"])
    needed = requirement(pyproject(ALL[name])["project"]["dependencies"], "esper-core")
    assert needed.specifier.contains(core), f"{name} needs {needed}, the core is {core}"
    next_minor = Version(f"{core.major}.{core.minor + 1}.0")
    assert not needed.specifier.contains(next_minor), (
        f"{name}'s {needed} admits {next_minor} (0.x API may break)"
    )


def test_extras_and_pins() -> None:
    data = pyproject(ROOT)
    extras = data["project"]["optional-dependencies"]
    assert requirement(extras["tensorboard"], "tensorboard")
    dev_floor = requirement(extras["dev"], "setuptools").specifier
    assert dev_floor == requirement(data["build-system"]["requires"], "setuptools").specifier
    pins = dict(
        line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    assert pins["torch"] == "2.13.0"
    for name in ("tensorboard", "setuptools", "build", "numpy"):
        assert name in pins, f"{name} is not pinned in constraints.txt"
    assert dev_floor.contains(pins["setuptools"])
    assert "integration" in " ".join(data["tool"]["pytest"]["ini_options"]["markers"])
