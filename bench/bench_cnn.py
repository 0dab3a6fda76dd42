"""CNN blueprint pack: counting parameters in closed form vs building the module.

Rent is charged from ``param_count``, which must be exact and cheap enough to evaluate for
every blueprint at every slot width, every time a controller ranks its options. The
alternative, building the module and summing ``numel``, allocates and initialises every
weight: 1.2 GB for ``conv_heavy`` at C = 4096 (302,006,272 parameters).

Each benchmark reports build time / count time for ``conv_heavy`` (CPU, fp32, default init),
and first checks that the two numbers are equal. Target at C = 4096: >= 1000x.
"""

from __future__ import annotations

from collections.abc import Callable

from bench._harness import Benchmark, Measurement, compare
from esper_core import create_blueprint
from esper_core.registry import param_count

_BLUEPRINT = "conv_heavy"


def _count_vs_build(dim: int, repeats: int) -> Callable[[], Measurement]:
    def run() -> Measurement:
        expected = param_count("cnn", _BLUEPRINT, dim)
        if expected != 18 * dim * dim + 4 * dim:
            raise RuntimeError(f"param_count({dim}) = {expected} does not match 18C^2 + 4C")

        def build() -> None:
            module = create_blueprint("cnn", _BLUEPRINT, dim)
            built = sum(p.numel() for p in module.parameters())
            if built != expected:
                raise RuntimeError(f"param_count({dim}) = {expected} but the module has {built}")

        return compare(
            build,
            lambda: param_count("cnn", _BLUEPRINT, dim),
            repeats=repeats,
            warmup=1,
            detail=f"{_BLUEPRINT} at C={dim}: {expected:,} parameters (exact); ratio = build / count",
        )

    return run


BENCHMARKS = [
    Benchmark(
        name="cnn: build conv_heavy / param_count, C=64",
        target=">= 10",
        run=_count_vs_build(64, repeats=15),
        note="74k parameters: even small modules cost far more to build than to count",
    ),
    Benchmark(
        name="cnn: build conv_heavy / param_count, C=512",
        target=">= 100",
        run=_count_vs_build(512, repeats=9),
        note="4.7M parameters",
    ),
    Benchmark(
        name="cnn: build conv_heavy / param_count, C=4096",
        target=">= 1000",
        run=_count_vs_build(4096, repeats=3),
        note="302M parameters (1.2 GB): closed-form count vs instantiating the module",
    ),
]
