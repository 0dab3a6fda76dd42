"""Side-by-side timing: a case and its reference, interleaved, reported as a ratio.

Absolute times depend on the machine; a ratio of two things measured in the same process,
alternating so that frequency scaling and cache state hit both alike, does not. Each
benchmark module exposes ``BENCHMARKS: list[Benchmark]``; :mod:`bench.run` runs them.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import attrs

__all__ = ["Benchmark", "Measurement", "compare", "ratio_of", "time_once"]


@attrs.frozen
class Measurement:
    """A ratio summary: the median of per-repetition ratios, with min and max."""

    median: float
    minimum: float
    maximum: float
    repeats: int
    detail: str = ""

    def meets(self, target: str) -> bool:
        op, _, number = target.partition(" ")
        bound = float(number)
        if op == "<=":
            return self.median <= bound
        if op == ">=":
            return self.median >= bound
        raise ValueError(f"target must look like '<= 1.05' or '>= 3', got {target!r}")


@attrs.frozen
class Benchmark:
    """One named measurement with its target (``'<= 1.05'`` or ``'>= 1000'``)."""

    name: str
    target: str
    run: Callable[[], Measurement]
    note: str = ""


def time_once(fn: Callable[[], object], number: int = 1) -> float:
    """Seconds for ``number`` calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - start


def compare(
    case: Callable[[], object],
    reference: Callable[[], object],
    *,
    repeats: int = 15,
    number: int = 1,
    warmup: int = 2,
    detail: str = "",
) -> Measurement:
    """Ratio time(case) / time(reference), interleaved repetition by repetition."""
    for _ in range(warmup):
        case()
        reference()
    ratios = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            # Alternate which runs first so neither side always gets the warmer cache.
            if i % 2 == 0:
                t_case = time_once(case, number)
                t_ref = time_once(reference, number)
            else:
                t_ref = time_once(reference, number)
                t_case = time_once(case, number)
            ratios.append(t_case / t_ref)
    finally:
        if gc_was_enabled:
            gc.enable()
    return ratio_of(ratios, detail=detail)


def ratio_of(ratios: list[float], detail: str = "") -> Measurement:
    """Summarise already-measured ratios."""
    return Measurement(
        median=statistics.median(ratios),
        minimum=min(ratios),
        maximum=max(ratios),
        repeats=len(ratios),
        detail=detail,
    )
