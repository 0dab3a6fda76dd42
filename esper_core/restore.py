"""Restoring one slot from its envelope: check everything, build the modules, then commit.

:func:`plan_restore` validates an envelope for a slot (identity, registry, options, size)
and builds the seed and blend gate the state needs into a :class:`RestorePlan` without
touching the slot; :func:`restore_slot` commits a valid plan through the slot's public
``restore_state``. A module that already sits in the slot with the same blueprint and
options is reused, so loading into a live model updates its parameters in place and an
optimizer holding them stays valid. Modules are built under a forked RNG, so restoring
never shifts the global random stream. See :mod:`esper_core.checkpoint` for whole models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import attrs
import torch
from torch import nn

from esper_core import stages as st
from esper_core._checks import shown
from esper_core.alpha import BlendAlgorithm
from esper_core.codec import Envelope, decode_envelope
from esper_core.errors import CheckpointError, EsperError, LifecycleError, UnknownBlueprintError
from esper_core.slot_state import SlotState

__all__ = [
    "RestorePlan",
    "build_modules",
    "check_envelope",
    "check_modules",
    "forked_rng",
    "plan_restore",
    "restore_slot",
    "reuses",
]


@attrs.frozen(eq=False)
class RestorePlan:
    """What a valid envelope will put into its slot, built without touching the slot."""

    state: SlotState
    seed: nn.Module | None
    gate: nn.Module | None
    params: int = 0
    """The exact parameter count, from the registry, of the seed module the plan must build (0
    when it builds none: no live seed, or the slot's own seed module serves, see :func:`reuses`)."""


def _check_identity(slot: Any, env: Envelope) -> None:
    if env.slot_id != slot.slot_id:
        raise CheckpointError(
            f"checkpoint field 'slot_id': got {env.slot_id!r}; accepted: {slot.slot_id!r} (the slot being loaded)"
        )
    if env.topology != slot.topology:
        from esper_core.registry import get_topology

        try:  # an unknown topology is named as such (this slot's own was checked at construction)
            get_topology(env.topology)
        except EsperError as exc:
            raise CheckpointError(f"checkpoint field 'topology': {exc}") from None
        raise CheckpointError(
            f"checkpoint field 'topology': got {env.topology!r}; accepted: {slot.topology!r} (this slot's topology)"
        )
    if env.dim != slot.dim:
        raise CheckpointError(
            f"checkpoint field 'dim': got {env.dim}; accepted: {slot.dim} (this slot's width)"
        )


def _check_seed(slot: Any, env: Envelope) -> int:
    """Check the envelope's blueprint and options against the registry; return the exact size."""
    from esper_core.registry import get_blueprint

    seed = env.state.seed
    assert seed is not None
    known = seed.provenance
    try:
        spec = get_blueprint(
            env.topology,
            seed.blueprint,
            distribution=None if known is None else known.distribution,
            version=None if known is None else known.version,
        )
    except UnknownBlueprintError as exc:  # the message says what to install when the file knows
        raise CheckpointError(f"checkpoint field 'state.seed.blueprint': {exc}") from None
    try:
        resolved = spec.resolve(env.dim, seed.options_dict)
        count = spec.count_params(env.dim, **resolved)
    except EsperError as exc:
        raise CheckpointError(f"checkpoint field 'state.seed.options': {exc}") from None
    except Exception as exc:  # a pack's validate() or count may fail in any way
        raise CheckpointError(
            f"checkpoint field 'state.seed.options': {spec.key} rejected them: {type(exc).__name__}: {exc}"
        ) from exc
    if resolved != seed.options_dict:
        raise CheckpointError(
            f"checkpoint field 'state.seed.options': got {seed.options_dict}; accepted: every option of "
            f"{spec.key} resolved ({resolved})"
        )
    limit = slot.config.max_seed_params
    if count > limit:
        raise CheckpointError(
            f"checkpoint field 'state.seed.options': {spec.key} with {resolved} at dim {env.dim} has {count:,} "
            f"parameters, more than the slot's max_seed_params ({limit:,})"
        )
    return count


def _live(state: SlotState) -> bool:
    return state.stage in st.LIVE


def _needs_gate(state: SlotState) -> bool:
    return _live(state) and state.seed is not None and state.seed.algorithm is BlendAlgorithm.GATE


def reuses(slot: Any, state: SlotState) -> bool:
    """Whether the seed module in ``slot`` serves ``state``: the same blueprint and options
    (a load into a live model then copies tensors into it and builds nothing)."""
    current, wanted = slot.state.seed, state.seed
    return (
        current is not None
        and wanted is not None
        and current.blueprint == wanted.blueprint
        and current.options == wanted.options
        and slot.seed is not None
    )


def check_envelope(slot: Any, envelope: object) -> RestorePlan:
    """Validate ``envelope`` (JSON text or data) for ``slot``; a plan without modules yet.

    Decodes once and checks the slot's identity and, for a live seed that must be built, the
    blueprint, its options and its exact size (``params``) through the registry (a seed the
    slot already holds was checked when it was built). Changes nothing; raises
    :class:`CheckpointError` naming the first bad field.
    """
    env = decode_envelope(envelope)
    _check_identity(slot, env)
    state = env.state
    if not _live(state) or reuses(slot, state):
        return RestorePlan(state, None, None)
    return RestorePlan(state, None, None, _check_seed(slot, env))


def build_modules(slot: Any, plan: RestorePlan) -> RestorePlan:
    """``plan`` with the seed and blend gate its state needs: reused from the slot when the same
    blueprint and options already sit there, else rebuilt. Call under :func:`forked_rng`."""
    state = plan.state
    if not _live(state):
        return plan
    seed = slot.seed if reuses(slot, state) else _build(slot, "seed", state)
    gate = None
    if _needs_gate(state):
        gate = slot.blend_gate
        gate = gate if gate is not None else _build(slot, "gate", state)
    return RestorePlan(state, seed, gate, plan.params)


def plan_restore(slot: Any, envelope: object) -> RestorePlan:
    """Validate ``envelope`` for ``slot`` and build the modules it needs; change nothing."""
    plan = check_envelope(slot, envelope)
    with forked_rng():
        return build_modules(slot, plan)


@contextlib.contextmanager
def forked_rng() -> Iterator[None]:
    """Module initialisers draw random numbers: restoring must not move the global stream."""
    with torch.random.fork_rng(devices=[]):
        yield


def _build(slot: Any, what: str, state: SlotState) -> nn.Module:
    try:
        if what == "gate":
            module = slot.build_blend_gate()
        else:
            module = slot.build_seed(state.seed.blueprint, state.seed.options_dict)
    except Exception as exc:  # a pack's factory can fail in any way; the slot stays unchanged
        field = "state.seed.algorithm" if what == "gate" else "state.seed.blueprint"
        raise CheckpointError(
            f"checkpoint field {field!r}: rebuilding the {what} module failed: {type(exc).__name__}: {exc}"
        ) from exc
    if module.training != slot.training:
        module.train(slot.training)
    return module


def check_modules(state: SlotState, seed: object, gate: object) -> None:
    """Raise :class:`LifecycleError` unless ``seed`` and ``gate`` are what ``state`` needs: a
    seed module exactly in live stages, a blend gate exactly for a live GATE blend."""
    for what, module in (("seed", seed), ("gate", gate)):
        if module is not None and not isinstance(module, nn.Module):
            raise LifecycleError(f"restore_state needs {what}: an nn.Module or None, got {shown(module)}")
    if (seed is not None) != _live(state) or (gate is not None) != _needs_gate(state):
        raise LifecycleError(
            f"stage {state.stage.name} needs a seed module: {_live(state)}, a blend gate: "
            f"{_needs_gate(state)}; got {type(seed).__name__} and {type(gate).__name__}"
        )


def restore_slot(slot: Any, envelope: object, *, take_reference: bool = True) -> None:
    """Load ``envelope`` into ``slot``: validate fully, build, then commit (or raise, changing nothing).

    Costs nothing when ``envelope`` is what the slot was last restored from (the very same
    text object, as ``load_checkpoint`` passes it to ``load_state_dict``) or the slot's own text.
    """
    if slot.restored_from(envelope):
        return
    plan = plan_restore(slot, envelope)
    slot.restore_state(plan.state, plan.seed, plan.gate, take_reference=take_reference, source=envelope)
