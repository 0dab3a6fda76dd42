"""Checkpoints: a slot's lifecycle inside an ordinary ``state_dict``, loaded all-or-nothing.

A slot stores its envelope (the codec of its state, :mod:`esper_core.codec`) as its extra
state, key ``<slot path>._extra_state``, as JSON text: one string, so a checkpoint loads with
``torch.load(weights_only=True)`` and the restricted unpickler does not pay per field. The
seed's and blend gate's weights travel next to it as ordinary tensors.

**Restoring into a fresh model.** A fresh slot has no seed module to copy tensors into, so
:func:`plan_restore` rebuilds the seed from the envelope's (topology, blueprint, dim,
options) through the registry, and the blend gate too. ``nn.Module.load_state_dict`` calls
``set_extra_state`` before it descends into the slot's children, so the rebuilt modules
exist by the time their tensors are copied. A module that already sits in the slot with the
same blueprint and options is reused, so loading into a live model updates the parameters
in place and an optimizer holding them stays valid. Rebuilding never draws from the global
RNG (modules are built under a forked RNG; their values are overwritten anyway).

**All or nothing.** :func:`load_checkpoint` checks everything before it changes anything:
every envelope; the seed and gate tensors against the modules the envelopes need (sizes
from the registry's exact counts first, so a small file cannot make the loader allocate a
huge seed); and every other key of the model (missing, unexpected, not a tensor, shape,
dtype kind, sparse layout, ``meta`` device). A bad checkpoint raises
:class:`~esper_core.errors.CheckpointError` naming the key or field, and the whole model is
as it was.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import nn

from esper_core._checks import shown
from esper_core._legacy import LEGACY_MODULE_NAMES, may_be_legacy, rename_legacy_keys
from esper_core._state_keys import EXTRA_STATE_SUFFIX, walk
from esper_core._tensor_checks import (
    check_declared_size,
    check_module_tensors,
    check_other_keys,
    group_by_slot,
)
from esper_core._wrappers import wrapper_key_hint
from esper_core.codec import state_text
from esper_core.errors import CheckpointError
from esper_core.restore import RestorePlan, build_modules, check_envelope, forked_rng, restore_slot
from esper_core.slot_state import SlotConfig, SlotState

__all__ = [
    "EXTRA_STATE_SUFFIX",
    "SlotEntry",
    "SlotEnvelope",
    "find_slots",
    "load_checkpoint",
    "slot_envelope",
]

#: Key suffix under which ``nn.Module.state_dict`` stores a module's extra state.


class Restorable(abc.ABC):  # noqa: B024 (an interface to register with, no abstract methods)
    """What this module restores: :class:`~esper_core.slot.SeedSlot` registers itself here
    (``Restorable.register``), so that finding the slots of a model needs no import of
    the slot module, which imports this one (its envelope and its ``load_state_dict``)."""


@functools.cache
def _restorable(cls: type) -> bool:
    # Once per class: an ABC's isinstance costs more than the rest of the walk.
    return issubclass(cls, Restorable)


class SlotEntry(NamedTuple):
    """A slot found in a model, with the state-dict prefix of its entries."""

    prefix: str
    slot: Any


def find_slots(model: nn.Module, modules: list[tuple[str, nn.Module]] | None = None) -> list[SlotEntry]:
    """Every :class:`~esper_core.slot.SeedSlot` in ``model`` (``model`` itself included), at
    its first path as ``named_modules()`` lists it. ``modules``: ``walk(model)`` if at hand."""
    seen: set[int] = set()
    found = []
    for name, module in walk(model) if modules is None else modules:
        if _restorable(type(module)) and id(module) not in seen:
            seen.add(id(module))
            found.append(SlotEntry(f"{name}." if name else "", module))
    return found


def slot_envelope(slot: Any) -> dict[str, Any]:
    """The slot's checkpoint envelope as JSON data (its text is ``slot.lifecycle_text()``)."""
    from esper_core.codec import encode_envelope

    return encode_envelope(slot.config, slot.state)


