"""Blueprints for testing the conformance kit: two correct ones and one per fault.

Each broken blueprint is the correct one with exactly one deliberate mistake, so a test
can demand that the kit names that mistake's check (and not a pile of unrelated ones).
Names start with ``kit_`` so they never collide with an installed pack's blueprints.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import nn

from esper_core.options import Option
from esper_core.spec import BlueprintSpec


class Pointwise(nn.Module):
    """The correct CNN seed: x + up(act(down(x))) with 1x1 convs and ``up`` zero at birth."""

    def __init__(self, dim: int, expansion: int = 2, act: str = "gelu") -> None:
        super().__init__()
        self.down = nn.Conv2d(dim, expansion * dim, 1, bias=False)
        self.up = nn.Conv2d(expansion * dim, dim, 1, bias=True)
        self.act = {"gelu": nn.functional.gelu, "tanh": torch.tanh}[act]
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.delta(x)


def pointwise_params(dim: int, expansion: int, act: str) -> int:
    return 2 * expansion * dim * dim + dim


def pointwise_flops(dim: int, input_shape: tuple[int, ...], expansion: int, act: str) -> int:
    batch, _, height, width = input_shape
    return 4 * batch * height * width * expansion * dim * dim


POINTWISE_OPTIONS = (
    Option("expansion", int, 2, "hidden width multiple", minimum=1, maximum=3),
    Option("act", str, "gelu", "activation", choices=("gelu", "tanh")),
)


class TokenMix(nn.Module):
    """The correct transformer seed: a per-token residual projection, zero at birth."""

    def __init__(self, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=bias)
        nn.init.zeros_(self.proj.weight)
        if bias:
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x)


def token_mix_params(dim: int, bias: bool) -> int:
    return dim * dim + (dim if bias else 0)


class CausalAttention(nn.Module):
    """A correct single-head causal attention seed; its FLOPs include attention's products."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)
        attended = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.proj(attended.squeeze(1))


def attention_flops(dim: int, input_shape: tuple[int, ...]) -> int:
    batch, length, _ = input_shape
    projections = 2 * batch * length * dim * (3 * dim + dim)
    products = 2 * 2 * batch * length * length * dim  # q @ k^T and weights @ v
    return projections + products


def cnn_spec(name: str, factory: Callable[..., nn.Module] = Pointwise, **changes: Any) -> BlueprintSpec:
    fields: dict[str, Any] = {
        "name": name,
        "topology": "cnn",
        "factory": factory,
        "param_count": pointwise_params,
        "flop_count": pointwise_flops,
        "description": "conformance-kit test blueprint",
        "options": POINTWISE_OPTIONS,
    }
    fields.update(changes)
    return BlueprintSpec(**fields)


def seq_spec(name: str, factory: Callable[..., nn.Module] = TokenMix, **changes: Any) -> BlueprintSpec:
    fields: dict[str, Any] = {
        "name": name,
        "topology": "transformer",
        "factory": factory,
        "param_count": token_mix_params,
        "description": "conformance-kit test blueprint",
        "options": (Option("bias", bool, True, "projection bias"),),
    }
    fields.update(changes)
    return BlueprintSpec(**fields)


# ---- one fault each ------------------------------------------------------------------------


def off_by_one_at_odd_dims(dim: int, expansion: int, act: str) -> int:
    return pointwise_params(dim, expansion, act) + dim % 2


class NotIdentity(Pointwise):
    def __init__(self, dim: int, **options: Any) -> None:
        super().__init__(dim, **options)
        nn.init.normal_(self.up.weight, std=0.1)  # forgot to zero the output layer


class ChangesShape(Pointwise):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.delta(x))[:, :, :-1]  # drops the last row


class DeadParameter(Pointwise):
    def __init__(self, dim: int, **options: Any) -> None:
        super().__init__(dim, **options)
        self.spare = nn.Parameter(torch.zeros(1))  # left over, never used in forward


def dead_parameter_params(dim: int, expansion: int, act: str) -> int:
    return pointwise_params(dim, expansion, act) + 1


class BreaksChannelsLast(Pointwise):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.view(b, c * h * w)  # view() needs contiguous memory: fails on channels_last
        return x + self.delta(flat.view(b, c, h, w))


class LosesChannelsLast(Pointwise):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.delta(x)).contiguous()


@attrs.frozen
class LenientSpec(BlueprintSpec):
    """A spec that drops options it does not know instead of rejecting them."""

    def resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {o.name: o.validate(options.get(o.name, o.default)) for o in self.options}


_counter = itertools.count()


class UnstableKeys(Pointwise):
    def __init__(self, dim: int, **options: Any) -> None:
        super().__init__(dim, **options)
        # a module name from a global counter: every construction gets new state_dict keys
        self.add_module(f"extra{next(_counter)}", nn.Identity())
        self.register_buffer(f"scale{next(_counter)}", torch.ones(1))


