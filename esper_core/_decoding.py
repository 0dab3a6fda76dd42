"""Cached (incremental) decoding, and seeds that would silently change it.

A decoder that generates with a KV cache runs only the new tokens through the network: the
host's attention layers read the earlier positions from the cache, but a seed sees nothing
but the hidden states it is given, those of the new tokens. A seed whose output at one
position depends on other positions would then compute something else than in the full
forward pass (an ``attention`` seed on a GPT-2 block changes the logits by up to 0.13 and
flips greedy tokens). Two things make a seed mix positions:

* its blueprint: one that does not declare ``position_wise=True``
  (:class:`~esper_core.spec.BlueprintSpec`), such as ``attention`` and ``flex_attention``;
* a GATE blend: the :class:`~esper_core.blend.BlendGate` is causal through a running mean
  over all earlier positions.

Seeds keep no KV cache of their own, so such a seed **refuses** a cached step instead of
returning a different answer: :class:`CachedDecodingGuard`, a forward pre-hook, raises
:class:`~esper_core.errors.HostError` when a module is called with a non-empty
``past_key_values`` (the Hugging Face convention: ``generate()`` passes it on every step
after the first) while a seed that mixes positions reaches the output (stages BLENDING,
HOLDING, FOSSILIZED; in TRAINING the slot's output is the host's exactly). Decoding without
the cache (``generate(..., use_cache=False)``) gives the full forward's results.

:func:`~esper_core.inject.inject_slots` installs the guard on the outermost module above
each target whose ``forward`` takes ``past_key_values`` (the model ``generate()`` calls), and
:func:`~esper_core.folding.fold` keeps it on a folded model that holds such a seed. A cached
call made directly into an inner module (a base model or a block), a cache passed under
another name, or a decoder loop written by hand that feeds one token at a time without a
cache argument cannot be seen: do not decode incrementally with such seeds.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from esper_core.alpha import BlendAlgorithm
from esper_core.errors import HostError
from esper_core.stages import RUNS_SEED, SeedStage

__all__ = [
    "CACHE_ARGUMENTS",
    "CachedDecodingGuard",
    "cached_length",
    "install_guards",
    "mixing_reason",
    "seed_mixing",
]

#: Names under which a module receives a KV cache (Hugging Face ``transformers``).
CACHE_ARGUMENTS = ("past_key_values", "past_key_value")


def seed_mixing(topology: str, blueprint: str, algorithm: BlendAlgorithm) -> str | None:
    """Why a seed of ``blueprint`` blended with ``algorithm`` mixes positions, or ``None`` if it does not.

    Always ``None`` for a topology without a sequence axis.
    """
    from esper_core.registry import get_blueprint, get_topology

    if get_topology(topology).sequence_axis is None:
        return None
    reasons = []
    spec = get_blueprint(topology, blueprint)
    if spec.position_wise is False:
        reasons.append(f"blueprint {spec.key} mixes positions")
    elif spec.position_wise is None:
        reasons.append(f"blueprint {spec.key} does not declare position_wise=True")
    if algorithm is BlendAlgorithm.GATE:
        reasons.append("its GATE blend gate averages over earlier positions")
    return " and ".join(reasons) or None


def mixing_reason(module: nn.Module) -> str | None:
    """Why ``module`` (a :class:`~esper_core.slot.SeedSlot`, or a folded seed) mixes positions now, or ``None``.

    A slot mixes positions only while its seed reaches its output (BLENDING, HOLDING,
    FOSSILIZED); a folded seed carries the reason it was given when folded
    (``position_mixing``).
    """
    from esper_core.slot import SeedSlot

    if not isinstance(module, SeedSlot):
        folded = getattr(module, "position_mixing", None)
        return None if folded is None else f"folded seed {getattr(module, 'slot_id', '')!r}: {folded}"
    if module.seed is None or module.stage not in RUNS_SEED or module.stage is SeedStage.TRAINING:
        return None
    blueprint = module.blueprint
    assert blueprint is not None
    reason = seed_mixing(module.topology, blueprint, module.algorithm)
    if reason is None:
        return None
    return f"slot {module.slot_id!r} ({module.stage.name}): {reason}"


def cached_length(cache: Any) -> int:
    """How many earlier positions ``cache`` holds (0 for ``None`` or an empty cache).

    Reads ``get_seq_length()`` (a ``transformers`` ``Cache``) or, for the legacy format, the
    key tensor of the first layer (``((key, value), ...)``, keys ``(B, H, T, hd)``). A cache
    of a type not understood counts as non-empty, so the guard errs on refusing.
    """
    if cache is None:
        return 0
    get = getattr(cache, "get_seq_length", None)
    if callable(get):
        return int(get())
    if isinstance(cache, tuple | list):
        if not cache:
            return 0
        first = cache[0]
        if isinstance(first, tuple | list) and first and isinstance(first[0], Tensor):
            return int(first[0].shape[-2])
    return 1


class CachedDecodingGuard:
    """Forward pre-hook that refuses a cached decoding step while a seed mixes positions.

    ``path`` names the guarded module (for messages); ``position`` is the index of its cache
    argument among the positional arguments (``None`` when keyword-only); ``name`` is that
    argument's name; ``sources`` are the slots or folded seeds to ask (:func:`mixing_reason`).
    A plain object whose bound method is the hook, so a deep copy or a pickle of the model
    calls the copy's own slots.
    """

    def __init__(self, path: str, name: str, position: int | None, sources: Sequence[nn.Module]) -> None:
        self.path = path
        self.name = name
        self.position = position
        self.sources = tuple(sources)

    def check(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        cache = kwargs.get(self.name)
        if cache is None and self.position is not None and len(args) > self.position:
            cache = args[self.position]
        if cache is None:
            return
        reasons = [r for r in (mixing_reason(m) for m in self.sources) if r is not None]
        if not reasons:
            return
        past = cached_length(cache)
        if past == 0:
            return
        where = self.path or "the model"
        raise HostError(
            f"cached decoding refused at {where!r}: {self.name} holds {past} earlier position(s), but "
            f"{'; '.join(reasons)}. Such a seed keeps no KV cache and would see only the new tokens, "
            "so the result would differ from the full forward pass. Decode without the cache "
            "(model.generate(..., use_cache=False), or run the model on the whole sequence), or prune "
            "the seed (see docs/shipping.md)"
        )


def _cache_argument(module: nn.Module) -> tuple[str, int | None] | None:
    """The name and positional index (excluding ``self``) of ``module``'s cache argument, if any."""
    try:
        parameters = list(inspect.signature(type(module).forward).parameters.values())[1:]
    except (TypeError, ValueError):  # a forward without a readable signature takes no cache we know of
        return None
    for index, parameter in enumerate(parameters):
        if parameter.name in CACHE_ARGUMENTS:
            positional = parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
            return parameter.name, index if positional else None
    return None


def install_guards(
    model: nn.Module, paths: Iterable[str], sources: Sequence[nn.Module]
) -> tuple[RemovableHandle, ...]:
    """Guard, on the way from ``model`` to each of ``paths``, the outermost module that takes a KV cache.

    Only the outermost one: it receives the caller's cache as it is, whereas the layers
    inside it see the cache while the forward pass fills it (a Hugging Face decoder's
    second block finds the first block's positions already there even on the first step).
    Returns the hook handles (remove them to take the guards off); none when no module on
    those paths takes a cache argument.
    """
    handles: list[RemovableHandle] = []
    seen: set[int] = set()
    for path in paths:
        parts = path.split(".") if path else []
        for depth in range(len(parts) + 1):
            module = model.get_submodule(".".join(parts[:depth]))
            argument = _cache_argument(module)
            if argument is None:
                continue
            if id(module) not in seen:
                seen.add(id(module))
                guard = CachedDecodingGuard(".".join(parts[:depth]), argument[0], argument[1], sources)
                handles.append(module.register_forward_pre_hook(guard.check, with_kwargs=True))
            break
    return tuple(handles)
