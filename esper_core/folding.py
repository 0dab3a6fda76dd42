"""Fold a grown model into a plain PyTorch module: no slots, no lifecycle, the same outputs.

A model is ready to fold when every slot's seed is settled: FOSSILIZED (kept for good), or
no seed at all (DORMANT, or cooling down after a prune). A seed still on probation
(GERMINATED to HOLDING) is refused with :class:`~esper_core.errors.FoldError` naming the
slots: fossilize or prune it first. Then each slot becomes one of (:class:`FoldAction`):

* **drop**: an empty slot is the identity, so nothing takes its place;
* **wrap**: the fossilized seed becomes a :class:`FoldedSeed`, an ordinary submodule that
  computes exactly what the slot did, ``blend(algorithm, h, seed(h), alpha, gate(h))``
  (:mod:`esper_core.blend`) with the alpha the slot held; at an injected target it sits
  where the target was and calls it as ``base_layer`` first (PEFT's name for the wrapped
  layer), in a :class:`MorphogeneticModel` it sits between host segments (:class:`FoldedModel`);
* **merge**: a seed that is affine in the features, blended with ADD, on a layer that is
  linear in its weights (``nn.Linear``, a ``groups=1`` convolution, transformers' ``Conv1D``)
  is merged into that layer's weights (:mod:`esper_core._merge`): the folded model has the
  host's original architecture, as after PEFT's ``merge_and_unload``.

``fold(model)`` works on a deep copy and leaves the grown model as it was (``inplace=True``
folds the model itself, for models too large to copy; do not use the grown model after it).
Outputs equal the grown model's exactly, in eval and in train mode (same operations in the
same order, so dropout draws the same numbers), except merged layers, which are exact up to
one rounding of the merged weights. A folded model exports with ``torch.export``; the saved
program needs only torch (docs/shipping.md).

:func:`plan_fold` says what :func:`fold` will do, slot by slot, without changing anything.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from enum import Enum
from typing import Any, Literal

import attrs
from torch import Tensor, nn

from esper_core import _merge as mg
from esper_core._decoding import install_guards, seed_mixing
from esper_core._names import class_name
from esper_core._outputs import OutputKey, check_output_key, replace_output, select_output
from esper_core._wrappers import Unwrapped, unwrap
from esper_core.alpha import BlendAlgorithm
from esper_core.attachment import run_on_nested
from esper_core.blend import blend
from esper_core.errors import FoldError
from esper_core.inject import get_injection, remove_slots
from esper_core.model import MorphogeneticModel
from esper_core.registry import get_topology
from esper_core.slot import SeedSlot
from esper_core.stages import PROBATION, SeedStage

__all__ = ["FoldAction", "FoldStep", "FoldedModel", "FoldedSeed", "MergeMode", "fold", "plan_fold"]

#: ``"none"``: wrap every fossilized seed; ``"auto"``: merge the seeds that merge exactly, wrap
#: the others; ``"all"``: merge every fossilized seed, or raise naming those that cannot be.
MergeMode = Literal["none", "auto", "all"]
_MERGE_MODES = ("none", "auto", "all")


class FoldAction(Enum):
    """What :func:`fold` does with one slot."""

    DROP = "drop"
    WRAP = "wrap"
    MERGE = "merge"


@attrs.frozen
class FoldStep:
    """The plan for one slot: its id, target ``path`` (``None`` in a :class:`MorphogeneticModel`),
    stage, blueprint, the action and, for a fossilized seed that is not merged, why not."""

    slot_id: str
    path: str | None
    stage: SeedStage
    blueprint: str | None
    action: FoldAction
    reason: str = ""


def _keep_module_calls(_module: nn.Module, _args: Any) -> None:
    """Does nothing: its presence keeps torch's fused paths (``nn.TransformerEncoderLayer``)
    calling this submodule, as the slot's own hook did before the fold."""
    return None