class NonPersistentState(Pointwise):
    def __init__(self, dim: int, **options: Any) -> None:
        super().__init__(dim, **options)
        # random, used in forward, but not saved: a reloaded copy computes something else
        self.register_buffer("mix", torch.rand(dim, 1, 1) + 0.5, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.delta(x) * self.mix


class NotCausal(TokenMix):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x.mean(dim=1, keepdim=True))  # every token sees the whole sequence


class GraphBreak(Pointwise):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._dynamo.graph_break()
        return super().forward(x)


class ForcesFloat32(Pointwise):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() + self.delta(x).float()


class RejectsOddDimsLate(Pointwise):
    def __init__(self, dim: int, **options: Any) -> None:
        if dim % 2:
            raise ValueError(f"dim must be even, got {dim}")  # undeclared: should be spec.validate
        super().__init__(dim, **options)


class MutatesInput(Pointwise):
    """Issue 15 item 9's blueprint: ``x + delta(relu_(x))``, the delta zero at birth.

    Python reads ``x`` before the in-place ReLU runs, but the addition sees the rewritten
    tensor, so the output equals the (changed) input exactly: identity checks that compare
    with the input after the call pass it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.delta(torch.relu_(x))


class PlainGroupNormOnInput(nn.Module):
    """``x + scale * (GroupNorm(x) - x)`` with a plain ``nn.GroupNorm`` on the seed input: its
    backward segfaults on a channels_last input that does not require grad (torch 2.13)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, dim)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * (self.norm(x) - x)


def validate_with_value_error(dim: int, **options: Any) -> None:
    if dim % 2:
        raise ValueError(f"odd dim {dim}")  # should be OptionError, naming what is accepted


def _multi_fault_factory(dim: int, **options: Any) -> nn.Module:
    return UnstableDead(dim, **options)


class UnstableDead(DeadParameter):
    def __init__(self, dim: int, **options: Any) -> None:
        super().__init__(dim, **options)
        self.register_buffer(f"scale{next(_counter)}", torch.ones(1))


GOOD: dict[str, BlueprintSpec] = {
    "kit_good_cnn": cnn_spec("kit_good_cnn"),
    "kit_good_seq": seq_spec("kit_good_seq"),
    "kit_good_attention": seq_spec(
        "kit_good_attention",
        CausalAttention,
        param_count=lambda dim: 4 * dim * dim,
        flop_count=attention_flops,
        options=(),
    ),
}

BROKEN: dict[str, BlueprintSpec] = {
    "kit_off_by_one": cnn_spec("kit_off_by_one", param_count=off_by_one_at_odd_dims),
    "kit_not_identity": cnn_spec("kit_not_identity", NotIdentity),
    "kit_changes_shape": cnn_spec("kit_changes_shape", ChangesShape),
    "kit_dead_parameter": cnn_spec("kit_dead_parameter", DeadParameter, param_count=dead_parameter_params),
    "kit_breaks_channels_last": cnn_spec("kit_breaks_channels_last", BreaksChannelsLast),
    "kit_loses_channels_last": cnn_spec("kit_loses_channels_last", LosesChannelsLast),
    "kit_ignores_unknown_option": LenientSpec(
        name="kit_ignores_unknown_option",
        topology="cnn",
        factory=Pointwise,
        param_count=pointwise_params,
        description="conformance-kit test blueprint",
        options=POINTWISE_OPTIONS,
    ),
    "kit_unstable_keys": cnn_spec("kit_unstable_keys", UnstableKeys),
    "kit_non_persistent_state": cnn_spec("kit_non_persistent_state", NonPersistentState),
    "kit_wrong_flops": cnn_spec(
        "kit_wrong_flops", flop_count=lambda d, s, **o: pointwise_flops(d, s, **o) // 2
    ),
    "kit_not_causal": seq_spec("kit_not_causal", NotCausal),
    "kit_graph_break": cnn_spec("kit_graph_break", GraphBreak),
    "kit_forces_float32": cnn_spec("kit_forces_float32", ForcesFloat32),
    "kit_rejects_odd_dims_late": cnn_spec("kit_rejects_odd_dims_late", RejectsOddDimsLate),
    "kit_validate_raises_value_error": cnn_spec(
        "kit_validate_raises_value_error", validate=validate_with_value_error
    ),
    "kit_unknown_topology": cnn_spec("kit_unknown_topology", topology="no_such_topology"),
    "kit_mutates_input": cnn_spec("kit_mutates_input", MutatesInput),
    "kit_groupnorm_backward_crash": cnn_spec(
        "kit_groupnorm_backward_crash",
        PlainGroupNormOnInput,
        param_count=lambda dim: 2 * dim + 1,
        flop_count=None,
        options=(),
    ),
    "kit_three_faults": cnn_spec(
        "kit_three_faults",
        _multi_fault_factory,
        param_count=lambda d, **o: dead_parameter_params(d, **o) + d % 2,
    ),
}

SPECS = {**GOOD, **BROKEN}
