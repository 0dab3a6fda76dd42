"""Why a grown model germinated no seed, said after training.

The notes of :mod:`esper_core.demo.preflight` are said before training and can only give
lower bounds: a seed germinates only when the validation score has plateaued, which no
setting can promise. When a grown model ends a run without having germinated a seed, the
run says why, from what the controller saw (its score history and configuration) and what
it could afford:

* ``too_short``: the run ended before the first epoch whose controller step can germinate;
* ``no_plateau``: at every step that could germinate, the best score of the last
  ``plateau_window`` epochs beat the best before them by ``plateau_min_delta`` or more;
* ``no_candidate``: the score did plateau, but no allowed blueprint was affordable and
  buildable at any slot.

These are the only ways :meth:`HeuristicController.step <esper_core.control.HeuristicController.step>`
declines to germinate while no seed is on probation (its quiet period and its concurrency
limit start only with a germination); :func:`why_no_germination` checks each with
:func:`~esper_core.control.plateaued`, the test the controller itself applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from esper_core.control import ControllerConfig, plateaued

__all__ = ["NoGermination", "no_germination_notes", "why_no_germination"]


@attrs.frozen
class NoGermination:
    """Why one grown model germinated nothing: ``kind`` (see the module) and ``detail`` (a clause)."""

    kind: str
    detail: str


def why_no_germination(history: Sequence[float], config: ControllerConfig, candidates: int) -> NoGermination:
    """The reason a controller with score ``history`` (one score per epoch, epoch 1 first, in
    percent) and ``config`` germinated nothing; ``candidates`` is how many (slot, blueprint)
    candidates it could afford with no seed in the model (``len(controller.candidates())``).
    """
    first = max(config.warmup_epochs, 1, config.plateau_window + 1)
    epochs = len(history)
    if epochs < first:
        return NoGermination(
            "too_short",
            f"the run ended at epoch {epochs}, before epoch {first}, the first whose step can germinate "
            f"(warmup_epochs={config.warmup_epochs}, plateau_window={config.plateau_window})",
        )
    steps = range(first, epochs + 1)
    flat = [e for e in steps if plateaued(history[:e], config.plateau_window, config.plateau_min_delta)]
    if not flat:
        gains = {e: _gain(history[:e], config.plateau_window) for e in steps}
        smallest = min(gains, key=lambda e: gains[e])
        return NoGermination(
            "no_plateau",
            f"the score never plateaued from epoch {first} to {epochs} (the smallest gain was "
            f"{gains[smallest]:.2f} pp, at epoch {smallest})",
        )
    shown = ", ".join(map(str, flat[:5])) + (", ..." if len(flat) > 5 else "")
    if candidates == 0:
        return NoGermination(
            "no_candidate",
            f"the score plateaued (epoch {shown}) but no allowed blueprint was affordable and buildable at "
            f"any slot (seed budget {config.param_budget:,} parameters)",
        )
    # Not reachable with HeuristicController as it is; said rather than hidden if it changes.
    return NoGermination(
        "unexplained",
        f"the score plateaued (epoch {shown}) and {candidates} candidate(s) were affordable, yet the "
        "controller germinated nothing (its decisions are in report.json events)",
    )


def _gain(history: Sequence[float], window: int) -> float:
    """How far the best of the last ``window`` scores is above the best before them (pp)."""
    return max(history[-window:]) - max(history[:-window])


_ADVICE = {
    "too_short": "more epochs (see --epochs)",
    "no_plateau": (
        "more epochs give the score time to level off (a plateau may come late or never; the warm-up "
        "and plateau settings are fixed for the demo: settings.controller in report.json)"
    ),
    "no_candidate": "a larger --budget, or other blueprints with --include/--exclude",
    "unexplained": "the controller's decisions in the events",
}


def no_germination_notes(
    reasons: Mapping[str, Mapping[int, NoGermination]], config: ControllerConfig, epochs: int, seeds: int
) -> list[str]:
    """One note per grown model (``label`` -> random seed -> reason) that germinated nothing for
    some random seed, in the order given; ``seeds`` is how many random seeds ran."""
    notes = []
    for label, by_seed in reasons.items():
        if not by_seed:
            continue
        which = ", ".join(map(str, by_seed))
        scope = f"random seed {which}" if len(by_seed) == 1 else f"random seeds {which}"
        details = "; ".join(
            reason.detail if len(by_seed) == 1 else f"seed {seed}: {reason.detail}"
            for seed, reason in by_seed.items()
        )
        kinds = list(dict.fromkeys(reason.kind for reason in by_seed.values()))
        notes.append(
            f"{label} germinated no seed in {epochs} epochs for {scope} (of {seeds}), so for "
            f"{'it' if len(by_seed) == 1 else 'them'} the grown model (and its static twin) is the host alone. The controller germinates only when the validation score "
            f"plateaus (the best of the last plateau_window={config.plateau_window} epochs less than "
            f"plateau_min_delta={config.plateau_min_delta:g} pp above the best before them) and a blueprint "
            f"is affordable: {details}. What may help: {'; '.join(_ADVICE[k] for k in kinds)}."
        )
    return notes
