"""What the heuristic controller germinates next: candidates, ranking strategies, plateaus.

Pure selection logic of :class:`~esper_core.control.HeuristicController`, testable without
slots: :func:`plateaued` says when to germinate, :func:`rank_candidates` orders the
affordable (slot, blueprint) :class:`Candidate` values by one of :data:`STRATEGIES`, using
the :class:`Outcome` of finished seeds. Every public name here is re-exported by
:mod:`esper_core.control`; import them from there.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from esper_core._checks import check_float, check_int, check_members, shown
from esper_core.hosts.base import HostError

__all__ = ["STRATEGIES", "Candidate", "Outcome", "check_strategy", "plateaued", "rank_candidates"]

#: Selection strategies of :class:`~esper_core.control.HeuristicController`; the first is the default.
STRATEGIES = ("gain_per_param", "cheapest")


def plateaued(history: Sequence[float], window: int, min_delta: float) -> bool:
    """True when the best of the last ``window`` scores beats the earlier best by less than ``min_delta``.

    ``history`` holds finite scores (percent), ``window`` is an int >= 0 (0: never a
    plateau), ``min_delta`` a finite number >= 0 (percentage points); else :class:`HostError`.
    """
    scores = _scores(history, "history")
    window = check_int("window", window, error=HostError)
    min_delta = check_float("min_delta", min_delta, minimum=0.0, unit=" percentage points", error=HostError)
    if window < 1 or len(scores) <= window:
        return False
    return max(scores[-window:]) < max(scores[:-window]) + min_delta


def _scores(values: object, what: str) -> list[float]:
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise HostError(f"{what} must be a sequence of scores (percent), got {shown(values)}")
    return [check_float(f"{what}[{i}]", v, error=HostError) for i, v in enumerate(values)]


def check_strategy(name: str, value: object) -> str:
    """``value`` when it is one of :data:`STRATEGIES`; else :class:`HostError` naming ``name``."""
    if not isinstance(value, str) or value not in STRATEGIES:
        raise HostError(f"{name} must be one of {list(STRATEGIES)}, got {shown(value)}")
    return value


@attrs.frozen
class Candidate:
    """An affordable germination: ``blueprint`` at ``slot_id`` (``order``: its execution index)."""

    cost: int
    order: int
    slot_id: str
    blueprint: str


@attrs.frozen
class Outcome:
    """How a finished seed did: its last measured contribution and what became of it.

    ``contribution`` is the last counterfactual contribution (pp) the controller saw for the
    seed, or ``0.0`` when it was never measured (it left before blending in); ``fate`` is
    ``"fossilized"`` or ``"pruned"``.
    """

    slot_id: str
    blueprint: str
    params: int
    contribution: float
    fate: str
    epoch: int

    @property
    def gain_per_param(self) -> float:
        """``contribution / params`` (pp per parameter; 0 for a parameter-free seed)."""
        return self.contribution / self.params if self.params else 0.0


def rank_candidates(
    candidates: Sequence[Candidate], strategy: str, outcomes: Sequence[Outcome] = ()
) -> list[Candidate]:
    """Order ``candidates`` by ``strategy`` (best first); pure, so it is tested on its own.

    * ``"cheapest"``: by cost, then execution order, then name.
    * ``"gain_per_param"``: families (blueprint names) without an outcome first, largest
      cost first (no evidence yet: assume equal gain per parameter, so a larger seed
      promises more); then families whose outcomes average a positive gain per parameter,
      highest first (ties: larger, then earlier). Families averaging <= 0 are dropped.
    """
    strategy = check_strategy("strategy", strategy)
    candidates = check_members("candidates", candidates, Candidate, error=HostError)
    outcomes = check_members("outcomes", outcomes, Outcome, error=HostError)
    if strategy == "cheapest":
        return sorted(candidates, key=lambda c: (c.cost, c.order, c.blueprint))
    measured: dict[str, list[float]] = {}
    for outcome in outcomes:
        measured.setdefault(outcome.blueprint, []).append(outcome.gain_per_param)
    mean = {name: sum(gains) / len(gains) for name, gains in measured.items()}
    untried = [c for c in candidates if c.blueprint not in mean]
    proven = [c for c in candidates if mean.get(c.blueprint, 0.0) > 0.0]
    untried.sort(key=lambda c: (-c.cost, c.order, c.blueprint))
    proven.sort(key=lambda c: (-mean[c.blueprint], -c.cost, c.order, c.blueprint))
    return untried + proven