class FoldedSeed(nn.Module):
    """A fossilized seed as an ordinary module: ``blend(algorithm, h, seed(h), alpha, blend_gate(h))``.

    ``seed`` and ``blend_gate`` are the slot's own modules; ``alpha`` is a 0-dim buffer with
    the value the slot blended with. With a ``base_layer`` (an injected target) ``forward``
    takes the base layer's arguments, runs it and blends the seed into its output (the
    tensor ``output`` selects, as in :class:`~esper_core.inject.InjectionTarget`). Data attributes
    it does not have are read from the base layer, so code that reads ``layer.weight`` or
    ``layer.in_features`` keeps working; the base layer's *methods* are not (``merge``,
    ``get_base_layer``, ``generate``, ``save_pretrained`` would act on the base layer alone, as
    if the seed were not there): call them on ``folded.base_layer`` when that is meant. PEFT's
    ``merge_and_unload()``/``unload()`` keep a folded seed and merge the LoRA layers inside it
    (:meth:`unload_and_optionally_merge_module`). Without a base layer
    (between host segments) ``forward(h)`` takes the features ``h``. Shapes and dtypes are
    the host's. ``position_mixing`` says why the seed mixes sequence positions
    (cached decoding then refuses it; ``docs/shipping.md``), or is ``None``.
    """

    def __init__(
        self,
        seed: nn.Module,
        *,
        algorithm: BlendAlgorithm,
        alpha: Tensor,
        topology: str,
        blend_gate: nn.Module | None = None,
        base_layer: nn.Module | None = None,
        output: OutputKey = None,
        slot_id: str = "",
        blueprint: str = "",
        position_mixing: str | None = None,
    ) -> None:
        super().__init__()
        if (blend_gate is None) != (algorithm is not BlendAlgorithm.GATE):
            raise FoldError(f"blend algorithm {algorithm.name} needs a blend gate exactly when it is GATE")
        self.seed = seed
        self.blend_gate = blend_gate
        self.register_buffer("alpha", alpha.detach().clone())
        self.algorithm = algorithm
        self.topology = topology
        self.output = check_output_key(output)
        self.slot_id = slot_id
        self.blueprint = blueprint
        self.position_mixing = position_mixing
        # Last: from here on, attributes this module lacks are read from the base layer.
        self.base_layer = base_layer
        if base_layer is not None:
            self.register_forward_pre_hook(_keep_module_calls)

    def blend_seed(self, h: Tensor) -> Tensor:
        """The slot's FOSSILIZED forward on host features ``h``: same shape and dtype."""
        s = self.seed(h)
        gate = self.blend_gate(h) if self.blend_gate is not None else None
        return blend(self.algorithm, h, s, self.alpha, gate, reference=h)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.base_layer is None:
            if len(args) != 1 or kwargs:
                raise FoldError(f"folded seed {self.slot_id!r} takes one tensor of host features")
            return self.blend_seed(args[0])
        out = self.base_layer(*args, **kwargs)
        where = f"folded seed {self.slot_id!r}"
        h = select_output(out, self.output, where=where)
        if h.is_nested:
            result = run_on_nested(h, self.topology, self.blend_seed, where=where)
        else:
            result = self.blend_seed(h)
        return out if result is h else replace_output(out, self.output, result)

    def unload_and_optionally_merge_module(
        self, merge: bool = True, safe_merge: bool = False, adapter_names: list[str] | None = None
    ) -> FoldedSeed:
        """PEFT's unload protocol (``merge_and_unload``/``unload`` ask each module for its
        replacement): a folded seed is part of the grown model, not an adapter, so it stays.
        Returns ``self``; PEFT then unloads (and merges) the LoRA layers inside its base layer."""
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base_layer")
            if base is None or name.startswith("_"):
                raise
            value = getattr(base, name)
            if inspect.isroutine(value):
                raise AttributeError(
                    f"folded seed {self.slot_id!r} does not forward the method {name!r} of its base layer "
                    f"({class_name(base)}): it would run on the base layer without the seed. Call "
                    f"folded.base_layer.{name}(...) if that is meant"
                ) from None
            return value

    def extra_repr(self) -> str:
        return (
            f"slot_id={self.slot_id!r}, blueprint={self.blueprint!r}, algorithm={self.algorithm.name}, "
            f"alpha={float(self.alpha):.6g}"
        )


class FoldedModel(nn.Module):
    """A folded :class:`MorphogeneticModel`: the host, and a :class:`FoldedSeed` at each point
    that kept a seed (``seeds``, in execution order), threaded through ``host.forward_segment``
    exactly as the grown model did. Input and output are the host's."""

    def __init__(self, host: nn.Module, seeds: Mapping[str, FoldedSeed]) -> None:
        super().__init__()
        self.host = host
        self.seeds = nn.ModuleDict(seeds)
        self.order = tuple(seeds)

    def forward(self, x: Tensor) -> Tensor:
        h, prev = x, None
        for slot_id in self.order:
            h = self.host.forward_segment(h, prev, slot_id)  # type: ignore[operator]
            h = self.seeds[slot_id](h)
            prev = slot_id
        return self.host.forward_segment(h, prev, None)  # type: ignore[operator]


