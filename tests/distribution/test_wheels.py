"""The built distributions, installed as a user installs them, work without the repository.

Each distribution (``esper-core``, both packs, the example pack) is copied out of the
checkout and built with ``python -m build`` (an sdist, then the wheel from that sdist, so a
file missing from the sdist fails here). A fresh virtual environment gets torch from this
machine's disk only (``pip install --no-index``: never a download of another torch build),
then the wheels (not editable) with ``constraints.txt``. Everything else runs there, from a
folder outside the checkout: ``esper --version``, ``esper plugins``, growth in models
injected with ``inject_slots`` (``grow_injected.py``), and the example pack's own
conformance test against its installed wheel.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {
    "esper-core": ROOT,
    "esper-blueprints-cnn": ROOT / "esper_blueprints_cnn",
    "esper-blueprints-transformer": ROOT / "esper_blueprints_transformer",
    "esper-blueprints-example": ROOT / "examples" / "esper-blueprints-example",
}
PACKS = [name for name in SOURCES if name != "esper-core"]
# What a copy of a source folder leaves behind: environments, caches, earlier build outputs.
IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
    ".ruff_cache", "esper-demo",
)  # fmt: skip
# Folders of the root that are other distributions (left out of the core's copy only).
NESTED = {"esper_blueprints_cnn", "esper_blueprints_transformer", "examples"}
# The import package of each distribution and where its source lies.
PACKAGES = {
    "esper-core": ROOT / "esper_core",
    **{name: SOURCES[name] / "src" / name.replace("-", "_") for name in PACKS},
}


def ignore_for(source: Path):  # type: ignore[no-untyped-def]
    def ignore(folder: str, names: list[str]) -> set[str]:
        ignored = set(IGNORE(folder, names))
        if Path(folder) == source == ROOT:
            ignored |= NESTED & set(names)
        return ignored

    return ignore


def version_of(name: str) -> str:
    return tomllib.loads((SOURCES[name] / "pyproject.toml").read_text())["project"]["version"]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that would put the checkout on the path."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("ESPER_")}
    env.update(extra)
    return env


def run(*args: str | Path, cwd: Path, timeout: int = 600, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout
    )
    return result


def check(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """``{distribution: {"sdist": path, "wheel": path}}``, built from copies of the sources."""
    work = tmp_path_factory.mktemp("build")
    out = work / "dist"
    artifacts: dict[str, dict[str, Path]] = {}
    for name, source in SOURCES.items():
        copy = work / name
        shutil.copytree(source, copy, ignore=ignore_for(source))
        check(
            run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, copy, cwd=work, timeout=300)
        )
        stem = f"{name.replace('-', '_')}-{version_of(name)}"
        artifacts[name] = {"sdist": out / f"{stem}.tar.gz", "wheel": out / f"{stem}-py3-none-any.whl"}
        assert all(p.is_file() for p in artifacts[name].values()), sorted(os.listdir(out))
    return artifacts


@pytest.fixture(scope="module")
def venv(built: dict[str, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding torch from this machine's disk and the built wheels."""
    home = tmp_path_factory.mktemp("venv")
    env = home / "venv"
    check(run(sys.executable, "-m", "venv", env, cwd=home, timeout=300))
    pip = [env / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    constraints = ROOT / "constraints.txt"
    # Only local files (pip's find-links, where this machine keeps its torch wheel): if the pinned
    # torch is not on disk this fails at once instead of downloading another multi-GB build.
    check(run(*pip, "install", "--no-index", "--no-deps", "-c", constraints, "torch==2.13.0", cwd=home))
    wheels = [built[name]["wheel"] for name in SOURCES]
    example = built["esper-blueprints-example"]["wheel"]
    requested = [str(w) if w != example else f"{w}[test]" for w in wheels]  # the pack's own test extra
    check(run(*pip, "install", "-c", constraints, *requested, cwd=home))
    return env


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working folder outside the checkout, so nothing is imported from the repository."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    return tmp_path


# ---- the artifacts ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_wheel_and_sdist_carry_metadata_and_license(built, name: str) -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    stem = f"{name.replace('-', '_')}-{version_of(name)}"
    with zipfile.ZipFile(built[name]["wheel"]) as wheel:
        metadata = email.message_from_string(wheel.read(f"{stem}.dist-info/METADATA").decode())
        assert wheel.read(f"{stem}.dist-info/licenses/LICENSE").decode() == license_text
        entry_points = wheel.read(f"{stem}.dist-info/entry_points.txt").decode()
    assert metadata["Name"] == name and metadata["Version"] == version_of(name)
    assert metadata["License-Expression"] == "MIT" and metadata["License-File"] == "LICENSE"
    if name == "esper-core":
        assert "esper = esper_core.cli:main" in entry_points
    else:
        assert "[esper.blueprints]" in entry_points
        assert any(r.startswith("esper-core") and "<0.2" in r for r in metadata.get_all("Requires-Dist"))
    with tarfile.open(built[name]["sdist"]) as sdist:
        members = set(sdist.getnames())
    assert {f"{stem}/LICENSE", f"{stem}/PKG-INFO", f"{stem}/pyproject.toml", f"{stem}/README.md"} <= members
    if name == "esper-core":
        assert f"{stem}/CHANGELOG.md" in members


@pytest.mark.parametrize("name", SOURCES)
def test_each_wheel_holds_every_module_of_its_package(built, name: str) -> None:
    package = PACKAGES[name]
    expected = {
        f"{package.name}/{p.relative_to(package).as_posix()}"
        for p in package.rglob("*")
        if p.is_file() and (p.suffix == ".py" or p.name == "py.typed") and "__pycache__" not in p.parts
    }
    assert f"{package.name}/py.typed" in expected and f"{package.name}/__init__.py" in expected
    with zipfile.ZipFile(built[name]["wheel"]) as wheel:
        packaged = set(wheel.namelist())
    assert expected - packaged == set(), "files missing from the wheel"


# ---- installed into a fresh venv ------------------------------------------------------------


def test_installed_from_wheels_not_editable_with_the_machines_torch(venv: Path, outside: Path) -> None:
    script = (
        "import importlib.metadata as m, json, torch, esper_core;"
        "print(json.dumps({'torch': torch.__version__, 'core': esper_core.__file__,"
        f"'urls': {{d: json.loads(m.distribution(d).read_text('direct_url.json')) for d in {list(SOURCES)!r}}}}}))"
    )
    result = check(run(venv / "bin" / "python", "-c", script, cwd=outside))
    info = json.loads(result.stdout)
    assert info["torch"] == torch.__version__
    assert Path(info["core"]).is_relative_to(venv)
    for name, url in info["urls"].items():
        assert url["url"].endswith(".whl") and "dir_info" not in url, (name, url)  # a wheel, not a checkout
    assert result.stderr == ""  # no warning on import (e.g. torch's missing-numpy warning)


def test_esper_version_names_the_core_and_every_pack(venv: Path, outside: Path) -> None:
    result = check(run(venv / "bin" / "esper", "--version", cwd=outside))
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"esper-core {version_of('esper-core')} (torch {torch.__version__}, Python ")
    assert sorted(lines[1:]) == sorted(f"{name} {version_of(name)}" for name in PACKS)
    assert result.stderr == ""


