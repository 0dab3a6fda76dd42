"""Seed slots on any ``nn.Module``, without editing its code.

:func:`inject_slots` puts a :class:`~esper_core.slot.SeedSlot` on the output of named
submodules: each target gets an instance-level ``forward`` that runs its own forward and
then the slot (exactly the same tensor while the slot is empty; see
:mod:`esper_core.attachment` for why this, and not a forward hook, is what survives
``torch.compile``, ``copy.deepcopy``, ``pickle`` and torch's fused inference paths). The
slots are registered as a child ``esper_slots`` so they move with ``.to()``, appear in
``state_dict`` and in ``parameters()``; :func:`remove_slots` restores the model exactly
(and refuses while a slot holds a seed, unless told to discard it: fold the model to keep
its seeds as plain modules).

Copies: ``copy.deepcopy(model)``, ``pickle`` and ``torch.save(model)`` +
``torch.load(..., weights_only=False)`` give an independent model whose submodules call its
own slots. ``copy.copy(model)`` is shallow, as for any ``nn.Module``: it shares submodules,
slots and the injection with the original. A ``state_dict`` loads into a fresh model
injected with the same targets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from esper_core._batches import Inputs, described
from esper_core._checks import check_bool, check_mapping, shown
from esper_core._decoding import install_guards
from esper_core._inject_probe import check_declared_dim, probe, probed_dim, submodule
from esper_core._injection import STATE_KEY as _STATE
from esper_core._injection import Injection, InjectionTarget, attached, get_injection
from esper_core._names import class_name
from esper_core._outputs import check_output_key
from esper_core._placement import host_placement, place_slots
from esper_core._slot_ids import check_slot_id
from esper_core._slot_options import check_slot_options
from esper_core._wrappers import refuse_parallel
from esper_core.attachment import SlotAttachment
from esper_core.hosts.base import HostError
from esper_core.model import Evaluation, evaluate_slots
from esper_core.registry import get_topology
from esper_core.slot import SeedSlot
from esper_core.stages import LIVE

__all__ = [
    "SLOTS_ATTRIBUTE",
    "InjectedSlots",
    "Injection",
    "InjectionTarget",
    "alpha_overrides",
    "evaluate_injected",
    "get_injection",
    "inject_slots",
    "remove_slots",
]

# Public here, where users import them (reprs, pickles and docs name esper_core.inject).
for _cls in (Injection, InjectionTarget):
    _cls.__module__ = __name__

#: Name of the child module that holds injected slots.
SLOTS_ATTRIBUTE = "esper_slots"


class InjectedSlots(nn.ModuleDict):
    """The slots :func:`inject_slots` attaches to a model, as one child module.

    Being a child makes the slots' parameters and checkpoint state part of the model's own.
    Its ``forward`` is the identity because containers such as ``nn.Sequential`` call every
    child in order: the slots, added last, must then pass the output through unchanged
    (the slots themselves run from their targets' ``forward``, never through this call).
    """

    def forward(self, x: Any) -> Any:
        return x


def _normalise(targets: Mapping[str, str] | Iterable[InjectionTarget]) -> list[InjectionTarget]:
    accepted = "a mapping path -> topology or an iterable of InjectionTarget objects"
    if isinstance(targets, Mapping):
        items: list[Any] = [InjectionTarget(path, topology) for path, topology in targets.items()]
    else:
        try:
            if isinstance(targets, str | bytes | Tensor):
                raise TypeError
            items = list(targets)  # type: ignore[arg-type]
        except TypeError:
            raise HostError(f"targets must be {accepted}; got {described(targets)}") from None
    for item in items:
        if not isinstance(item, InjectionTarget):
            raise HostError(f"targets must be {accepted}; got an item {described(item)}")
    if not items:
        raise HostError("inject_slots needs at least one target; got none")
    return items


def inject_slots(
    model: nn.Module,
    targets: Mapping[str, str] | Iterable[InjectionTarget],
    *,
    example_input: Tensor | tuple[Any, ...] | list[Any] | Mapping[str, Any] | None = None,
    **slot_options: Any,
) -> nn.ModuleDict:
    """Attach a seed slot to the output of each target submodule of ``model``.

    ``model`` may be a ``torch.compile`` handle: the slots go on the compiled module
    (``model._orig_mod``; target paths are its paths), and the handle recompiles with them
    on its next call. Inside ``DistributedDataParallel`` or ``DataParallel`` it raises
    :class:`HostError` (the wrapper keeps the parameters it was built with): inject first,
    then wrap.

    ``targets`` maps submodule paths to topology names (slot ids from
    :attr:`InjectionTarget.resolved_id`), or is a list of :class:`InjectionTarget`. ``example_input``
    is what ``model`` is called with for one probe forward: a tensor (``model(x)``), a tuple
    or list (``model(*x)``) or a mapping such as a tokenizer's output (``model(**x)``). It
    is needed when a dim is not given, and when given it also checks the dims that are. A
    dim given for a target that is itself a layer declaring its output width (Conv and
    ConvTranspose ``out_channels``, Linear ``out_features``, BatchNorm/InstanceNorm
    ``num_features``, GroupNorm ``num_channels``, LayerNorm/RMSNorm ``normalized_shape[-1]``,
    Embedding ``embedding_dim``, ``transformers``' Conv1D ``nf``) on the topology's feature
    axis is checked against it without a probe.

    ``slot_options`` go to every ``SeedSlot`` (``gates``, ``embargo_epochs``,
    ``auto_advance``, ``isolate_blending``, ``activity_decay``, ``max_seed_params``). Each
    slot is created on its target's device and in its target's floating dtype (the model's
    where the target has no tensors), so seeds built later match the host; it follows
    ``model.to(...)`` afterwards. Returns the slots (also reachable as ``model.esper_slots``).

    A slot runs on every call of its target: a submodule called twice in one forward (a
    shared block, a layer reused in a loop) applies its seed twice. Inject at a module that
    runs once per forward.

    Everything is validated before the model is touched: :class:`HostError` names the bad
    value and what is accepted (a path that does not exist, a dim that does not match the
    layer or the probe, an invalid or repeated slot id, an unknown slot option, an
    ``example_input`` of another kind, a failing probe forward);
    :class:`~esper_core.errors.UnknownTopologyError` for an unknown topology;
    :class:`~esper_core.errors.LifecycleError` for a bad slot option value.
    """
    if not isinstance(model, nn.Module):
        raise HostError(f"inject_slots needs an nn.Module, got {class_name(model)}")
    seen = refuse_parallel(model, caller="inject_slots", change="adding slots")
    model = seen.module
    if get_injection(model) is not None:
        raise HostError(f"{seen.describe()} already has injected slots; call remove_slots(model) first")
    if hasattr(model, SLOTS_ATTRIBUTE):
        raise HostError(f"{seen.describe()} already has an attribute {SLOTS_ATTRIBUTE!r}; cannot inject")
    check_slot_options(
        slot_options,
        caller="inject_slots",
        identity="are set per target; give them in InjectionTarget(path, topology, dim=..., slot_id=...) instead",
    )
    items = _normalise(targets)
    ids = [t.resolved_id for t in items]
    for t, slot_id in zip(items, ids, strict=True):
        check_slot_id(slot_id, path=t.path, topology=t.topology)
        try:
            module = submodule(model, t.path)
        except HostError as exc:
            seen_through = f" (the paths of {seen.access}: inject_slots sees through the wrapper)"
            raise HostError(f"{exc}{seen_through if seen.wrappers else ''}") from None
        get_topology(t.topology)
        if t.dim is not None and (isinstance(t.dim, bool) or not isinstance(t.dim, int) or t.dim < 1):
            raise HostError(f"dim for {t.path!r} must be a positive int or None, got {t.dim!r}")
        try:
            check_output_key(t.output)
        except HostError as exc:
            raise HostError(f"target {t.path!r}: {exc}") from None
        # With output=..., the target returns several tensors: its declared width is not the slot's.
        if t.dim is not None and t.output is None:
            check_declared_dim(module, path=t.path, topology=t.topology, dim=t.dim)
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise HostError(
            f"slot ids must be unique; got {ids} ({repeated} repeated): give the targets distinct "
            "InjectionTarget(path, topology, slot_id=...)"
        )
    if example_input is None and any(t.dim is None for t in items):
        missing = [t.path for t in items if t.dim is None]
        raise HostError(
            f"targets {missing} have no dim: pass dim=... or example_input=... for a probe forward"
        )
    dims = {t.path: t.dim for t in items}
    if example_input is not None:
        seen = probe(model, [t.path for t in items], example_input)
        for t in items:
            dims[t.path] = probed_dim(
                seen.get(t.path, None),
                t.path in seen,
                path=t.path,
                topology=t.topology,
                dim=t.dim,
                key=t.output,
            )
    slots = InjectedSlots(
        {
            slot_id: SeedSlot(slot_id, topology=t.topology, dim=dims[t.path], **slot_options)
            for t, slot_id in zip(items, ids, strict=True)
        }
    )
    for t, slot_id in zip(items, ids, strict=True):  # its target's device and dtype, the model's layout
        place_slots(slots[slot_id], host_placement(submodule(model, t.path), model))
    overrides: dict[str, Tensor] = {}
    attachments = tuple(
        SlotAttachment(t.path, submodule(model, t.path), slots[slot_id], overrides, output=t.output)
        for t, slot_id in zip(items, ids, strict=True)
    )
    model.add_module(SLOTS_ATTRIBUTE, slots)
    for attachment in attachments:
        attachment.attach()
    guards: tuple[RemovableHandle, ...] = ()
    if any(get_topology(t.topology).sequence_axis is not None for t in items):
        guards = install_guards(model, [t.path for t in items], list(slots.values()))
    model.__dict__[_STATE] = Injection(slots, tuple(items), attachments, overrides, guards)
    return slots


def remove_slots(model: nn.Module, *, discard_seeds: bool = False) -> nn.ModuleDict:
    """Detach injected slots from ``model`` and return them; the model is as before injection.

    While a slot holds a seed (a stage in :data:`esper_core.stages.LIVE`, germinated to
    fossilized) this raises :class:`HostError` listing each such slot and its stage, and
    nothing is removed: from HOLDING on, the host was trained with the seed in its forward,
    so the host alone is not the trained model. ``esper_core.fold(model)`` keeps the seeds
    as plain modules; ``discard_seeds=True`` removes the slots and their seeds anyway (the
    returned slots still hold them). Also raises :class:`HostError` when ``model`` has no
    injected slots, a target's ``forward`` was replaced after injection, or (unless
    ``discard_seeds=True``) a target module itself was replaced. A ``torch.compile`` handle
    is seen through (the compiled module loses its slots; the handle recompiles); inside
    ``DistributedDataParallel``/``DataParallel`` it raises :class:`HostError`.
    """
    discard_seeds = check_bool("remove_slots discard_seeds", discard_seeds, error=HostError)
    model = refuse_parallel(model, caller="remove_slots", change="removing slots").module
    state = get_injection(model)
    if state is None:
        raise HostError(f"{class_name(model)} has no injected slots to remove")
    for attachment in () if discard_seeds else state.attachments:
        attachment.check_in_place(model)
    holding = [
        f"{slot_id!r} ({slot.stage.name})" for slot_id, slot in state.slots.items() if slot.stage in LIVE
    ]
    if holding and not discard_seeds:
        raise HostError(
            f"slots {', '.join(holding)} hold seeds that remove_slots would throw away (from HOLDING on, "
            "the host was trained with them in its forward). Call esper_core.fold(model) to keep them as "
            "plain modules, or remove_slots(model, discard_seeds=True) to drop them; nothing was removed"
        )
    # A module reachable under two target paths carries two attachments, the later one
    # wrapping the earlier: only the outermost is its forward, and they come off last first.
    outermost = {id(a.module): a for a in state.attachments}
    replaced = [a.path for a in outermost.values() if not a.installed()]
    if replaced:
        raise HostError(
            f"the forward of targets {replaced} was replaced after inject_slots; restore it before "
            "remove_slots (nothing was removed)"
        )
    for attachment in reversed(state.attachments):
        attachment.detach()
    for handle in state.guards:
        handle.remove()
    delattr(model, SLOTS_ATTRIBUTE)
    del model.__dict__[_STATE]
    return state.slots


@contextlib.contextmanager
def alpha_overrides(model: nn.Module, overrides: Mapping[str, Tensor]) -> Iterator[None]:
    """Within the block, injected slots use the given per-sample alphas (for counterfactual passes).

    ``model`` is seen through its wrappers (``torch.compile``, DDP, ``DataParallel``).
    """
    _, state = attached(model, "alpha_overrides")
    overrides = check_mapping("overrides", overrides, error=HostError)
    unknown = [s for s in overrides if s not in state.slots]
    if unknown:
        raise HostError(f"unknown slot ids {shown(unknown, 200)}; injected slots are {list(state.slots)}")
    for slot_id, alpha in overrides.items():
        _check_override(slot_id, alpha, state.slots[slot_id])
    previous = dict(state.overrides)
    state.overrides.update(overrides)
    try:
        yield
    finally:
        state.overrides.clear()
        state.overrides.update(previous)


def _check_override(slot_id: str, alpha: object, slot: SeedSlot) -> None:
    """What can be checked before the forward (the other sizes are only known then): a dense
    floating tensor, 0-dim or with the topology's number of dims and size 1 or ``dim`` on
    the feature axis. The slot checks the rest when it runs."""
    topology = get_topology(slot.topology)
    ndim, axis = topology.ndim, topology.feature_axis
    ok = (
        isinstance(alpha, Tensor)
        and alpha.layout is torch.strided
        and alpha.is_floating_point()
        and (alpha.dim() == 0 or (alpha.dim() == ndim and alpha.shape[axis] in (1, slot.dim)))
    )
    if not ok:
        got = f"{alpha.dtype} {tuple(alpha.shape)}" if isinstance(alpha, Tensor) else shown(alpha)
        raise HostError(
            f"alpha override for {slot_id!r}: got {got}; accepted: a dense floating tensor, 0-dim or "
            f"{ndim}-dim broadcastable to the features, e.g. {topology.alpha_shape(8)} for a batch of 8"
        )


def evaluate_injected(
    model: nn.Module,
    batches: Iterable[tuple[Any, Tensor]],
    score: Callable[[Any, Tensor], Tensor],
    *,
    counterfactual: bool = True,
) -> Evaluation:
    """:meth:`MorphogeneticModel.evaluate` for a model with injected slots.

    ``batches`` yields pairs ``(inputs, target)``. ``inputs`` is what ``model`` is called
    with: a tensor (``model(x)``), a tuple or list (``model(*x)``, e.g. ``(ids, mask)``) or a
    mapping (``model(**x)``, e.g. ``{"input_ids": ids, "attention_mask": mask}`` or a
    tokenizer's output). Every tensor among the inputs must be dense with ``target``'s batch
    size on dim 0 (they are repeated once per measured configuration); other arguments
    (flags, ``None``) are passed as they are. ``score(output, target)`` receives the model's
    output as it returns it (a Hugging Face ``ModelOutput``: read ``output.logits``) and
    returns per-sample scores in [0, 1]. A bad batch raises :class:`HostError` describing
    it by type and shape (never its values); the model is left as it was.

    A wrapper is seen through: the forward runs on the wrapped module (``model._orig_mod``,
    ``model.module``), uncompiled and without DDP's collectives, so each rank can evaluate
    its own batches (:func:`esper_core.distributed.reduce_evaluation` combines them).
    Raises :class:`HostError` for a model without injected slots or with a replaced target.
    """
    model, state = attached(model, "evaluate_injected")
    topologies = {t.resolved_id: get_topology(t.topology) for t in state.targets}

    def run(inputs: Inputs, overrides: Mapping[str, Tensor]) -> Any:
        with alpha_overrides(model, overrides):
            return inputs.call(model)

    return evaluate_slots(
        model,
        run,
        dict(state.slots.items()),
        batches,
        score,
        alpha_shape=lambda slot_id, n: topologies[slot_id].alpha_shape(n),
        counterfactual=counterfactual,
    )