# ---- planning -------------------------------------------------------------------------------------


def _slots_of(seen: Unwrapped) -> list[tuple[SeedSlot, str | None, nn.Module | None, bool]]:
    """(slot, target path, target module, target forward patched by someone else) per slot."""
    model = seen.module
    if isinstance(model, MorphogeneticModel):
        return [(model.slot(s), None, None, False) for s in model.slot_ids]
    injection = get_injection(model)
    if injection is None:
        raise FoldError(
            f"{seen.describe()} has no seed slots to fold: pass a MorphogeneticModel or a model "
            "with inject_slots()"
        )
    for attachment in injection.attachments:
        attachment.check_in_place(model)
    own = {id(a) for a in injection.attachments}
    return [
        (a.slot, a.path, a.module, a.inner is not None and id(getattr(a.inner, "__self__", None)) not in own)
        for a in injection.attachments
    ]


def _merge_problem(
    model: nn.Module, slot: SeedSlot, module: nn.Module | None, patched: bool, count: int
) -> str:
    """Why ``slot``'s fossilized seed cannot be merged into its target's weights ("" if it can)."""
    if module is None:
        return (
            "a MorphogeneticModel injection point sits between host segments: there is no layer to merge into"
        )
    if patched:
        return "the target's forward was patched by something else before injection"
    if count > 1:
        return "the target carries more than one slot"
    if slot.algorithm is not BlendAlgorithm.ADD:
        return f"blend algorithm {slot.algorithm.name} is not linear in the seed (only ADD merges)"
    assert slot.seed is not None
    affine = mg.seed_affine(slot.seed, slot.dim)
    if isinstance(affine, str):
        return affine
    problem = mg.layer_problem(module, get_topology(slot.topology), slot.dim, affine[1] is not None)
    if problem is not None:
        return problem
    shared = mg.shared_parameters(model, module)
    if shared:
        return f"its weights are shared with {shared} (tied); merging would change those layers too"
    return ""


def plan_fold(model: nn.Module, *, merge: MergeMode = "none") -> tuple[FoldStep, ...]:
    """What :func:`fold` will do with each slot of ``model``, in slot order; changes nothing.

    ``model`` is seen through ``torch.compile``/DDP/``DataParallel`` wrappers. Raises
    :class:`FoldError` naming every slot whose seed is on probation, every slot
    ``merge="all"`` cannot merge (with the reason), or a model without slots;
    :class:`~esper_core.errors.HostError` naming a target replaced after ``inject_slots``.
    """
    if merge not in _MERGE_MODES:
        raise FoldError(f"merge must be one of {list(_MERGE_MODES)}; got {merge!r}")
    seen = unwrap(model)
    model = seen.module
    entries = _slots_of(seen)
    probation = [f"{s.slot_id!r} ({s.stage.name})" for s, *_ in entries if s.stage in PROBATION]
    if probation:
        raise FoldError(
            f"cannot fold while seeds are on probation in slots {', '.join(probation)}: fossilize "
            "(advance to FOSSILIZED) or prune each of them first; a pruned slot folds to nothing"
        )
    per_module: dict[int, int] = {}
    for _slot, _path, module, _patched in entries:
        if module is not None:
            per_module[id(module)] = per_module.get(id(module), 0) + 1
    steps, refused = [], []
    for slot, path, module, patched in entries:
        if slot.stage is not SeedStage.FOSSILIZED:
            steps.append(FoldStep(slot.slot_id, path, slot.stage, None, FoldAction.DROP))
            continue
        action, reason = FoldAction.WRAP, ""
        if merge != "none":
            count = 0 if module is None else per_module[id(module)]
            reason = _merge_problem(model, slot, module, patched, count)
            if not reason:
                action = FoldAction.MERGE
            elif merge == "all":
                refused.append(f"{slot.slot_id!r}: {reason}")
        steps.append(FoldStep(slot.slot_id, path, slot.stage, slot.blueprint, action, reason))
    if refused:
        raise FoldError(f"merge='all' cannot merge every fossilized seed: {'; '.join(refused)}")
    return tuple(steps)


# ---- folding --------------------------------------------------------------------------------------