def test_esper_plugins_loads_every_pack(venv: Path, outside: Path) -> None:
    result = check(run(venv / "bin" / "esper", "plugins", "--json", cwd=outside))
    plugins = {p["distribution"]: p for p in json.loads(result.stdout)}
    assert set(plugins) == set(SOURCES)
    for name, plugin in plugins.items():
        assert plugin["loaded"] and plugin["error"] is None and plugin["version"] == version_of(name)
    assert len(plugins["esper-blueprints-cnn"]["blueprints"]) == 8
    assert len(plugins["esper-blueprints-transformer"]["blueprints"]) == 8
    assert sorted(plugins["esper-blueprints-example"]["blueprints"]) == [
        "cnn:pointwise",
        "transformer:token_shift",
    ]
    assert result.stderr == ""


def test_a_seed_grows_in_an_injected_model(venv: Path, outside: Path) -> None:
    shutil.copy(Path(__file__).with_name("grow_injected.py"), outside)
    result = check(run(venv / "bin" / "python", "grow_injected.py", outside, cwd=outside, timeout=300))
    report = json.loads(result.stdout)
    assert Path(report["esper_core_file"]).is_relative_to(venv)
    cnn = report["cnn"]
    assert cnn["identity_at_birth"] and cnn["seed_params_in_optimizer"]
    assert cnn["stage"] == "FOSSILIZED" and cnn["blueprint"] == "conv_light" and cnn["param_count"] > 0
    assert cnn["events"][:2] == ["GateEvaluated", "SeedGerminated"] and cnn["events"][-1] == "SeedFossilized"
    transformer = report["transformer"]
    assert transformer == {
        "stage": "GERMINATED",
        "identity_at_birth": True,
        "seed_params": transformer["seed_params"],
    }
    assert transformer["seed_params"] > 0
    assert result.stderr == ""


def test_the_example_packs_conformance_test_passes_against_its_wheel(venv: Path, outside: Path) -> None:
    # Only the pack's tests are copied: the pack itself must come from the installed wheel.
    shutil.copytree(SOURCES["esper-blueprints-example"] / "tests", outside / "tests")
    result = run(
        venv / "bin" / "python", "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests",
        cwd=outside, timeout=600, ESPER_LOAD_PLUGINS="esper-blueprints-example", ESPER_STRICT_PLUGINS="1",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test_conformance[cnn:pointwise] PASSED" in output
    assert "test_conformance[transformer:token_shift] PASSED" in output
    assert "2 passed" in output
    probe = check(
        run(
            venv / "bin" / "python",
            "-c",
            "import esper_blueprints_example as m; print(m.__file__)",
            cwd=outside,
        )
    )
    assert Path(probe.stdout.strip()).is_relative_to(venv)
