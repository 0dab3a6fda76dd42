"""The blueprint under test, its topology and sweep, and deterministic inputs for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn

from esper_core.spec import BlueprintSpec
from esper_core.testing.plan import Plan
from esper_core.topology import Topology

__all__ = ["BATCH", "Subject", "perturb_"]

BATCH = 2
"""Two samples: enough to catch code that mixes samples, small enough to stay fast."""


@attrs.frozen
class Subject:
    """Everything a check needs. Inputs come from the spec's own topology so a
    third-party topology is exercised with its own layout, not a guessed one."""

    spec: BlueprintSpec
    topology: Topology
    plan: Plan

    def input(self, dim: int, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return self.topology.example_input(dim, BATCH, dtype=dtype, generator=generator)

    def build(self, dim: int, options: Mapping[str, Any], *, seed: int = 0) -> nn.Module:
        """Build through the spec's validating path with a fixed init seed."""
        torch.manual_seed(seed)
        return self.spec.build(dim, **options)  # BlueprintError if it is not an nn.Module

    def accepts(self, dim: int, options: Mapping[str, Any]) -> bool:
        """Whether the spec declares (dim, options) valid.

        A declared rejection is a RegistryError (OptionError); a BlueprintError (the spec's
        ``validate`` raised something else) or any other exception propagates, because it is
        a fault the caller must report.
        """
        from esper_core.errors import BlueprintError, RegistryError

        try:
            self.spec.resolve(dim, options)
        except BlueprintError:
            raise
        except RegistryError:
            return False
        return True


@torch.no_grad()
def perturb_(module: nn.Module, *, seed: int = 5, scale: float = 0.1) -> nn.Module:
    """Add small noise to every floating entry of the state_dict, in place.

    A seed at birth is the identity, so two different seeds give the same output; after
    this, outputs depend on the weights and comparisons (round trip, compile, layouts)
    mean something.
    """
    generator = torch.Generator().manual_seed(seed)
    for tensor in module.state_dict().values():
        if tensor.is_floating_point() and tensor.device.type != "meta":
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            tensor.add_(noise.to(tensor.dtype) * scale)
    return module
