"""Checkpoint and restore of a :class:`~esper_core.slot.SeedSlot`.

``SeedSlot.get_extra_state`` / ``set_extra_state`` delegate here, so a slot's lifecycle
travels inside an ordinary ``state_dict()`` as one versioned envelope of primitives
(:mod:`esper_core.envelope`) and the seed's weights travel as ordinary tensors.

**Restoring into a fresh model.** A freshly built slot has no seed module, so there is
nothing for the seed's tensors to be copied into. :func:`restore_slot` therefore rebuilds
the seed from the envelope's (topology, blueprint, dim, options) through the registry, and
the gate module too. ``nn.Module.load_state_dict`` calls a module's ``set_extra_state``
*before* it descends into that module's children, so the rebuilt modules exist by the time
their tensors are copied. :func:`load_checkpoint` does not rely on that ordering at all: it
restores every slot of the model up front and then calls ``load_state_dict``.

**Bad files lose nothing.** :func:`plan_restore` checks everything (shape and types of the
envelope, the registry, the target slot, consistency between stage, schedule and pending
prune) and builds the new modules into a plan without touching the slot; only a fully
valid plan is committed, by plain attribute assignments that cannot fail. Any problem is
a :class:`~esper_core.errors.CheckpointError` naming the field.

**Restoring never perturbs the global RNG.** Rebuilding a module runs its initialiser,
which would draw from the global generator and shift every random number after a resume;
modules are therefore built under a forked RNG (their values are overwritten by the
checkpoint's tensors anyway).

A module that already sits in the slot with the same blueprint and options is *reused*, so
loading a checkpoint into a live model updates the parameters in place and an optimizer
holding them stays valid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from esper_core import stages as st
from esper_core.activity import ActivityState
from esper_core.alpha import AlphaController
from esper_core.envelope import (
    ENVELOPE_VERSION,
    MetricsRecord,
    envelope_text,
)
from esper_core.envelope_fields import field_names
from esper_core.errors import CheckpointError
from esper_core.restore_plan import RestorePlan, plan_restore
from esper_core.stages import SeedStage

if TYPE_CHECKING:
    from esper_core.slot import SeedSlot

__all__ = [
    "EXTRA_STATE_SUFFIX",
    "RestorePlan",
    "SlotEntry",
    "encode_slot",
    "find_slots",
    "install_load_hooks",
    "load_checkpoint",
    "plan_restore",
    "restore_slot",
    "slot_text",
]

#: Key suffix under which ``nn.Module.state_dict`` stores a module's extra state.
EXTRA_STATE_SUFFIX = "_extra_state"

_S = SeedStage


# ---- encoding ---------------------------------------------------------------------------------


def encode_slot(slot: SeedSlot) -> dict[str, Any]:
    """The slot's lifecycle as a version-1 envelope of primitives (weights not included).

    Built straight from the slot's attributes, field for field in the records' order and
    with their types (``tests/checkpoint`` checks that a decode and re-encode through the
    records in :mod:`esper_core.envelope` reproduces it exactly): a slot writes its
    envelope on every ``state_dict()`` and compares it on every load, so this path is
    kept free of intermediate objects.
    """
    return {
        "version": ENVELOPE_VERSION,
        "slot_id": slot.slot_id,
        "topology": slot.topology,
        "dim": int(slot.dim),
        "stage": int(slot._stage),
        "previous_stage": int(slot._previous_stage),
        "ticks_in_stage": int(slot._ticks_in_stage),
        "germinations": int(slot._germinations),
        "seed": None if slot._stage is _S.DORMANT else _seed_fields(slot),
    }


def _seed_fields(slot: SeedSlot) -> dict[str, Any]:
    a: AlphaController = slot._alpha
    activity: ActivityState = slot._activity
    metrics = slot._metrics
    pending = slot._pending_prune
    history = slot._stage_history
    return {
        "seed_id": slot._seed_id,
        "blueprint": slot._blueprint,
        "options": dict(sorted(slot._options.items())),
        "algorithm": slot._algorithm.value,
        "tempo": int(slot._tempo),
        "curve": slot._curve.value,
        "germination_target": float(slot._germination_target),
        "alpha": {
            "alpha": float(a.alpha),
            "start": float(a.start),
            "target": float(a.target),
            "mode": a.mode.value,
            "curve": a.curve.value,
            "steepness": float(a.steepness),
            "steps_total": int(a.steps_total),
            "steps_done": int(a.steps_done),
        },
        "metrics": {
            "epochs_total": int(metrics.epochs_total),
            "epochs_in_stage": int(metrics.epochs_in_stage),
            **{name: _float_or_none(getattr(metrics, name)) for name in _MEASURED},
        },
        "activity": {
            "ema": _float_or_none(activity.ema),
            "last": _float_or_none(activity.last),
            "samples": int(activity.samples),
        },
        "health_issues": list(slot._health_issues),
        "warned": sorted(slot._warned),
        "output_requires_grad": slot._output_requires_grad,
        "pending_prune": None if pending is None else {"reason": pending[0], "initiator": pending[1]},
        "history": {"bound": history.maxlen, "stages": [int(s) for s in history]},
    }


#: The metrics that are None until measured (every MetricsRecord field after the two counters).
_MEASURED = tuple(field_names(MetricsRecord)[2:])


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


# ---- applying -----------------------------------------------------------------------------------------


def slot_text(slot: SeedSlot) -> str:
    """:func:`encode_slot` as the JSON text the slot stores in ``state_dict()``."""
    return envelope_text(encode_slot(slot))


def restore_slot(slot: SeedSlot, envelope: object, *, take_reference: bool = True) -> None:
    """Load ``envelope`` (JSON text or dict) into ``slot``: validate fully, then commit.

    An envelope identical (types included) to the slot's own current one is a no-op: the
    slot already is in that state, and every envelope the slot writes is valid. This keeps
    re-loading a checkpoint into the model that wrote it (and the second pass of
    :func:`load_checkpoint`) from rebuilding runtime state for nothing.
    ``take_reference`` is passed to :meth:`RestorePlan.commit`.
    """
    install_load_hooks(slot)
    if type(envelope) is str:
        # The slot's own text, byte for byte, is the exact (type-preserving) comparison.
        if _clocks_text(slot) in envelope and envelope == slot_text(slot):
            return
    elif _same_clocks(slot, envelope) and _identical(envelope, encode_slot(slot)):
        return
    plan_restore(slot, envelope).commit(slot, take_reference=take_reference)


def _clocks_text(slot: SeedSlot) -> str:
    """A piece of :func:`slot_text` that is cheap to build: absent, the texts cannot be equal."""
    return (
        f'"stage":{int(slot._stage)},"previous_stage":{int(slot._previous_stage)},'
        f'"ticks_in_stage":{slot._ticks_in_stage},"germinations":{slot._germinations},'
    )


def _same_clocks(slot: SeedSlot, data: object) -> bool:
    """A cheap necessary condition for an identical envelope (it spares most encodes)."""
    return (
        type(data) is dict
        and data.get("stage") == int(slot._stage)
        and data.get("ticks_in_stage") == slot._ticks_in_stage
        and data.get("germinations") == slot._germinations
    )


def _identical(a: object, b: object) -> bool:
    """Deep equality that also requires equal types (``1``, ``1.0`` and ``True`` differ)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)  # type: ignore[attr-defined]
    if type(a) is list:
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    if type(a) is float and a == 0.0:
        return b == 0.0 and math.copysign(1.0, a) == math.copysign(1.0, b)  # type: ignore[arg-type]
    return a == b