def _folded_seed(slot: SeedSlot, base: nn.Module | None = None, output: OutputKey = None) -> FoldedSeed:
    assert slot.seed is not None and slot.blueprint is not None
    folded = FoldedSeed(
        slot.seed,
        algorithm=slot.algorithm,
        alpha=slot.alpha_tensor(),
        topology=slot.topology,
        blend_gate=slot.blend_gate,
        base_layer=base,
        output=output,
        slot_id=slot.slot_id,
        blueprint=slot.blueprint,
        position_mixing=seed_mixing(slot.topology, slot.blueprint, slot.algorithm),
    )
    folded.training = slot.training  # its children keep their own modes
    return folded


def fold(model: nn.Module, *, merge: MergeMode = "none", inplace: bool = False) -> nn.Module:
    """``model`` with every slot folded away (module doc): a plain module with the same outputs.

    ``model`` is a :class:`MorphogeneticModel` (returns a :class:`FoldedModel`, or the host
    itself when no seed was kept) or a model with :func:`~esper_core.inject.inject_slots`
    (returns the same class of model with :class:`FoldedSeed` modules at the targets that
    kept a seed, and merged layers). ``merge`` is a :data:`MergeMode`. Raises
    :class:`FoldError` as :func:`plan_fold` does, before anything changes.

    A ``torch.compile`` handle, ``DistributedDataParallel`` or ``DataParallel`` is seen
    through: the module it wraps is folded, and the result is that plain module, uncompiled
    and unwrapped (compile or wrap it again if needed).
    """
    steps = plan_fold(model, merge=merge)
    model = unwrap(model).module
    work = model if inplace else copy.deepcopy(model)
    if isinstance(work, MorphogeneticModel):
        seeds = {s.slot_id: _folded_seed(work.slot(s.slot_id)) for s in steps if s.action is FoldAction.WRAP}
        if not seeds:
            return work.host
        folded_model = FoldedModel(work.host, seeds)
        folded_model.training = work.training
        return folded_model
    return _fold_injected(work, {s.slot_id: s for s in steps})


def _fold_injected(model: nn.Module, steps: Mapping[str, FoldStep]) -> nn.Module:
    injection = get_injection(model)
    if injection is None:  # deepcopy did not copy the model's __dict__ entries
        raise FoldError(
            f"the copy of {class_name(model)} that fold works on lost its injected slots (its "
            "__deepcopy__/__reduce__ does not copy the module's __dict__); fold(model, inplace=True) "
            "folds without copying"
        )
    attachments = injection.attachments
    remove_slots(model, discard_seeds=True)  # the seeds are kept below, as FoldedSeed modules
    chains: dict[int, list[Any]] = {}
    for attachment in attachments:  # in attach order: a later slot on a module wraps an earlier one
        step = steps[attachment.slot_id]
        slot = attachment.slot
        if step.action is FoldAction.MERGE:
            assert slot.seed is not None
            affine = mg.seed_affine(slot.seed, slot.dim)
            assert not isinstance(affine, str)
            matrix, shift = mg.blended_affine(affine[0], affine[1], float(slot.alpha_tensor()))
            mg.merge_into(attachment.module, matrix, shift)
        elif step.action is FoldAction.WRAP:
            chains.setdefault(id(attachment.module), []).append(attachment)
    paths: dict[int, list[str]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        if id(module) in chains:
            paths.setdefault(id(module), []).append(path)
    replacements: list[tuple[str, nn.Module]] = []
    mixing: list[FoldedSeed] = []
    guarded: list[str] = []
    for key, chain in chains.items():
        wrapper: nn.Module = chain[0].module
        for attachment in chain:
            wrapper = _folded_seed(attachment.slot, wrapper, attachment.output)
            if wrapper.position_mixing is not None:  # type: ignore[union-attr]
                mixing.append(wrapper)  # type: ignore[arg-type]
        for path in paths[key]:
            replacements.append((path, wrapper))
            guarded.append(".".join(filter(None, [path, *["base_layer"] * len(chain)])))
    root = model
    # Deepest paths first: a target inside another target is replaced while its parent is
    # still reachable under its own path.
    for path, wrapper in sorted(replacements, key=lambda item: -len(item[0].split(".")) if item[0] else 0):
        if path:
            root.set_submodule(path, wrapper)
        else:
            root = wrapper
    if mixing:
        install_guards(root, guarded, mixing)
    return root
