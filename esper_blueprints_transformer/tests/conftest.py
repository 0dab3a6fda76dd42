"""Shared cases and helpers of the transformer pack's tests.

The suite runs under ``--import-mode=importlib``, where test modules cannot import this
file, so everything shared is offered as fixtures, and the blueprint cases are injected by
:func:`pytest_generate_tests` into any test that asks for ``case`` or ``name``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor, nn

from esper_core import BlueprintSpec, get_blueprint

TOPOLOGY = "transformer"
NAMES = ("noop", "norm", "lora", "lora_large", "attention", "mlp_small", "mlp", "flex_attention")
# Small enough to be fast, divisible by every head count the cases use.
DIM = 8


class Case(NamedTuple):
    """One blueprint with one set of options, as a test parameter."""

    name: str
    options: dict[str, Any]

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}[{opts}]" if opts else self.name


CASES = (
    Case("noop", {}),
    Case("norm", {}),
    Case("lora", {}),
    Case("lora", {"rank": 3}),
    Case("lora_large", {}),
    Case("attention", {}),
    Case("attention", {"n_head": 1}),
    Case("attention", {"n_head": 8}),
    Case("mlp_small", {}),
    Case("mlp", {}),
    Case("mlp", {"expansion": 1}),
    Case("mlp", {"checkpoint": True}),
    Case("flex_attention", {}),
    Case("flex_attention", {"n_head": 2}),
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", CASES, ids=[c.id for c in CASES])
    if "name" in metafunc.fixturenames:
        metafunc.parametrize("name", NAMES)


@pytest.fixture
def dim() -> int:
    return DIM


@pytest.fixture
def spec_of() -> Callable[[str], BlueprintSpec]:
    """Look a blueprint up through the registry, i.e. through the pack's entry point."""
    return lambda name: get_blueprint(TOPOLOGY, name)


def _scramble(module: nn.Module, *, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Overwrite every parameter with random values so no zero-init hides a behaviour."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            param.copy_(noise.to(param.dtype) * scale)
    return module


@pytest.fixture
def scramble() -> Callable[..., nn.Module]:
    return _scramble


def _sequence(
    dim: int, *, batch: int = 2, seq_len: int = 6, seed: int = 1, dtype: torch.dtype = torch.float32
) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, seq_len, dim, generator=generator).to(dtype)


@pytest.fixture
def sequence() -> Callable[..., Tensor]:
    """A standard-normal ``(B, T, D)`` tensor, reproducible from ``seed``."""
    return _sequence


@pytest.fixture
def build(spec_of: Callable[[str], BlueprintSpec]) -> Callable[..., nn.Module]:
    """Build a blueprint through its validated spec, with a fixed torch seed."""

    def _build(name: str, dim: int = DIM, **options: Any) -> nn.Module:
        torch.manual_seed(0)
        return spec_of(name).build(dim, **options)

    return _build