def _after_load(slot: nn.Module, _incompatible: object) -> None:
    # set_extra_state runs before the seed's tensors are copied, so the one piece of runtime
    # state derived from the weights - the activity meter's reference copy - is taken again
    # once they are in. (Not the whole ``_after_restore``: it runs the seed on a probe, which
    # would cost a forward and could move normalisation statistics that were just loaded.)
    if slot.seed is not None and st.runs_seed(slot._stage):
        slot._meter.start(slot._seed_tensors())


def install_load_hooks(slot: SeedSlot) -> None:
    """Make ``load_state_dict`` rebuild the slot's runtime state after its tensors are loaded.

    Idempotent. :func:`restore_slot` installs it on first use (PyTorch runs post-hooks
    registered during a load at the end of that same load); a slot may also call it when
    it is constructed.
    """
    if not slot.__dict__.get("_checkpoint_hooks_installed", False):
        slot.register_load_state_dict_post_hook(_after_load)
        slot.__dict__["_checkpoint_hooks_installed"] = True


class SlotEntry(NamedTuple):
    """A slot found in a model, with the state-dict prefix of its entries."""

    prefix: str
    slot: SeedSlot


def find_slots(model: nn.Module) -> list[SlotEntry]:
    """Every :class:`~esper_core.slot.SeedSlot` in ``model`` (``model`` itself included)."""
    from esper_core.slot import SeedSlot

    return [
        SlotEntry(f"{name}." if name else "", module)
        for name, module in model.named_modules()
        if isinstance(module, SeedSlot)
    ]


