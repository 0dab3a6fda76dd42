"""The heuristic controller's configuration: every threshold, checked on construction.

:class:`ControllerConfig` is public as :class:`esper_core.control.ControllerConfig`; this
module keeps it with the converters that check each field (a bad value raises
:class:`~esper_core.errors.HostError` naming the field and what it accepts).
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from esper_core._checks import INT32_MAX, check_enum, check_float, check_int, check_members
from esper_core._control_selection import STRATEGIES, check_strategy
from esper_core.blend import BlendAlgorithm
from esper_core.hosts.base import HostError

__all__ = ["ControllerConfig"]


def _count(minimum: int, maximum: int = INT32_MAX) -> Any:
    return lambda name: (
        lambda value: check_int(name, value, minimum=minimum, maximum=maximum, error=HostError)
    )


def _field(make: Any, name: str, **kwargs: Any) -> Any:
    """An attrs field whose converter checks the value, naming the field in the error."""
    return attrs.field(converter=make(name), **kwargs)


def _points(minimum: float, maximum: float) -> Any:
    return lambda name: (
        lambda value: check_float(
            name, value, minimum=minimum, maximum=maximum, unit=" percentage points", error=HostError
        )
    )


def _names(optional: bool) -> Any:
    def make(name: str) -> Any:
        def convert(value: object) -> tuple[str, ...] | None:
            if value is None and optional:
                return None
            return check_members(name, value, str, accepted="blueprint names (str)", error=HostError)

        return convert

    return make


@attrs.frozen
class ControllerConfig:
    """Every threshold of :class:`~esper_core.control.HeuristicController` (scores and
    contributions in percentage points)."""

    param_budget: int = _field(_count(0, 2**53), "param_budget")
    """Most seed parameters (probation plus fossilized) the model may carry."""
    plateau_window: int = _field(_count(1), "plateau_window", default=3)
    plateau_min_delta: float = _field(_points(0.0, math.inf), "plateau_min_delta", default=0.5)
    warmup_epochs: int = _field(_count(0), "warmup_epochs", default=3)
    """No germination before this many epochs have been recorded."""
    max_concurrent: int = _field(_count(1), "max_concurrent", default=1)
    """Most seeds on probation at once; one at a time keeps credit assignment clean."""
    prune_below: float = _field(_points(-math.inf, math.inf), "prune_below", default=0.0)
    prune_patience: int = _field(_count(1), "prune_patience", default=2)
    """Consecutive measurements below ``prune_below`` before pruning (validation noise guard)."""
    max_stage_epochs: int = _field(_count(1), "max_stage_epochs", default=12)
    exclude: tuple[str, ...] = _field(_names(optional=False), "exclude", default=("noop",))
    """Blueprint names never germinated (``noop`` adds nothing to learn); a collection, not one str."""
    include: tuple[str, ...] | None = _field(_names(optional=True), "include", default=None)
    """When set, only these blueprint names are candidates."""
    ramp_epochs: int = _field(_count(1), "ramp_epochs", default=3)
    """Epochs of the alpha ramp of a new seed."""
    algorithm: BlendAlgorithm = attrs.field(
        default=BlendAlgorithm.ADD,
        converter=lambda v: check_enum("algorithm", v, BlendAlgorithm, error=HostError),
    )
    strategy: str = attrs.field(default=STRATEGIES[0], converter=lambda v: check_strategy("strategy", v))
    """How to choose what to germinate: one of :data:`~esper_core.control.STRATEGIES` (see
    :func:`~esper_core.control.rank_candidates`)."""
