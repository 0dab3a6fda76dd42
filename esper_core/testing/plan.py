"""Which dims and option values the conformance kit sweeps (pure functions).

The default sweep is chosen to catch the usual closed-form mistakes cheaply: an even
small width, an odd composite one, a prime one (group and head divisibility bugs show up
on odd and prime widths), and one large width built on the meta device, where a count
that is right for small widths but wrong in a higher-order term is caught at no memory
cost. ``ESPER_CONFORMANCE_FULL=1`` (or ``full=True``) widens the sweep and compiles with
Inductor instead of the cheaper ``aot_eager`` backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from esper_core.options import Option

__all__ = [
    "DEFAULT_DIMS",
    "FULL_DIMS",
    "FULL_ENV",
    "REAL_DIM_LIMIT",
    "Plan",
    "full_requested",
    "invalid_values",
    "make_plan",
    "option_variants",
]

FULL_ENV = "ESPER_CONFORMANCE_FULL"
"""Environment variable that switches every conformance run to the heavy sweep."""

DEFAULT_DIMS: tuple[int, ...] = (8, 9, 13, 1024)
"""small, odd, prime (built for real) and large (meta device)."""

FULL_DIMS: tuple[int, ...] = (1, 2, 3, 8, 9, 13, 16, 31, 64, 97, 384, 512, 1000, 1024, 4096)
"""The heavy sweep: degenerate widths, more primes, and the widths hosts actually use."""

REAL_DIM_LIMIT = 128
"""Dims up to this are built on the CPU and run; larger ones are only counted on the meta device."""


def full_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for the heavy sweep."""
    env = os.environ if environ is None else environ
    return env.get(FULL_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _numeric_candidates(option: Option) -> list[Any]:
    lo, hi, default = option.minimum, option.maximum, option.default
    if option.type is int:
        values = [default, default + 1, default * 2]
        if lo is not None:
            values.append(int(lo) if float(lo).is_integer() else int(lo) + 1)
        if hi is not None:
            values.append(int(hi))
        if lo is not None and hi is not None:
            values.append(int((lo + hi) // 2))
        return values
    values = [default, default * 2, default / 2]
    values += [v for v in (lo, hi) if v is not None]
    if lo is not None and hi is not None:
        values.append((lo + hi) / 2)
    return values


def option_variants(options: Sequence[Option], base: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Option sets that change one declared option at a time away from ``base``.

    Values come from ``choices``, both booleans, or the bounds and midpoint of a numeric
    range (plus nearby values when unbounded); values the option itself rejects are dropped.
    Changing one option at a time keeps the sweep linear in the number of options.
    """
    variants: list[dict[str, Any]] = []
    for option in options:
        current = base.get(option.name, option.default)
        if option.choices is not None:
            candidates: Iterable[Any] = option.choices
        elif option.type is bool:
            candidates = (False, True)
        elif option.type in (int, float):
            candidates = _numeric_candidates(option)
        else:
            candidates = (option.default,)
        seen: list[Any] = []
        for value in candidates:
            try:
                value = option.validate(value)
            except Exception:  # the option itself rejects it: not a value to sweep
                continue
            if value == current or value in seen:
                continue
            seen.append(value)
            variants.append({**base, option.name: value})
    return variants


def invalid_values(option: Option) -> list[Any]:
    """Values ``option`` must reject: a wrong type, and where declared, out-of-range values."""
    wrong_type: Any = 3 if option.type is str else "not-a-number"
    values: list[Any] = [wrong_type]
    if option.choices is not None and option.type is str:
        values.append("__not_a_choice__")
    elif option.choices is not None and option.type in (int, float):
        values.append(max(option.choices) + 1)
    if option.minimum is not None and option.type in (int, float):
        values.append(option.type(option.minimum - 1))
    if option.maximum is not None and option.type in (int, float):
        values.append(option.type(option.maximum + 1))
    return values


@attrs.frozen
class Plan:
    """The concrete sweep for one run."""

    dims: tuple[int, ...]
    base_options: tuple[tuple[str, Any], ...]
    variants: tuple[tuple[tuple[str, Any], ...], ...]
    full: bool
    compile_backend: str
    learn_steps: int = 4

    @property
    def real_dims(self) -> tuple[int, ...]:
        return tuple(d for d in self.dims if d <= REAL_DIM_LIMIT)

    @property
    def meta_dims(self) -> tuple[int, ...]:
        return tuple(d for d in self.dims if d > REAL_DIM_LIMIT)

    def option_sets(self) -> list[dict[str, Any]]:
        """The base options first, then every one-at-a-time variant."""
        return [dict(self.base_options), *(dict(v) for v in self.variants)]


def make_plan(
    options: Sequence[Option],
    dims: Iterable[int] | None = None,
    base: Mapping[str, Any] | None = None,
    *,
    full: bool | None = None,
) -> Plan:
    """Build the sweep: explicit ``dims`` win; otherwise the default or full sweep."""
    heavy = full_requested() if full is None else full
    chosen = tuple(dims) if dims is not None else (FULL_DIMS if heavy else DEFAULT_DIMS)
    base_options = dict(base or {})
    variants = option_variants(options, base_options)
    return Plan(
        dims=tuple(dict.fromkeys(chosen)),
        base_options=tuple(sorted(base_options.items())),
        variants=tuple(tuple(sorted(v.items())) for v in variants),
        full=heavy,
        compile_backend="inductor" if heavy else "aot_eager",
    )