def load_checkpoint(model: nn.Module, state_dict: Mapping[str, Any], *, strict: bool = True) -> Any:
    """``model.load_state_dict(state_dict)`` with every slot validated and restored first.

    Every slot's envelope is checked, and the seed and gate tensors the checkpoint holds are
    compared (names and shapes) with the modules the envelope rebuilds, **before** anything
    in the model changes: a bad checkpoint raises :class:`CheckpointError` and leaves the
    whole model as it was. Then all slots are restored and the tensors are loaded.
    Returns what ``load_state_dict`` returns (missing and unexpected keys).
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"a state dict must be a mapping, got {type(state_dict).__name__}")
    plans = []
    for prefix, slot in find_slots(model):
        key = prefix + EXTRA_STATE_SUFFIX
        if key not in state_dict:
            if strict:
                raise CheckpointError(
                    f"checkpoint field {key!r} is missing: no envelope for slot {slot.slot_id!r}"
                )
            continue
        try:
            plan = plan_restore(slot, state_dict[key])
        except CheckpointError as exc:
            raise CheckpointError(f"{key}: {exc}") from None
        _check_tensors(prefix, plan, state_dict, strict)
        plans.append((slot, plan))
    for slot, plan in plans:
        plan.commit(slot, take_reference=False)  # load_state_dict's post-hook takes it
    return model.load_state_dict(state_dict, strict=strict)


def _check_tensors(prefix: str, plan: RestorePlan, state_dict: Mapping[str, Any], strict: bool) -> None:
    for name, module in (("seed", plan.seed), ("gate_module", plan.gate_module)):
        sub = f"{prefix}{name}."
        expected = {} if module is None else {sub + k: v for k, v in module.state_dict().items()}
        found = {k: v for k, v in state_dict.items() if k.startswith(sub)}
        for key, tensor in expected.items():
            if key not in found:
                if strict:
                    raise CheckpointError(
                        f"checkpoint tensor {key!r} is missing; the envelope's {name} needs it"
                    )
                continue
            value = found[key]
            if isinstance(tensor, torch.Tensor) and (
                not isinstance(value, torch.Tensor) or value.shape != tensor.shape
            ):
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise CheckpointError(
                    f"checkpoint tensor {key!r}: got {got}; accepted: a tensor of shape {tuple(tensor.shape)}"
                )
        if strict:
            for key in found:
                if key not in expected:
                    raise CheckpointError(
                        f"checkpoint tensor {key!r} does not belong to the {name} the envelope describes"
                    )
