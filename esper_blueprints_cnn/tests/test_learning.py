"""Every parameter learns, and the first step's gradient is not amplified.

At birth some parameters sit behind a factor that is exactly 0 (the zero GroupNorm gain, the
zero last layer of the excitation MLP, ``tanh(0)`` of the norm blend), so their gradient is
0 on the first step. That is by design; what must hold is that the zero factor itself gets
a gradient, so that from the second step on every parameter does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from esper_blueprints_cnn import SeedGroupNorm


def train_steps(
    module: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, target: torch.Tensor, steps: int
) -> list[set[str]]:
    """Run ``steps`` MSE steps; return, per step, the names of parameters with a nonzero grad."""
    nonzero = []
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(module(x), target).backward()
        nonzero.append(
            {name for name, p in module.named_parameters() if p.grad is not None and bool(p.grad.any())}
        )
        optimizer.step()
    return nonzero


@pytest.mark.parametrize("dim", [1, 3, 16])
def test_every_parameter_changes_within_three_adam_steps(
    learnable: str, dim: int, build: Callable, generator: torch.Generator
) -> None:
    module = build(learnable, dim)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    x = torch.randn(4, dim, 6, 5, generator=generator)
    target = torch.randn(4, dim, 6, 5, generator=generator)
    train_steps(module, torch.optim.Adam(module.parameters(), lr=1e-2), x, target, steps=3)
    unchanged = [name for name, p in module.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []


def test_every_parameter_has_gradient_by_the_second_sgd_step(
    learnable: str, build: Callable, generator: torch.Generator
) -> None:
    # Optimizer-independent form: with plain SGD, step 1 or step 2 gives every parameter a
    # nonzero gradient, and step 2 gives one to all of them.
    module = build(learnable, 16)
    x = torch.randn(4, 16, 6, 5, generator=generator)
    target = torch.randn(4, 16, 6, 5, generator=generator)
    first, second = train_steps(module, torch.optim.SGD(module.parameters(), lr=0.1), x, target, steps=2)
    names = {name for name, _ in module.named_parameters()}
    assert first, "the zero factor must get a gradient at birth"
    assert second == names


def test_learning_works_with_channels_last_input(
    learnable: str, build: Callable, generator: torch.Generator
) -> None:
    # The input requires grad: GroupNorm's backward segfaults on a *detached* channels_last
    # input (KNOWN-ISSUES); that case is covered in a child process in test_channels_last.py.
    module = build(learnable, 16)
    x = torch.randn(2, 16, 5, 7, generator=generator).to(memory_format=torch.channels_last).requires_grad_()
    target = torch.randn(2, 16, 5, 7, generator=generator)
    _, second = train_steps(module, torch.optim.SGD(module.parameters(), lr=0.1), x, target, steps=2)
    assert second == {name for name, _ in module.named_parameters()}


# The bound of docs/blueprints-cnn.md: on the documented probe, the parameter gradient is at
# most 2 * sqrt(H * W) times the output gradient. A per-channel gain legitimately sums its
# gradient over the H * W positions of a map, hence the sqrt(H * W).


def bound(probe_shape: tuple[int, int, int, int]) -> float:
    return 2.0 * math.sqrt(probe_shape[2] * probe_shape[3])


def probe(probe_shape: tuple[int, ...], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(probe_shape, generator=generator), torch.randn(probe_shape, generator=generator)


def test_first_step_gradient_is_bounded(
    learnable: str,
    build: Callable,
    grad_amplification: Callable,
    probe_shape: tuple,
    generator: torch.Generator,
) -> None:
    module = build(learnable, probe_shape[1])
    x, target = probe(probe_shape, generator)
    amplification = grad_amplification(module, x, target)
    assert 0.0 < amplification <= bound(probe_shape)


class LegacyBottleneck(nn.Module):
    """The earlier bottleneck's birth state: zero ``up`` conv feeding a unit-gain GroupNorm."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, hidden, 1, bias=False)
        self.up = nn.Conv2d(hidden, channels, 1, bias=False)
        nn.init.zeros_(self.up.weight)
        self.gn = SeedGroupNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gn(self.up(torch.relu(self.down(x))))


def test_bound_catches_groupnorm_of_a_zero_tensor(
    grad_amplification: Callable, probe_shape: tuple, generator: torch.Generator
) -> None:
    # The same measurement flags the 1/sqrt(eps) spike the blueprints avoid.
    module = LegacyBottleneck(probe_shape[1], 16)
    x, target = probe(probe_shape, generator)
    assert torch.equal(module(x), x)
    assert grad_amplification(module, x, target) > 5 * bound(probe_shape)
