"""What a demo run's settings leave room for, said before any training.

A run is never refused for being unable to grow (a user may want the baseline), but it
must not look like a result of growth when nothing could grow. :func:`notes` returns the
warnings a run prints at its start and end and records in ``report.json``. What they say
is necessary, never sufficient: no setting can promise the plateau a seed waits for, so
a count of epochs is a lower bound and says so (after training,
:mod:`esper_core.demo.diagnosis` says why a grown model that germinated nothing did not):

* the run is shorter than the earliest epoch at which a seed can blend in or be kept
  (:func:`esper_core.control.lifecycle_timing` of the controller config and gates), or a
  gate's dwell exceeds the controller's stage limit so every seed is pruned as stalled;
* the parameter budget affords no allowed blueprint at any slot, or no allowed blueprint
  can be built at any slot at all.

:func:`candidate_blueprints` says where the candidate blueprints come from: every installed
pack of the topology takes part, including packs that do not ship with Esper.
"""

from __future__ import annotations

import math
from typing import Any

from esper_core._loader import SHIPPED
from esper_core.control import ControllerConfig, HeuristicController, LifecycleTiming, lifecycle_timing
from esper_core.demo.settings import DemoSettings
from esper_core.hosts import SegmentedHost
from esper_core.model import MorphogeneticModel
from esper_core.plugins import normalize_distribution
from esper_core.registry import list_blueprints, provenance

__all__ = ["candidate_blueprints", "notes", "timing", "timing_json"]


def timing(settings: DemoSettings) -> LifecycleTiming:
    """The lifecycle timing of the grown model's controller and gates (the same for every strategy)."""
    return lifecycle_timing(settings.controller_config(1, settings.strategies[0]), settings.gates())


def timing_json(settings: DemoSettings) -> dict[str, Any]:
    """:func:`timing` as recorded in ``report.json`` (``seed_timing``)."""
    t = timing(settings)
    return {
        "germination_epoch": t.germination_epoch,
        "epochs_in_stage": {
            "GERMINATED": t.germinated,
            "TRAINING": t.training,
            "BLENDING": t.blending,
            "HOLDING": t.holding,
        },
        "first_blended_epoch": t.first_blended_epoch,
        "earliest_fossilization": t.earliest_fossilization,
        "stalled": list(t.stalled),
    }


def candidate_blueprints(settings: DemoSettings) -> list[dict[str, Any]]:
    """The blueprints the controller may choose from, with the distribution that registered each.

    ``shipped``: the distribution ships with Esper (``esper-core`` and its two packs); any
    other installed pack's blueprints of the topology join the candidates unless
    ``--include``/``--exclude`` leave them out.
    """
    rows = []
    for spec in list_blueprints(settings.topology):
        if spec.name in settings.exclude or (
            settings.include is not None and spec.name not in settings.include
        ):
            continue
        source = provenance(f"{settings.topology}:{spec.name}")
        rows.append(
            {
                "name": spec.name,
                "distribution": source.distribution,
                "version": source.version,
                "shipped": normalize_distribution(source.distribution) in SHIPPED,
            }
        )
    return rows


def notes(settings: DemoSettings, host: SegmentedHost) -> list[str]:
    """Warnings about what ``settings`` leave room for, on a fresh ``host`` of the task."""
    return [*_timing_notes(settings), *_budget_notes(settings, host)]


