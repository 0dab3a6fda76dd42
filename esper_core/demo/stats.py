"""Summary statistics of the demo: mean, spread and confidence intervals over seeds, and
metric values at a given training compute. Pure functions on plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["summarize", "t_quantile", "value_at"]

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (any statistics
# table, e.g. NIST/SEMATECH e-Handbook of Statistical Methods, table 1.3.6.7.2).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom.

    Tabulated up to 30; above, the Cornish-Fisher expansion in ``1/df`` around the normal
    quantile (Abramowitz and Stegun, Handbook of Mathematical Functions, 26.7.5), accurate
    to about 1e-4 there.
    """
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"degrees of freedom must be an int >= 1, got {df!r}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def summarize(values: Sequence[float]) -> dict[str, object]:
    """Mean, sample standard deviation and 95% t-interval of the mean of ``values``.

    Returns ``{"n", "mean", "std", "ci95", "values"}``; with one value ``std`` and ``ci95``
    are ``None`` (a spread needs two). Raises ``ValueError`` for no values or a non-finite one.
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarize needs at least one value")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"summarize needs finite values, got {values}")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None, "values": values}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half], "values": values}


def value_at(compute: Sequence[float], values: Sequence[float], at: float) -> float | None:
    """``values`` linearly interpolated at cumulative compute ``at``.

    ``compute`` is non-decreasing (cumulative training FLOPs after each epoch, starting
    with 0 at initialisation) and ``values`` the metric at the same points. Returns
    ``None`` when ``at`` lies beyond the last point (that run never spent so much).
    """
    if len(compute) != len(values) or not compute:
        raise ValueError(
            f"compute and values must be equally long and non-empty, got {len(compute)}, {len(values)}"
        )
    if at < compute[0]:
        raise ValueError(f"compute {at} lies before the first point {compute[0]}")
    if at > compute[-1]:
        return None
    for i in range(1, len(compute)):
        lo, hi = compute[i - 1], compute[i]
        if at <= hi:
            if hi == lo:
                return float(values[i])
            weight = (at - lo) / (hi - lo)
            return float(values[i - 1] + weight * (values[i] - values[i - 1]))
    return float(values[0])  # a single point, at == compute[0]
