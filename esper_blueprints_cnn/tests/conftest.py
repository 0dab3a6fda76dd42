"""Shared helpers for the CNN pack's tests.

Tests reach the blueprints through the core registry, exactly as a user would, so they also
prove that the entry point loads. Helpers live here (not in a test module) so the tests run
under ``--import-mode=importlib``.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

import esper_core

BLUEPRINTS = (
    "noop",
    "norm",
    "attention",
    "depthwise",
    "bottleneck",
    "conv_small",
    "conv_light",
    "conv_heavy",
)
WITH_REDUCTION = ("attention", "bottleneck")

#: The documented gradient probe: batch 8, C = 64, 8 x 8 maps, N(0, 1) input and target, MSE.
PROBE_SHAPE = (8, 64, 8, 8)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize by argument name: ``blueprint`` (all eight), ``reducible`` (those with a
    ``reduction`` option), ``learnable`` (those with parameters)."""
    groups = {
        "blueprint": BLUEPRINTS,
        "reducible": WITH_REDUCTION,
        "learnable": tuple(name for name in BLUEPRINTS if name != "noop"),
    }
    for argument, names in groups.items():
        if argument in metafunc.fixturenames:
            metafunc.parametrize(argument, names)


def _build(name: str, dim: int, **options: object) -> nn.Module:
    return esper_core.create_blueprint("cnn", name, dim, **options)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _grad_amplification(module: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """``||dL/dtheta|| / ||dL/dy||`` for MSE loss: how much a seed amplifies the output gradient.

    Dimensionless, so it does not depend on how the loss is scaled. A GroupNorm fed an
    all-zero tensor shows up here as a factor of ~1/sqrt(eps).
    """
    out = module(x)
    loss = nn.functional.mse_loss(out, target)
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, [out, *params], allow_unused=True)
    param_norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads[1:] if g is not None))
    return param_norm / float(grads[0].norm())


def _run_python(code: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, so a segfault fails one test instead of the run."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def build() -> Callable[..., nn.Module]:
    """``build(name, dim, **options)``: a blueprint built through the core registry."""
    return _build


@pytest.fixture
def numel() -> Callable[[nn.Module], int]:
    """``numel(module)``: total parameter count of a built module."""
    return _numel


@pytest.fixture
def grad_amplification() -> Callable[[nn.Module, torch.Tensor, torch.Tensor], float]:
    return _grad_amplification


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    return _run_python


@pytest.fixture
def probe_shape() -> tuple[int, int, int, int]:
    return PROBE_SHAPE


@pytest.fixture(autouse=True)
def _deterministic_torch() -> Iterator[None]:
    """Seed torch's global RNG (used by layer init) per test, restoring it afterwards, so a
    test's outcome never depends on which tests ran before it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