def _timing_notes(settings: DemoSettings) -> list[str]:
    t = timing(settings)
    config = settings.controller_config(1, settings.strategies[0])
    thresholds = settings.gates().thresholds
    strict = settings.gate_policy == "strict"
    dwell = "min_training_evaluations" if strict else "permissive_training_evaluations"
    if t.stalled:
        limits = ", ".join(
            f"{stage} needs {t.training if stage == 'TRAINING' else t.blending} epochs" for stage in t.stalled
        )
        return [
            f"no seed can be kept: {limits}, more than the controller's max_stage_epochs={config.max_stage_epochs}, "
            "so every seed is pruned as stalled first; lower the dwell with --gate-threshold "
            f"{dwell}=N" + (" or min_blending_evaluations=N" if strict else "")
        ]
    earliest = t.earliest_fossilization
    assert earliest is not None  # not stalled
    if settings.epochs >= earliest:
        return []
    why = (
        f"a seed germinates at epoch {t.germination_epoch} at the earliest (warmup_epochs={config.warmup_epochs}, "
        f"plateau_window={config.plateau_window}) and only once the score has plateaued, then spends at least {t.germinated} epoch GERMINATED, "
        f"{t.training} TRAINING ({dwell}={getattr(thresholds, dwell)}), {t.blending} BLENDING "
        f"(ramp_epochs={config.ramp_epochs}"
        + (f", min_blending_evaluations={thresholds.min_blending_evaluations}" if strict else "")
        + f") and {t.holding} HOLDING"
    )
    if settings.epochs < t.first_blended_epoch:
        effect = (
            f"No seed can even blend in (the first epoch that can train with a seed at alpha > 0 is "
            f"{t.first_blended_epoch}): the grown model trains exactly as the host alone, a baseline"
        )
    else:
        effect = "At best, seeds are still on probation at the end and none is kept"
    change = (
        f"use --epochs {earliest} or more (default {_default_epochs(settings)}), or shorten the probation with "
        f"--gate-threshold {dwell}=N" + (" or min_blending_evaluations=N" if strict else "")
    )
    return [
        f"--epochs {settings.epochs} ends before the earliest epoch at which a seed can be kept (fossilized), "
        f"{earliest}: {why}. {effect}. To leave room for a seed to be kept, {change}. Even then nothing may "
        f"grow: {earliest} is a lower bound that assumes the validation score plateaus at epoch "
        f"{t.germination_epoch}, the earliest possible, and the controller germinates only on a plateau (the best "
        f"of the last plateau_window={config.plateau_window} epochs less than plateau_min_delta="
        f"{config.plateau_min_delta:g} pp above the best before them), which may come much later or never; "
        "the controller's warm-up, plateau settings and ramp are fixed for the demo (settings.controller in "
        "report.json)."
    ]


def _default_epochs(settings: DemoSettings) -> int:
    from esper_core.demo.settings import DEFAULTS

    return int(DEFAULTS[settings.topology]["epochs"])


def _budget_notes(settings: DemoSettings, host: SegmentedHost) -> list[str]:
    model = MorphogeneticModel(host, gates=settings.gates())
    host_params = model.host_param_count
    budget = int(host_params * settings.budget)
    unlimited = ControllerConfig(
        param_budget=2**53, include=settings.include, exclude=settings.exclude, strategy="cheapest"
    )
    options = HeuristicController(model.slots, unlimited).candidates()
    if not options:
        dims = sorted({slot.dim for slot in model.slots.values()})
        return [
            f"no allowed {settings.topology} blueprint can be built at any slot of this host (widths "
            f"{', '.join(map(str, dims))}), so nothing can grow; change --include/--exclude "
            "(`esper blueprints --dim D` shows why a blueprint is not buildable)"
        ]
    cheapest = options[0]
    if cheapest.cost <= budget:
        return []
    fraction = math.ceil(cheapest.cost / host_params * 1000) / 1000
    if int(host_params * fraction) < cheapest.cost:  # float rounding at an exact multiple of 0.001
        fraction += 0.001
    return [
        f"the seed budget --budget {settings.budget:g} x {host_params:,} host parameters = {budget:,} affords "
        f"no allowed blueprint (the cheapest, {cheapest.blueprint} at {cheapest.slot_id}, has "
        f"{cheapest.cost:,} parameters), so nothing can grow; use --budget {fraction:g} or more to afford it "
        "(a seed then still germinates only once the validation score plateaus)"
    ]
