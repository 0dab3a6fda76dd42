"""Keep a ``torch.optim`` optimizer in step with the seeds that come and go.

A seed's parameters do not exist when the optimizer is built, so :class:`OptimizerBinding`
listens to each slot (slot observers are synchronous, so the optimizer is updated before
the next training step) and keeps exactly one param group per slot that holds a seed: its
own learning rate, tagged with ``esper_slot`` so checkpoints can be matched back. When a
seed goes, its group and its optimizer state go with it; other groups are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from esper_core.errors import CheckpointError
from esper_core.hosts.base import HostError
from esper_core.slot import SeedSlot

__all__ = ["SLOT_KEY", "OptimizerBinding", "host_parameters"]

#: Param-group key naming the slot a group belongs to.
SLOT_KEY = "esper_slot"


class OptimizerBinding:
    """Bind ``optimizer`` to ``slots`` (a mapping slot id -> SeedSlot, e.g. ``model.slots``).

    ``lr`` is the learning rate of seed groups (default: the optimizer's default lr);
    ``group_options`` are extra per-group settings (``weight_decay``, ``betas``...).
    Slots that already hold a seed when the binding is made join at once, in slot order.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        slots: Mapping[str, SeedSlot],
        *,
        lr: float | None = None,
        **group_options: Any,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise HostError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr < 0):
            raise HostError(f"lr must be a non-negative float or None, got {lr!r}")
        self.optimizer = optimizer
        self.slots = dict(slots.items())
        self.lr = optimizer.defaults.get("lr") if lr is None else float(lr)
        self.group_options = group_options
        self._observers: dict[str, Any] = {}
        for slot_id, slot in self.slots.items():
            observer = self._observer_for(slot_id)
            slot.add_observer(observer)
            self._observers[slot_id] = observer
            self.sync(slot_id)

    def _observer_for(self, slot_id: str) -> Any:
        return _BindingListener(self, slot_id)

    def group(self, slot_id: str) -> dict[str, Any] | None:
        """The param group of ``slot_id``, or ``None`` when its slot holds no seed."""
        for group in self.optimizer.param_groups:
            if group.get(SLOT_KEY) == slot_id:
                return group
        return None

    def sync(self, slot_id: str | None = None) -> None:
        """Make the seed groups match the slots' current parameters (all slots by default).

        Called on every event of a slot; idempotent, so it is also safe to call by hand, for
        example after loading a checkpoint that rebuilt seeds.
        """
        for sid in self.slots if slot_id is None else [slot_id]:
            slot = self.slots[sid]
            params = list(slot.seed_parameters()) if slot.seed is not None else []
            group = self.group(sid)
            if group is not None and [id(p) for p in group["params"]] == [id(p) for p in params]:
                continue
            if group is not None:
                self._drop(group)
            if params:
                self.optimizer.add_param_group(
                    {"params": params, "lr": self.lr, SLOT_KEY: sid, **self.group_options}
                )

    def _drop(self, group: dict[str, Any]) -> None:
        for p in group["params"]:
            self.optimizer.state.pop(p, None)
        # By identity: list.remove would compare dicts, and so tensors, by value.
        index = next(i for i, g in enumerate(self.optimizer.param_groups) if g is group)
        del self.optimizer.param_groups[index]

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """``optimizer.load_state_dict(state)`` after ordering seed groups as in ``state``.

        Torch matches groups by position; seeds may have joined in another order than the
        slots are listed, so the groups are first put in the checkpoint's order by their
        ``esper_slot`` tag. A slot in the checkpoint without a seed here is a
        :class:`~esper_core.errors.CheckpointError`.
        """
        saved = state.get("param_groups") if isinstance(state, Mapping) else None
        if not isinstance(saved, list):
            raise CheckpointError(
                f"optimizer state must have a 'param_groups' list; got {type(saved).__name__}"
            )
        plain = [g for g in self.optimizer.param_groups if g.get(SLOT_KEY) is None]
        tagged = {g[SLOT_KEY]: g for g in self.optimizer.param_groups if g.get(SLOT_KEY) is not None}
        wanted = [g.get(SLOT_KEY) for g in saved]
        missing = [s for s in wanted if s is not None and s not in tagged]
        extra = sorted(set(tagged) - {s for s in wanted if s is not None})
        if missing or extra or len(plain) != wanted.count(None):
            raise CheckpointError(
                f"param_groups: checkpoint has seed groups {[s for s in wanted if s is not None]} and "
                f"{wanted.count(None)} other groups; this optimizer has seed groups {sorted(tagged)} and "
                f"{len(plain)} other groups"
            )
        plain_iter = iter(plain)
        self.optimizer.param_groups[:] = [next(plain_iter) if s is None else tagged[s] for s in wanted]
        self.optimizer.load_state_dict(dict(state))

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