class SlotEnvelope:
    """One slot's envelope as its ``state_dict`` extra state (held by the slot, one per slot).

    It remembers three things so that saving and loading cost nothing they need not: the
    JSON text of the current state (encoded once per state value), the envelope object the
    current state was restored from (``load_checkpoint`` restores every slot, then
    ``load_state_dict`` hands each the same object again: a no-op), and the plan the load
    pre-hook checked against the file's tensors (committed by ``set_extra_state``). A copy
    of a slot starts with an empty one.
    """

    def __init__(self) -> None:
        self._text: tuple[SlotState, str] | None = None
        self._source: tuple[object, SlotState] | None = None
        self._planned: tuple[object, SlotState, RestorePlan] | None = None
        self._module_keys: list[tuple[str, bool]] = []  # the seed's (True) and gate's keys the pre-hook saw

    def text(self, config: SlotConfig, state: SlotState) -> str:
        """The envelope of ``state`` as JSON text (cached per state value; call :meth:`forget` when the config changes)."""
        cached = self._text
        if cached is None or cached[0] is not state:
            cached = self._text = (state, state_text(config, state))
        return cached[1]

    def forget(self) -> None:
        """Drop the cached text (the configuration changed)."""
        self._text = None

    def remember(self, envelope: object, state: SlotState) -> None:
        """``state`` was restored from ``envelope``."""
        self._source = (envelope, state)

    def restored_from(self, envelope: object, state: SlotState) -> bool:
        """Whether loading ``envelope`` into a slot in ``state`` would change nothing: it is the
        very object ``state`` was restored from, or ``state``'s own text (identity, then equality)."""
        source = self._source
        if source is not None and envelope is source[0] and source[1] is state:
            return True
        # Compared with the text only when it is at hand: encoding it just to compare would cost
        # more than the restore it might spare (which is a no-op for an equal state anyway).
        cached = self._text
        return cached is not None and cached[0] is state and envelope == cached[1]

    def before_load(self, slot: Any, state_dict: dict[str, Any], prefix: str) -> None:
        """The slot's load pre-hook: check the envelope against the file's tensors (sizes before
        anything is built) before torch copies any of them into the slot."""
        envelope = state_dict.get(prefix + EXTRA_STATE_SUFFIX)
        if may_be_legacy(envelope):  # load_state_dict works on its own copy of the dict
            rename_legacy_keys(state_dict, prefix)
        # torch hands a module only its own keys: the seed's and blend gate's tensors are here.
        seed, gate = f"{prefix}seed.", f"{prefix}blend_gate."
        self._module_keys = [
            (key, key.startswith(seed)) for key in state_dict if key.startswith((seed, gate))
        ]
        self._planned = None
        if envelope is not None and not slot.restored_from(envelope):
            self._planned = (envelope, slot.state, check_slot_load(slot, state_dict, prefix))

    def dropped(self, seed: object, gate: object) -> list[str]:
        """After a load: the file's tensors for a seed or blend gate that the slot does not have
        (``None``), which torch skips without a word. The slot's post-hook reports them."""
        keys, self._module_keys = self._module_keys, []
        if not keys or (seed is not None and gate is not None):
            return []
        return [key for key, of_seed in keys if (seed if of_seed else gate) is None]

    def __getstate__(self) -> dict[str, Any]:  # a copy of the slot encodes and restores anew
        return {}

    def __setstate__(self, _state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def load(self, slot: Any, envelope: object) -> None:
        """``set_extra_state``: commit the pre-hook's plan for ``envelope``, else restore it now.

        ``load_state_dict`` calls this before the seed's tensors are copied; the slot's
        post-hook takes the activity meter's reference once they are in.
        """
        planned, self._planned = self._planned, None
        state = slot.state
        if self.restored_from(envelope, state):  # what load_checkpoint has just restored: nothing to do
            return
        if planned is not None and planned[0] is envelope and planned[1] is state:
            plan = planned[2]
            slot.restore_state(plan.state, plan.seed, plan.gate, take_reference=False, source=envelope)
            return
        restore_slot(slot, envelope, take_reference=False)


# ---- a whole model -------------------------------------------------------------------------------------


def load_checkpoint(
    model: nn.Module, state_dict: Mapping[str, Any], *, strict: bool = True, assign: bool = False
) -> Any:
    """``nn.Module.load_state_dict(model, state_dict)``, all or nothing, with every slot restored.

    Checks every envelope, every seed and blend-gate tensor against the modules the envelopes
    need, and every other key of the model, before anything changes; a bad checkpoint raises
    :class:`CheckpointError` naming the key and leaves the whole model as it was. Returns
    what ``load_state_dict`` returns (missing and unexpected keys, empty when ``strict``).
    ``MorphogeneticModel.load_state_dict`` and ``SeedSlot.load_state_dict`` are this function.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"a state dict must be a mapping, got {type(state_dict).__name__}")
    try:  # every key is a str (else a TypeError), and one text to scan for version-1 names, in C
        keys = "\n" + "\n".join(state_dict)
    except TypeError:
        odd = next(key for key in state_dict if not isinstance(key, str))
        raise CheckpointError(
            f"checkpoint key {shown(odd)} is a {type(odd).__name__}; accepted: str keys"
        ) from None
    for name, flag in (("strict", strict), ("assign", assign)):
        if type(flag) is not bool:
            raise CheckpointError(f"load_checkpoint {name} must be True or False, got {shown(flag)}")
    modules = walk(model)  # once: slots, key checks
    entries = find_slots(model, modules)
    if any(f"\n{old}" in keys or f".{old}" in keys for old in LEGACY_MODULE_NAMES):
        state_dict = dict(state_dict)  # a version-1 file: today's key names, on a copy
        for prefix, _ in entries:
            rename_legacy_keys(state_dict, prefix)
    checked = []
    for prefix, slot in entries:
        key = prefix + EXTRA_STATE_SUFFIX
        if key not in state_dict:
            if strict:
                raise CheckpointError(
                    f"checkpoint field {key!r} is missing: no envelope for slot {slot.slot_id!r}"
                    + wrapper_key_hint(key, state_dict)
                )
            continue
        checked.append((prefix, slot, _checked_envelope(slot, prefix, state_dict[key])))
    tensors = None  # the file's seed and gate tensors by slot, grouped only when some module is built
    if any(plan.params for _, _, plan in checked):  # seeds to build: their size against the file first
        tensors = group_by_slot([prefix for prefix, _ in entries], state_dict)
        for prefix, slot, plan in checked:
            check_declared_size(prefix, slot, plan, tensors[prefix]["seed"])
    with forked_rng():  # modules are built only once every envelope is known to be good
        built = [(prefix, slot, build_modules(slot, plan)) for prefix, slot, plan in checked]
    envelopes = {prefix + EXTRA_STATE_SUFFIX for prefix, _ in entries}
    if len(built) == len(entries) and all(p.seed is s.seed and p.gate is s.blend_gate for _, s, p in built):
        # Every slot keeps its modules (a resume into the live model): the tree as it is, in one pass.
        check_other_keys(model, [], envelopes, state_dict, strict, modules)
    else:
        tensors = (
            tensors if tensors is not None else group_by_slot([prefix for prefix, _ in entries], state_dict)
        )
        for prefix, _slot, plan in built:
            check_module_tensors(prefix, plan, tensors[prefix], strict)
        check_other_keys(model, [p for p, _ in entries], envelopes, state_dict, strict, modules)
    for prefix, slot, plan in built:
        source = state_dict[prefix + EXTRA_STATE_SUFFIX]
        slot.restore_state(plan.state, plan.seed, plan.gate, take_reference=False, source=source)
    # load_state_dict hands each slot the same envelope object again: a no-op (restored_from).
    # nn.Module's own method: the keys were checked against nn.Module.state_dict's, and the
    # slot's and MorphogeneticModel's load_state_dict are this function.
    # The slots' post-hooks add to ``unexpected_keys`` what no module took (see SlotEnvelope.dropped).
    return nn.Module.load_state_dict(model, state_dict, strict=strict, assign=assign)


def check_slot_load(slot: Any, state_dict: Mapping[str, Any], prefix: str) -> RestorePlan:
    """The restore plan for one slot loaded by a plain ``load_state_dict`` of a model around it.

    ``state_dict`` holds (at least) the slot's own keys under ``prefix``, as the slot's load
    pre-hook sees them. Checks the envelope, the seed's declared size against the tensors
    present (before building anything), then builds the modules and checks every tensor
    present for them: shape, dtype kind, layout, device, type. Missing and unexpected keys
    are left to ``load_state_dict``'s ``strict``, which a pre-hook cannot see. Changes
    nothing; raises :class:`CheckpointError` naming the key.
    """
    tensors = group_by_slot([prefix], state_dict)[prefix]
    plan = _checked_envelope(slot, prefix, state_dict[prefix + EXTRA_STATE_SUFFIX])
    check_declared_size(prefix, slot, plan, tensors["seed"])
    with forked_rng():
        plan = build_modules(slot, plan)
    check_module_tensors(prefix, plan, tensors, strict=False)
    return plan


def _checked_envelope(slot: Any, prefix: str, envelope: object) -> RestorePlan:
    if slot.restored_from(envelope):  # the slot's own state (a resume into a live model): nothing to decode
        return RestorePlan(slot.state, None, None)
    try:
        return check_envelope(slot, envelope)
    except CheckpointError as exc:
        raise CheckpointError(f"{prefix}{EXTRA_STATE_SUFFIX}: {exc}") from None
