"""Toy blueprints and helpers for shipping a grown model: fold, export, seed-only checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from esper_core.alpha import BlendAlgorithm
from esper_core.gates import QualityGates
from esper_core.registry import temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage

S = SeedStage


class AffineToken(nn.Module):
    """``x + fc(x)``: affine along the features, and says so (``affine_form``)."""

    def __init__(self, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim, bias=bias)
        nn.init.zeros_(self.fc.weight)
        if bias:
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)

    def affine_form(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        eye = torch.eye(self.fc.weight.shape[0], dtype=self.fc.weight.dtype)
        bias = None if self.fc.bias is None else self.fc.bias.detach()
        return eye + self.fc.weight.detach(), bias


class AffineConv(nn.Module):
    """``x + conv1x1(x)``, declared affine over channels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)

    def affine_form(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.conv.weight.detach()[:, :, 0, 0]
        return torch.eye(w.shape[0]) + w, self.conv.bias.detach()


class NoisyConv(nn.Module):
    """``x + dropout(conv3x3(x))``: not affine in eval? It is, but it does not declare it; and
    in train mode it draws random numbers, so equal outputs need equal RNG use."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.conv(x))


class MixToken(nn.Module):
    """``x + fc(running mean of x over earlier positions)``: causal, but mixes positions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, 1)
        return x + self.fc(x.cumsum(dim=1) / counts)


class MLPToken(nn.Module):
    """``x + fc2(gelu(fc1(x)))`` with dropout: position-wise, not affine."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.drop = nn.Dropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.fc2(torch.nn.functional.gelu(self.fc1(x))))


SPECS = (
    BlueprintSpec("ship_affine", "transformer", AffineToken, lambda d: d * d + d, "test", position_wise=True),
    BlueprintSpec(
        "ship_affine_nobias",
        "transformer",
        lambda d: AffineToken(d, bias=False),
        lambda d: d * d,
        "test",
        position_wise=True,
    ),
    BlueprintSpec(
        "ship_mlp", "transformer", MLPToken, lambda d: 4 * d * d + 3 * d, "test", position_wise=True
    ),
    BlueprintSpec("ship_mix", "transformer", MixToken, lambda d: d * d + d, "test", position_wise=False),
    BlueprintSpec("ship_undeclared", "transformer", MLPToken, lambda d: 4 * d * d + 3 * d, "test"),
    BlueprintSpec("ship_affine_conv", "cnn", AffineConv, lambda d: d * d + d, "test"),
    BlueprintSpec("ship_noisy_conv", "cnn", NoisyConv, lambda d: 9 * d * d + d, "test"),
)


@pytest.fixture(autouse=True)
def ship_blueprints() -> Iterator[None]:
    with temporary_blueprints(*SPECS, distribution="shipping-tests"):
        yield


@pytest.fixture
def permissive() -> QualityGates:
    return QualityGates("permissive")


def grow(
    slot: SeedSlot,
    blueprint: str,
    target: SeedStage = SeedStage.FOSSILIZED,
    *,
    algorithm: BlendAlgorithm = BlendAlgorithm.ADD,
    seed: int = 0,
) -> None:
    """Germinate ``blueprint`` and walk it to ``target`` under permissive gates, then give every
    seed (and blend gate) parameter random values so the seed is far from the identity."""
    slot.germinate(blueprint, algorithm=algorithm, ramp_epochs=2)
    for _ in range(40):
        if slot.stage is target:
            break
        slot.record_accuracy(50.0)
        if slot.stage in (SeedStage.BLENDING, SeedStage.HOLDING) and slot.alpha > 0:
            slot.record_counterfactual(1.0)
        if slot.evaluate().passed:
            slot.advance()
        if slot.stage is not target:
            slot.step_epoch()
    assert slot.stage is target, slot.stage
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def run_without_esper(script: str, cwd: Path, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter that has torch but cannot import Esper or its packs.

    ``-I -S``: no user site, no ``site`` processing, so the editable installs' ``.pth`` files
    (which is how the venv sees Esper) are never read; the venv's site-packages is put on
    ``sys.path`` by hand, which gives torch and numpy. The script starts by proving Esper and
    the packs cannot be found (and neither can transformers, blocked by a meta-path finder).
    """
    site_packages = sysconfig.get_paths()["purelib"]
    prelude = (
        "import sys, importlib.util, importlib.abc\n"
        f"sys.path.append({site_packages!r})\n"
        "class _Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('transformers', 'peft'):\n"
        "            raise ImportError(f'{name} is blocked in this process')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Block())\n"
        "for _name in ('esper_core', 'esper_blueprints_cnn', 'esper_blueprints_transformer'):\n"
        "    assert importlib.util.find_spec(_name) is None, f'{_name} is importable'\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
