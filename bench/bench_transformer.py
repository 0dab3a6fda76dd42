"""Transformer blueprint pack: the cost of FlexAttention's fallback, and of counting vs building.

1. ``flex_attention`` on its SDPA path vs the ``attention`` blueprint, one training step
   (forward and backward) at D=384, T=256, batch 4, fp32 on CPU, with identical weights.
   On CPU with grad the flex seed must fall back to causal SDPA; the ratio shows what the
   fallback's bookkeeping (the kernel predicate, the subclass hook) costs on top of plain
   attention. Target: at most 5 % slower.
2. ``param_count("transformer", "mlp", 4096)`` vs building the module: the reason rent is
   charged from a closed form. Reported as build time / count time. Target: >= 1000x.
"""

from __future__ import annotations

import torch

from bench._harness import Benchmark, Measurement, compare
from esper_core import create_blueprint
from esper_core.registry import param_count

_D, _T, _BATCH, _HEADS = 384, 256, 4, 6


def _training_step(module: torch.nn.Module, x: torch.Tensor) -> None:
    module.zero_grad(set_to_none=True)
    module(x).square().mean().backward()


def _flex_fallback_vs_attention() -> Measurement:
    torch.manual_seed(0)
    attention = create_blueprint("transformer", "attention", _D, n_head=_HEADS)
    flex = create_blueprint("transformer", "flex_attention", _D, n_head=_HEADS)
    with torch.no_grad():
        for param in attention.parameters():
            param.normal_(0.0, 0.05)  # birth has proj = 0; use a trained-looking state
    flex.load_state_dict(attention.state_dict())
    x = torch.randn(_BATCH, _T, _D)
    measurement = compare(
        lambda: _training_step(flex, x),
        lambda: _training_step(attention, x),
        repeats=15,
        number=3,
        warmup=3,
        detail=f"fwd+bwd, B={_BATCH} T={_T} D={_D} H={_HEADS}, fp32 CPU; flex masks cached: {len(flex.block_masks)}",
    )
    if len(flex.block_masks) != 0:
        raise RuntimeError("flex_attention left its SDPA path during the benchmark")
    return measurement


def _count_vs_build_mlp() -> Measurement:
    dim = 4096
    expected = param_count("transformer", "mlp", dim)

    def build() -> None:
        module = create_blueprint("transformer", "mlp", dim)
        if sum(p.numel() for p in module.parameters()) != expected:
            raise RuntimeError("param_count disagrees with the built module")

    return compare(
        build,
        lambda: param_count("transformer", "mlp", dim),
        repeats=5,
        warmup=1,
        detail=f"mlp at D={dim}: {expected:,} parameters; ratio = build time / count time",
    )


BENCHMARKS = [
    Benchmark(
        name="transformer: flex SDPA path / attention, D=384 T=256",
        target="<= 1.05",
        run=_flex_fallback_vs_attention,
        note="CPU training step; both blueprints hold the same weights",
    ),
    Benchmark(
        name="transformer: build mlp / param_count, D=4096",
        target=">= 1000",
        run=_count_vs_build_mlp,
        note="closed-form count vs instantiating 134M parameters",
    ),
]
