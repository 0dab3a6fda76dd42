"""Helpers for registry and plugin-loader tests: fake distributions and entry points, and
really pip-installed fixture packs used from child processes."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import torch
from torch import nn

from esper_core import registry as registry_module
from esper_core.hookspecs import hookimpl
from esper_core.options import Option
from esper_core.spec import BlueprintSpec


@attrs.define
class FakeDist:
    name: str
    version: str

    @property
    def metadata(self) -> dict[str, str]:
        return {"Name": self.name}


@attrs.define
class FakeEntryPoint:
    """Quacks like importlib.metadata.EntryPoint for the loader."""

    name: str
    value: str
    dist: FakeDist
    loader: Callable[[], object]
    group: str = "esper.blueprints"

    def load(self) -> object:
        return self.loader()


class Scale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.gain.view(1, -1, *([1] * (x.dim() - 2))))


def scale_spec(name: str = "scale", topology: str = "cnn", **kwargs: object) -> BlueprintSpec:
    return BlueprintSpec(
        name=name,
        topology=topology,
        factory=lambda dim, **_: Scale(dim),
        param_count=lambda dim, **_: dim,
        description="per-channel gain",
        **kwargs,
    )


def widened_spec() -> BlueprintSpec:
    calls: list[tuple] = []

    def factory(dim: int, width: int) -> nn.Module:
        calls.append((dim, width))
        return nn.Linear(dim, width)

    spec = BlueprintSpec(
        name="wide",
        topology="transformer",
        factory=factory,
        param_count=lambda dim, width: dim * width + width,
        description="a linear map",
        options=(Option("width", int, 4, "output width", minimum=1),),
    )
    spec.factory.calls = calls  # type: ignore[attr-defined]
    return spec


def plugin_module(name: str, **hooks: Callable) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def blueprints_plugin(name: str, *specs: BlueprintSpec) -> types.ModuleType:
    def esper_register_blueprints(register):
        for spec in specs:
            register(spec)

    return plugin_module(name, esper_register_blueprints=esper_register_blueprints)


@pytest.fixture
def fake_packs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Install fake entry points, then rebuild the registry from them."""

    def install(*entries: FakeEntryPoint) -> None:
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: list(entries))
        registry_module.reset_registry()

    monkeypatch.delenv("ESPER_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("ESPER_LOAD_PLUGINS", raising=False)
    yield install
    registry_module.reset_registry()


def entry(dist: str, module: object, version: str = "1.0", name: str = "main") -> FakeEntryPoint:
    return FakeEntryPoint(
        name=name, value=f"{dist}.plugin", dist=FakeDist(dist, version), loader=lambda: module
    )


@pytest.fixture
def fakes() -> types.SimpleNamespace:
    """The helpers above, for test modules (importlib import mode forbids importing conftest)."""
    return types.SimpleNamespace(
        entry=entry,
        scale_spec=scale_spec,
        widened_spec=widened_spec,
        plugin_module=plugin_module,
        blueprints_plugin=blueprints_plugin,
    )


# ---- really installed fixture packs, used from child processes ---------------------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ISOLATION_PACKS = (
    "esper-fixture-exit-import",
    "esper-fixture-exit-hook",
    "esper-fixture-exit-sink",
    "esper-fixture-reenter-import",
    "esper-fixture-reenter-hook",
    "esper-fixture-bad-counts",
    "esper-fixture-bad-factories",
    "esper-blueprints-aaa-clash",
    "esper-fixture-topology-clash",
    "esper-fixture-good",
    "esper-fixture-collide-a",
    "esper-fixture-collide-b",
)
CHILD_TIMEOUT_S = 240  # a hang (say, a deadlock in the loader) fails the test, not the run


def pip_install(packs: tuple[str, ...], target: Path, scratch: Path) -> None:
    """``pip install --target`` copies of fixture packs (copies: builds leave nothing in tests/)."""
    sources = []
    for pack in packs:
        source = scratch / pack
        shutil.copytree(
            FIXTURES / pack, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        )
        sources.append(str(source))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), *sources],
        check=True,
        capture_output=True,
        timeout=600,
    )  # fmt: skip


@attrs.define
class Child:
    """Runs Python or the ``esper`` CLI in a child process that sees ``sites`` as installed."""

    sites: tuple[Path, ...]

    def env(self, **extra: str) -> dict[str, str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ESPER_")}
        environment["PYTHONPATH"] = os.pathsep.join(
            [*map(str, self.sites), environment.get("PYTHONPATH", "")]
        )
        environment.update(extra)
        return environment

    def python(self, code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            env=self.env(**env),
            timeout=CHILD_TIMEOUT_S,
        )

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.python("import sys; from esper_core.cli import main; sys.exit(main())", *args, **env)

    def json(self, code: str, **env: str) -> object:
        """Run ``code``, which prints one JSON document last; return it (the run must succeed)."""
        result = self.python(code, **env)
        assert result.returncode == 0, result.stderr[-4000:]
        return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def isolation_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every broken and clashing fixture pack, pip-installed together into one folder."""
    target = tmp_path_factory.mktemp("isolation-site")
    pip_install(ISOLATION_PACKS, target, tmp_path_factory.mktemp("isolation-src"))
    return target


@pytest.fixture(scope="session")
def child(isolation_site: Path) -> Child:
    return Child((isolation_site,))


@pytest.fixture(scope="session")
def install(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``install(*packs)`` pip-installs fixture packs into a new folder and returns it."""

    def run(*packs: str) -> Path:
        target = tmp_path_factory.mktemp("site")
        pip_install(packs, target, tmp_path_factory.mktemp("src"))
        return target

    return run


@pytest.fixture(scope="session")
def child_for() -> Callable[..., Child]:
    """``child_for(*sites)``: a :class:`Child` that sees ``sites`` on its path, in that order."""
    return lambda *sites: Child(tuple(sites))
