"""Keep a ``torch.optim`` optimizer in step with the seeds that come and go.

A seed's parameters do not exist when the optimizer is built. :class:`OptimizerBinding`
gives every slot its own param group, tagged ``esper_slot``, **from the moment it is made**:
the group is empty while the slot holds no seed, receives the seed's (and gate's)
parameters at germination and loses them, with their optimizer state, when the seed goes.
Slot observers are synchronous, so the optimizer is updated before the next training step.

Because the number of param groups never changes after the binding is made, every
``torch.optim.lr_scheduler`` scheduler created after it keeps working while seeds join and
leave, and schedules each seed group exactly like the others: from the start, with the
group's own base lr (``lr``), so a seed joining at step ``t`` trains at the lr the schedule
gives its group at ``t``. A scheduler created *before* the binding must be passed as
``schedulers=[...]``; it is extended for the new groups by
:func:`esper_core.lr_schedulers.join_group` (scheduled like the optimizer's first group,
with base lr ``lr``). A scheduler that exists but is not passed is detected and refused,
rather than left to fail on its next ``step()``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from esper_core.errors import CheckpointError
from esper_core.hosts.base import HostError
from esper_core.lr_schedulers import join_group, reference_base_lr, scheduler_tree
from esper_core.optim_state import SLOT_KEY, plan_load
from esper_core.slot import SeedSlot

__all__ = ["SLOT_KEY", "OptimizerBinding", "host_parameters"]

#: Keys a caller may not set through ``group_options`` (the binding owns them).
_RESERVED = frozenset({"params", "param_names", "lr", SLOT_KEY})


def _has_scheduler(optimizer: torch.optim.Optimizer) -> bool:
    # Every torch LRScheduler (all but ReduceLROnPlateau) marks the optimizer's step method
    # when it is constructed; that mark is the only public trace a scheduler leaves.
    return bool(getattr(optimizer.step, "_wrapped_by_lr_sched", False))


class OptimizerBinding:
    """Bind ``optimizer`` to ``slots`` (a mapping slot id -> SeedSlot, e.g. ``model.slots``).

    Adds one param group per slot (empty until the slot holds a seed; reused when the
    optimizer already has a group tagged with that slot). ``lr`` is the seed groups' base
    learning rate (default: with ``schedulers``, the base lr they schedule the optimizer's
    first group from, so seeds follow the host's schedule exactly; else the optimizer's
    default lr); ``group_options`` are extra
    per-group settings (``weight_decay``, ``betas``...). ``schedulers`` lists the learning
    rate schedulers already attached to ``optimizer`` (``[]`` for none); leaving it
    ``None`` while a scheduler is attached raises :class:`~esper_core.errors.HostError`,
    because that scheduler would fail on its next ``step()``. Create the binding before
    the scheduler and nothing needs to be passed.

    Raises :class:`~esper_core.errors.HostError`, with the optimizer unchanged, for a
    non-optimizer, ``torch.optim.LBFGS`` (one param group only), a negative or non-finite
    ``lr``, a reserved key in ``group_options`` or a scheduler it cannot extend.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        slots: Mapping[str, SeedSlot],
        *,
        lr: float | None = None,
        schedulers: Sequence[Any] | None = None,
        **group_options: Any,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise HostError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if isinstance(optimizer, torch.optim.LBFGS):
            raise HostError("torch.optim.LBFGS supports one param group only; seeds need groups of their own")
        if lr is not None and (
            not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0
        ):
            raise HostError(f"lr must be a finite float >= 0 or None, got {lr!r}")
        bad = sorted(_RESERVED & set(group_options))
        if bad:
            raise HostError(f"group_options may not set {bad}: the binding owns them")
        # nn.ModuleDict (model.slots) is not a collections.abc.Mapping, but has items().
        if not hasattr(slots, "items") or not all(isinstance(s, SeedSlot) for _, s in slots.items()):
            raise HostError(f"slots must be a mapping slot id -> SeedSlot, got {type(slots).__name__}")
        self.optimizer = optimizer
        self.slots = dict(slots.items())
        self.group_options = group_options
        self._observers: dict[str, Any] = {}
        missing = [sid for sid in self.slots if self._find(sid) is None]
        if missing and schedulers is None and _has_scheduler(optimizer):
            raise HostError(
                "a learning-rate scheduler is already attached to this optimizer and would fail when "
                f"param groups for slots {missing} are added: create the OptimizerBinding before the "
                "scheduler, or pass the existing schedulers as schedulers=[...] (schedulers=[] for none)"
            )
        for slot_id in self.slots:  # before anything changes: sync() must not fail below
            self._check_free(slot_id, self._find(slot_id))
        self.schedulers = list(schedulers or [])
        members = [id(s) for top in self.schedulers for s in scheduler_tree(top)]
        if len(members) != len(set(members)):
            raise HostError(
                "a scheduler appears twice in schedulers (directly and inside SequentialLR/"
                "ChainedScheduler?); pass only the top-level schedulers"
            )
        self.lr = self._base_lr(lr)
        self._add_groups(missing)
        for slot_id, slot in self.slots.items():
            observer = self._observer_for(slot_id)
            slot.add_observer(observer)
            self._observers[slot_id] = observer
            self.sync(slot_id)

    def _base_lr(self, lr: float | None) -> float:
        """The seed groups' base lr: ``lr``, else the scheduled base lr of the optimizer's first
        group (so a seed follows the host's schedule exactly, k = 1; for a scheduler that keeps
        none, ``ReduceLROnPlateau``, that group's lr now), else the optimizer's lr.

        A scheduler may start from a base lr other than the optimizer's (``OneCycleLR`` from
        ``max_lr / div_factor``): an explicit ``lr`` is then read against that base, which the
        warning spells out, since ``lr=`` the optimizer's own value would mean k = 25 there.
        """
        base = reference_base_lr(self.schedulers, self.optimizer) if self.schedulers else None
        if lr is None:
            if base is not None:
                return base
            if self.schedulers:  # ReduceLROnPlateau keeps no base lr: the first group's lr now
                return float(self.optimizer.param_groups[0]["lr"])
            return float(self.optimizer.defaults.get("lr", 0.0))
        own = self.optimizer.defaults.get("lr")
        if base is not None and base > 0 and own is not None and not math.isclose(base, own) and lr != base:
            names = ", ".join(type(s).__name__ for s in self.schedulers)
            warnings.warn(
                f"OptimizerBinding(lr={lr:g}): {names} schedules the optimizer's first group from base lr "
                f"{base:g}, not the optimizer's lr {own:g}, so the seed groups follow that schedule scaled by "
                f"k = {lr:g} / {base:g} = {lr / base:g}; pass lr=None for the host's schedule exactly (k = 1)",
                UserWarning,
                stacklevel=3,
            )
        return float(lr)

    def _add_groups(self, slot_ids: list[str]) -> None:
        """Append an empty group per slot, extending the known schedulers; all or nothing."""
        optimizer = self.optimizer
        before = len(optimizer.param_groups)
        # join_group appends to the schedulers' per-group lists: keep copies to undo that.
        snapshots = [
            (s, {k: list(v) if isinstance(v, list) else v for k, v in vars(s).items()})
            for top in self.schedulers
            for s in scheduler_tree(top)
        ]
        named = any("param_names" in g for g in optimizer.param_groups)
        try:
            for slot_id in slot_ids:
                group: dict[str, Any] = {"params": [], "lr": self.lr, SLOT_KEY: slot_id, **self.group_options}
                optimizer.add_param_group(group)
                if named:
                    optimizer.param_groups[-1]["param_names"] = []
                for scheduler in self.schedulers:
                    join_group(scheduler, optimizer)
        except Exception:
            del optimizer.param_groups[before:]
            for scheduler, saved in snapshots:
                vars(scheduler).clear()
                vars(scheduler).update(saved)
            raise

    def _observer_for(self, slot_id: str) -> Any:
        return _BindingListener(self, slot_id)

    def _find(self, slot_id: str) -> dict[str, Any] | None:
        for group in self.optimizer.param_groups:
            if group.get(SLOT_KEY) == slot_id:
                return group
        return None

    def group(self, slot_id: str) -> dict[str, Any]:
        """The param group of ``slot_id`` (empty ``params`` while its slot holds no seed)."""
        if slot_id not in self.slots:
            raise HostError(f"slot {slot_id!r} is not bound; bound slots: {list(self.slots)}")
        group = self._find(slot_id)
        if group is None:
            raise HostError(f"the optimizer has no group for slot {slot_id!r}: it was removed by hand")
        return group

    def sync(self, slot_id: str | None = None) -> None:
        """Make each slot's group hold exactly its seed's current parameters (all slots by default).

        Called on every event of a slot; idempotent, so it is also safe to call by hand, for
        example after loading a checkpoint that rebuilt seeds. Parameters that leave a group
        lose their optimizer state; the group's hyperparameters (its scheduled lr) stay.
        """
        for sid in self.slots if slot_id is None else [slot_id]:
            slot = self.slots[sid]
            group = self.group(sid)
            params = list(slot.seed_parameters()) if slot.seed is not None else []
            name_of = {id(p): n for n, p in slot.named_parameters()}
            names = [name_of.get(id(p), "?") for p in params]
            if [id(p) for p in group["params"]] == [id(p) for p in params]:
                continue
            self._check_free(sid, group)
            for p in group["params"]:
                self.optimizer.state.pop(p, None)
            group["params"] = params
            if "param_names" in group:
                group["param_names"] = [f"{sid}.{n}" for n in names]

    def _check_free(self, slot_id: str, group: dict[str, Any] | None) -> None:
        """The seed's parameters must not sit in any other group of the optimizer."""
        slot = self.slots[slot_id]
        if slot.seed is None:
            return
        elsewhere = {id(p) for g in self.optimizer.param_groups if g is not group for p in g["params"]}
        name_of = {id(p): n for n, p in slot.named_parameters()}
        shared = [name_of.get(id(p), "?") for p in slot.seed_parameters() if id(p) in elsewhere]
        if shared:
            raise HostError(
                f"seed parameters {shared} of slot {slot_id!r} are already in another param group of the "
                "optimizer; give the base optimizer only host parameters (host_parameters(...))"
            )

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """``optimizer.load_state_dict(state)``, all or nothing, seed groups matched by slot.

        The whole state is validated first (:func:`esper_core.optim_state.plan_load` lists
        the checks): any problem raises :class:`~esper_core.errors.CheckpointError` naming
        the field, and the optimizer is exactly as before, group order included. Saved
        groups are then put into the optimizer's group order by their ``esper_slot`` tag;
        the optimizer's own groups are never reordered, so attached schedulers stay valid.
        A seed group absent from ``state`` is accepted while its slot holds no seed.
        """
        plan = plan_load(self.optimizer, state, list(self.slots))
        before = (list(self.optimizer.param_groups), self.optimizer.state)
        try:
            self.optimizer.load_state_dict(plan)
        except Exception as exc:  # validated, so only a user hook can get here; undo it
            self.optimizer.__setstate__({"param_groups": before[0], "state": before[1]})
            raise CheckpointError(
                f"optimizer state could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        """Stop listening to the slots (the groups stay)."""
        for slot_id, observer in self._observers.items():
            self.slots[slot_id].remove_observer(observer)
        self._observers.clear()


class _BindingListener:
    """The slot observer of one binding: re-syncs that slot's group on every event.

    A copy of the model (``copy.deepcopy``, ``pickle``, ``torch.save``) is not bound to this
    optimizer: in a copy the listener becomes :class:`_Unbound`, so the copy's seeds never
    reach the original's optimizer and the optimizer is not serialised with the model. Bind
    a copy with a new :class:`OptimizerBinding`.
    """

    def __init__(self, binding: OptimizerBinding, slot_id: str) -> None:
        self.binding = binding
        self.slot_id = slot_id

    def __call__(self, _event: object) -> None:
        self.binding.sync(self.slot_id)

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (_Unbound, ())


class _Unbound:
    """What a :class:`_BindingListener` becomes in a copy of the model: it does nothing."""

    def __call__(self, _event: object) -> None:
        return None


def host_parameters(model: nn.Module, slots: Mapping[str, SeedSlot]) -> list[nn.Parameter]:
    """Parameters of ``model`` that belong to no slot (what the base optimizer should hold)."""
    owned = {id(p) for slot in slots.values() for p in slot.parameters()}
    return [p for p in model.parameters() if id(p) not in owned]
