"""SeedConvBlock and SeedGroupNorm: the pack's reusable building blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esper_blueprints_cnn import SeedConvBlock, SeedGroupNorm, get_num_groups, seed_conv_block_params
from esper_core import RegistryError


@pytest.mark.parametrize(("c_in", "c_out", "kernel"), [(1, 1, 1), (3, 8, 3), (8, 3, 5), (16, 32, 3)])
def test_block_param_count_and_shape(c_in: int, c_out: int, kernel: int, generator: torch.Generator) -> None:
    block = SeedConvBlock(c_in, c_out, kernel)
    assert sum(p.numel() for p in block.parameters()) == seed_conv_block_params(c_in, c_out, kernel)
    assert block.gn.num_groups == get_num_groups(c_out)
    out = block(torch.randn(2, c_in, 5, 6, generator=generator))
    assert out.shape == (2, c_out, 5, 6)
    assert bool((out >= 0).all())  # ends in ReLU by default


def test_zero_init_block_outputs_exact_zero(generator: torch.Generator) -> None:
    block = SeedConvBlock(4, 6, activation=False, zero_init=True)
    out = block(torch.randn(2, 4, 5, 5, generator=generator))
    assert bool((out == 0).all())
    with torch.no_grad():
        block.gn.weight.fill_(1.0)
    assert not bool((block(torch.randn(2, 4, 5, 5, generator=generator)) == 0).all())
    block.reset_parameters()
    assert bool((block.gn.weight == 0).all())


def test_zero_init_with_relu_is_refused() -> None:
    with pytest.raises(RegistryError, match="activation=False"):
        SeedConvBlock(4, 4, zero_init=True)


@pytest.mark.parametrize("kernel", [0, 2, 4, -1, 3.0, True])
def test_bad_kernel_sizes_are_refused(kernel: object) -> None:
    with pytest.raises(RegistryError, match="kernel_size"):
        SeedConvBlock(4, 4, kernel)  # type: ignore[arg-type]


@pytest.mark.parametrize(("c_in", "c_out"), [(0, 4), (4, 0), (True, 4)])
def test_bad_channel_counts_are_refused(c_in: object, c_out: object) -> None:
    with pytest.raises(RegistryError, match="channels"):
        SeedConvBlock(c_in, c_out)  # type: ignore[arg-type]


@pytest.mark.parametrize("channels", [1, 2, 8])
def test_group_norm_accepts_one_value_per_group(channels: int) -> None:
    # nn.GroupNorm raises "Expected more than 1 value per channel" here.
    norm = SeedGroupNorm(channels)
    with torch.no_grad():
        norm.bias.copy_(torch.arange(channels, dtype=torch.float32))
    out = norm(torch.randn(1, channels, 1, 1))
    # A single value normalises to 0 up to rounding (which 1/sqrt(eps) amplifies), so the
    # output is the bias.
    torch.testing.assert_close(out, norm.bias.view(1, channels, 1, 1).detach(), rtol=0, atol=1e-4)


def test_group_norm_matches_torch(generator: torch.Generator) -> None:
    ours, reference = SeedGroupNorm(48), nn.GroupNorm(get_num_groups(48), 48)
    with torch.no_grad():
        for param in (*ours.parameters(), *reference.parameters()):
            param.copy_(torch.linspace(-1, 1, 48))
    x = torch.randn(2, 48, 5, 3, generator=generator)
    assert torch.equal(ours(x), reference(x))
    assert ours.state_dict().keys() == reference.state_dict().keys()


def test_zero_gain_group_norm() -> None:
    norm = SeedGroupNorm(16, zero_gain=True)
    assert bool((norm.weight == 0).all()) and bool((norm.bias == 0).all())
    with torch.no_grad():
        norm.weight.fill_(2.0)
    norm.reset_parameters()
    assert bool((norm.weight == 0).all())
    assert bool((SeedGroupNorm(16).weight == 1).all())
