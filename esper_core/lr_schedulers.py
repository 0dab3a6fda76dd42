"""Let a ``torch.optim.lr_scheduler`` scheduler take on a param group added after it was built.

Torch schedulers keep per-group state (lists such as ``base_lrs``, ``lr_lambdas``,
``max_lrs``, ``min_lrs``, ``_last_lr`` and group keys such as ``initial_lr``, ``max_lr``,
``min_lr``, ``base_momentum``) sized when they are constructed, and zip it strictly with
``optimizer.param_groups`` on every ``step()``. A group added later therefore breaks them.

:class:`~esper_core.optim.OptimizerBinding` avoids the problem for schedulers created after
it (each slot's group exists from the start and the scheduler schedules it like any other).
For a scheduler that already exists, :func:`join_group` extends its per-group state for the
optimizer's last group, **scheduled like a reference group with its own base lr**:

* ``k = new_lr / reference_base_lr``, where ``new_lr`` is the new group's ``lr`` when it
  joins (its base lr) and ``reference_base_lr`` the scheduler's base lr of the reference
  group (``base_lrs[reference]``; for ``ReduceLROnPlateau`` the group's ``initial_lr``).
* Per-group learning rates that define the schedule are the reference's times ``k``:
  ``base_lrs``, ``max_lrs`` (``CyclicLR``), group keys ``initial_lr``, ``max_lr``, ``min_lr``
  (``OneCycleLR``). Everything else per group is the reference's: ``lr_lambdas``,
  ``base_momentums``, ``max_momentums``, group keys ``base_momentum``, ``max_momentum``, the
  current momentum (or beta1) of schedulers that cycle it, and floors (``min_lrs`` of
  ``ReduceLROnPlateau``; ``eta_min`` is shared already).
* The new group's current lr is the reference's current lr times ``k``; for schedulers
  with a floor ``eta_min`` (cosine annealing) the factor applies to the distance above the
  floor: ``eta_min + (lr_ref - eta_min) * (new_lr - eta_min) / (base_ref - eta_min)``.
  Every torch schedule is linear in the base lr (or affine around ``eta_min``), so the group
  then has exactly the lr the scheduler would have given it, had it been there from the
  start with that base lr, and follows the schedule from there. Two documented limits:
  ``ReduceLROnPlateau`` keeps no base lrs, so without an ``initial_lr`` key the group joins
  at its own lr and takes part in every later reduction; a reference group whose base lr
  equals ``eta_min`` shows no progress, so the new group joins at its own base lr.

``SequentialLR`` and ``ChainedScheduler`` are extended through their children. A
scheduler with a per-group list this module does not know is refused with an error that
names the list, rather than extended wrongly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from esper_core.errors import HostError

__all__ = ["SCHEDULER_GROUP_KEYS", "join_group", "joined_lr", "reference_base_lr", "scheduler_tree"]

#: Per-group lists holding learning rates that define the schedule: scaled by ``k``.
_SCALED_LISTS = ("base_lrs", "max_lrs")
#: Per-group lists copied from the reference group.
_COPIED_LISTS = ("lr_lambdas", "base_momentums", "max_momentums", "min_lrs")
#: Lists on schedulers that are not per group (their length may equal the group count).
_NOT_PER_GROUP = frozenset({"_schedulers", "_milestones", "_schedule_phases"})
#: Group keys written by schedulers: learning rates (scaled) and momentum bounds (copied).
_SCALED_KEYS = ("initial_lr", "max_lr", "min_lr")
_COPIED_KEYS = ("base_momentum", "max_momentum")
#: Every param-group key a torch scheduler may own (not an optimizer hyperparameter).
SCHEDULER_GROUP_KEYS = frozenset(_SCALED_KEYS + _COPIED_KEYS)


def scheduler_tree(scheduler: Any) -> Iterator[Any]:
    """``scheduler`` and, for ``SequentialLR``/``ChainedScheduler``, its children, depth first."""
    yield scheduler
    for child in getattr(scheduler, "_schedulers", None) or ():
        yield from scheduler_tree(child)


def _name(scheduler: Any) -> str:
    return type(scheduler).__name__


def _check(scheduler: Any, optimizer: torch.optim.Optimizer, n_old: int) -> None:
    """Refuse, before anything changes, a scheduler this module cannot extend correctly."""
    for s in scheduler_tree(scheduler):
        if not isinstance(s, (LRScheduler, ReduceLROnPlateau)):
            raise HostError(
                f"schedulers must be torch.optim.lr_scheduler schedulers, got {_name(s)} ({s!r:.60})"
            )
        if getattr(s, "optimizer", None) is not optimizer:
            raise HostError(f"{_name(s)} is attached to another optimizer than the one being bound")
        known = {"_last_lr", *_SCALED_LISTS, *_COPIED_LISTS}
        for attr, value in vars(s).items():
            if not isinstance(value, list) or attr in _NOT_PER_GROUP:
                continue
            if attr in known and len(value) != n_old:
                raise HostError(
                    f"{_name(s)}.{attr} has {len(value)} entries but the optimizer had {n_old} param "
                    "groups: the scheduler does not match this optimizer's groups"
                )
            if attr not in known and len(value) == n_old:
                raise HostError(
                    f"{_name(s)}.{attr} looks like a per-group list that Esper cannot extend for a new "
                    "param group; create the OptimizerBinding before this scheduler instead"
                )


def _primary_base(scheduler: Any, reference: int, ref_group: dict[str, Any]) -> float | None:
    for s in scheduler_tree(scheduler):
        bases = getattr(s, "base_lrs", None)
        if isinstance(bases, list):
            return float(bases[reference])
    value = ref_group.get("initial_lr")
    return None if value is None else float(value)


def reference_base_lr(
    schedulers: list[Any], optimizer: torch.optim.Optimizer, reference: int = 0
) -> float | None:
    """The base lr the first of ``schedulers`` schedules group ``reference`` from (``None`` when
    none keeps one). It is not always the lr the optimizer was made with: ``OneCycleLR``
    starts from ``max_lr / div_factor``, ``CyclicLR`` from ``base_lr``."""
    for scheduler in schedulers:
        base = _primary_base(scheduler, reference, optimizer.param_groups[reference])
        if base is not None:
            return base
    return None


def _floor(scheduler: Any) -> float:
    """The ``eta_min`` the active schedule anneals towards (0 when it has none)."""
    if isinstance(getattr(scheduler, "_milestones", None), list):  # SequentialLR: the active child
        import bisect

        children = scheduler._schedulers
        return _floor(children[bisect.bisect_right(scheduler._milestones, scheduler.last_epoch)])
    if getattr(scheduler, "_schedulers", None):  # chained: a product of factors, no common floor
        return 0.0
    return float(getattr(scheduler, "eta_min", 0.0) or 0.0)


def joined_lr(ref_lr: float, ref_base: float | None, new_base: float, floor: float) -> float:
    """The current lr of a group with base ``new_base`` that follows the reference's schedule.

    Pure: ``ref_lr`` is the reference group's current lr, ``ref_base`` its base lr (``None``
    when the scheduler keeps none), ``floor`` the schedule's ``eta_min``.
    """
    if ref_base is None or ref_base == floor:
        return new_base
    return floor + (ref_lr - floor) * (new_base - floor) / (ref_base - floor)


def join_group(scheduler: Any, optimizer: torch.optim.Optimizer, *, reference: int = 0) -> None:
    """Extend ``scheduler`` for ``optimizer.param_groups[-1]``, just added, like group ``reference``.

    The new group's ``lr`` when this is called is its base lr; it is then set to its place
    in the schedule (see the module docstring for the rule). Raises
    :class:`~esper_core.errors.HostError`, with nothing changed, for a scheduler on another
    optimizer, one whose per-group state does not match the old group count, one with a
    per-group list this module does not know, or a reference group with base lr 0.
    """
    groups = optimizer.param_groups
    n_old = len(groups) - 1
    if not 0 <= reference < n_old:
        raise HostError(f"reference group {reference} does not exist; the optimizer had {n_old} groups")
    _check(scheduler, optimizer, n_old)
    ref, new = groups[reference], groups[-1]
    new_base = float(new["lr"])
    ref_base = _primary_base(scheduler, reference, ref)
    if ref_base is not None and ref_base == 0.0:
        raise HostError(
            f"{_name(scheduler)}: reference param group {reference} has base lr 0, so a new group cannot "
            "be scheduled relative to it"
        )
    k = 1.0 if ref_base is None else new_base / ref_base
    lr = joined_lr(float(ref["lr"]), ref_base, new_base, _floor(scheduler))
    if not math.isfinite(lr):
        raise HostError(f"{_name(scheduler)}: the new group's scheduled lr would be {lr}")
    cycles_momentum = False
    extended: set[int] = set()  # SequentialLR shares its _last_lr list with a child: extend once

    def append(values: object, value: object) -> None:
        if isinstance(values, list) and id(values) not in extended:
            extended.add(id(values))
            values.append(value)

    for s in scheduler_tree(scheduler):
        for attr in _SCALED_LISTS:
            values = getattr(s, attr, None)
            if isinstance(values, list):
                append(values, values[reference] * k)
        for attr in _COPIED_LISTS:
            values = getattr(s, attr, None)
            if isinstance(values, list):
                append(values, values[reference])
        append(getattr(s, "_last_lr", None), lr)
        cycles_momentum = cycles_momentum or bool(getattr(s, "cycle_momentum", False))
    for key in _SCALED_KEYS:
        if key in ref:
            new[key] = ref[key] * k
    for key in _COPIED_KEYS:
        if key in ref:
            new[key] = ref[key]
    if cycles_momentum:
        if "betas" in ref and "betas" in new:
            new["betas"] = (ref["betas"][0], *new["betas"][1:])
        elif "momentum" in ref:
            new["momentum"] = ref["momentum"]
    if isinstance(new["lr"], torch.Tensor):
        new["lr"].fill_(lr)
    else:
        new["lr"] = lr
