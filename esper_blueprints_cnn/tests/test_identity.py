"""Every blueprint is exactly the identity when built, and keeps shape, dtype and layout."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

# (B, C, H, W): C = 1 and 1 x 1 maps, batch 1 with one value per GroupNorm group (C = 2 and
# 8 have one channel per group), odd and prime widths, thin maps, and the reference width.
SHAPES = [
    (2, 1, 5, 7),
    (1, 1, 1, 1),
    (1, 2, 1, 1),
    (3, 3, 1, 4),
    (1, 8, 1, 1),
    (2, 8, 9, 1),
    (2, 17, 5, 7),
    (2, 64, 3, 3),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_exact_identity_at_birth(
    blueprint: str, shape: tuple[int, int, int, int], build: Callable, generator: torch.Generator
) -> None:
    batch, dim, height, width = shape
    module = build(blueprint, dim)
    x = torch.randn(batch, dim, height, width, generator=generator)
    for mode in (module.train(), module.eval()):
        y = mode(x)
        assert y.shape == x.shape
        assert torch.equal(y, x), float((y - x).abs().max())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_identity_and_dtype_in_other_precisions(
    blueprint: str, dtype: torch.dtype, build: Callable, generator: torch.Generator
) -> None:
    module = build(blueprint, 16).to(dtype)
    x = torch.randn(2, 16, 4, 5, generator=generator).to(dtype)
    y = module(x)
    assert y.dtype == dtype
    assert torch.equal(y, x)


@pytest.mark.parametrize("dim", [3, 16])
def test_channels_last_is_preserved(
    blueprint: str, dim: int, build: Callable, generator: torch.Generator
) -> None:
    module = build(blueprint, dim)
    x = torch.randn(2, dim, 5, 7, generator=generator).to(memory_format=torch.channels_last)
    y = module(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, x)


def perturb(module: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=generator))


def test_channels_last_matches_contiguous_after_training(
    blueprint: str, build: Callable, generator: torch.Generator
) -> None:
    # Once the seed is no longer the identity, both layouts must still compute the same map.
    module = build(blueprint, 16)
    perturb(module, generator)
    x = torch.randn(2, 16, 6, 5, generator=generator)
    y = module(x)
    y_last = module(x.to(memory_format=torch.channels_last))
    assert y_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_last, y, rtol=1e-5, atol=1e-5)


def test_perturbed_seed_is_no_longer_identity(
    learnable: str, build: Callable, generator: torch.Generator
) -> None:
    # Guards the identity tests: the modules compute something once their parameters move.
    module = build(learnable, 16)
    perturb(module, generator)
    x = torch.randn(2, 16, 6, 5, generator=generator)
    assert not torch.equal(module(x), x)


def test_reset_parameters_restores_identity(
    learnable: str, build: Callable, generator: torch.Generator
) -> None:
    module = build(learnable, 16)
    perturb(module, generator)
    module.reset_parameters()
    x = torch.randn(2, 16, 6, 5, generator=generator)
    assert torch.equal(module(x), x)


def test_state_dict_round_trip(blueprint: str, build: Callable, generator: torch.Generator) -> None:
    trained = build(blueprint, 12)
    perturb(trained, generator)
    fresh = build(blueprint, 12)
    fresh.load_state_dict(trained.state_dict())
    x = torch.randn(2, 12, 4, 4, generator=generator)
    assert torch.equal(fresh(x), trained(x))


def test_blend_operators_are_exact_at_birth(
    blueprint: str, build: Callable, generator: torch.Generator
) -> None:
    # The three blend algorithms of the core, written out: each is the host exactly when
    # seed(h) == h, for any alpha and gate, because the seed itself is the identity.
    module = build(blueprint, 8)
    host = torch.randn(3, 8, 4, 4, generator=generator)
    seed = module(host)
    alpha = torch.rand(3, 1, 1, 1, generator=generator)
    gate = torch.rand(3, 1, 1, 1, generator=generator)
    assert torch.equal(host + alpha * (seed - host), host)
    assert torch.equal(host * (1 + alpha * torch.tanh(seed - host)), host)
    assert torch.equal(host + alpha * gate * (seed - host), host)
