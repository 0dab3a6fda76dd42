"""A checkpoint's tensors against the modules they load into, before anything is copied.

:func:`esper_core.checkpoint.load_checkpoint` is all or nothing: it groups the file's seed
and blend-gate tensors by slot, refuses a seed larger than the tensors the file holds for it
(before anything is built), and checks every tensor against its target (present, a dense
tensor with data, shape, dtype kind) and every key of the model (missing, unexpected). Each
check raises :class:`~esper_core.errors.CheckpointError` naming the key and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from esper_core._state_keys import EXTRA_STATE_SUFFIX, expected_entries
from esper_core._wrappers import wrapper_key_hint
from esper_core.errors import CheckpointError
from esper_core.restore import RestorePlan

__all__ = [
    "check_declared_size",
    "check_module_tensors",
    "check_other_keys",
    "check_tensor",
    "group_by_slot",
]


def group_by_slot(prefixes: list[str], state_dict: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{slot prefix: {"seed": {key: value}, "blend_gate": {...}}}`` in one pass over the keys."""
    known = set(prefixes)
    found: dict[str, dict[str, dict[str, Any]]] = {p: {"seed": {}, "blend_gate": {}} for p in prefixes}
    for key, value in state_dict.items():
        if "seed." not in key and "blend_gate." not in key:  # most keys: the host's
            continue
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if part in ("seed", "blend_gate"):
                prefix = ".".join(parts[:i]) + "." if i else ""
                if prefix in known:
                    found[prefix][part][key] = value
                    break
    return found


def check_declared_size(prefix: str, slot: Any, plan: RestorePlan, seed_tensors: Mapping[str, Any]) -> None:
    """Refuse, before building anything, a seed larger than the tensors the file holds for it,
    naming the first tensor that is missing or too small. (Every tensor present is checked
    against the module afterwards, built or reused.)"""
    if plan.params == 0:  # nothing to build
        return
    sub = f"{prefix}seed."
    tensors = {k: v for k, v in seed_tensors.items() if not k.endswith(EXTRA_STATE_SUFFIX)}
    for key, value in tensors.items():
        check_data(key, value)
    present = sum(_held(v) for v in tensors.values())
    if plan.params > present:
        seed = plan.state.seed
        assert seed is not None
        raise CheckpointError(
            f"checkpoint tensors under {sub!r} hold {present:,} values, but the envelope's seed "
            f"({seed.blueprint} with {seed.options_dict}) has {plan.params:,} parameters: the file is inconsistent"
            + _first_difference(sub, slot, plan, tensors)
        )


def _first_difference(sub: str, slot: Any, plan: RestorePlan, tensors: Mapping[str, Any]) -> str:
    """The first tensor of the envelope's seed that the file lacks or holds in another shape, as
    a message suffix. The seed is built on the ``meta`` device, which allocates nothing (the
    file may describe a huge seed); a factory that cannot build there gives no suffix."""
    from esper_core.registry import get_blueprint

    seed = plan.state.seed
    assert seed is not None
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # a load never moves the RNG
            module = get_blueprint(slot.topology, seed.blueprint).build(slot.dim, **seed.options_dict)
        expected = {sub + k: v for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    except Exception:  # a pack's factory may fail in any way on meta tensors: the count still stands
        return ""
    for key, target in expected.items():
        value = tensors.get(key)
        if value is None:
            return f"; first difference: checkpoint tensor {key!r} is missing"
        if value.shape != target.shape:
            return f"; first difference: checkpoint tensor {key!r}: shape {tuple(value.shape)}; accepted: {tuple(target.shape)}"
    return ""


def _held(value: torch.Tensor) -> int:
    """Values a (strided, non-meta) checkpoint tensor really holds: an expanded view (stride 0)
    holds only its storage, however large its shape."""
    return min(value.numel(), value.untyped_storage().nbytes() // max(1, value.element_size()))


def check_module_tensors(
    prefix: str, plan: RestorePlan, tensors: Mapping[str, Mapping[str, Any]], strict: bool
) -> None:
    for name, module in (("seed", plan.seed), ("blend_gate", plan.gate)):
        sub = f"{prefix}{name}."
        expected = (
            {} if module is None else {sub + k: v for k, v in expected_entries(module, (), set()).items()}
        )
        found = tensors[name]
        for key, tensor in expected.items():
            if key not in found:
                if strict:
                    raise CheckpointError(
                        f"checkpoint tensor {key!r} is missing; the envelope's {name} needs it"
                    )
                continue
            if isinstance(tensor, torch.Tensor):  # not a submodule's extra state
                check_tensor(key, found[key], tensor)
        if strict:
            for key in found:
                if key not in expected:
                    raise CheckpointError(
                        f"checkpoint tensor {key!r} does not belong to the {name} the envelope describes"
                    )


def check_other_keys(
    model: nn.Module,
    slot_prefixes: list[str],
    envelopes: set[str],
    state_dict: Mapping[str, Any],
    strict: bool,
    modules: list[tuple[str, nn.Module]] | None = None,
) -> None:
    """Every key but the slots' ``envelopes`` and, under ``slot_prefixes``, the seed and blend
    gate modules (checked against the envelopes' modules), as ``load_state_dict`` would copy it."""
    owned = tuple(f"{p}{name}." for p in slot_prefixes for name in ("seed", "blend_gate"))
    expected = expected_entries(model, owned, envelopes, modules)
    for key, target in expected.items():
        if key not in state_dict:
            if strict:
                raise CheckpointError(
                    f"checkpoint key {key!r} is missing (the model has it)"
                    + wrapper_key_hint(key, state_dict)
                )
            continue
        if isinstance(target, torch.Tensor):
            check_tensor(key, state_dict[key], target)
    if not strict or (not owned and len(state_dict) == len(expected) + len(envelopes & state_dict.keys())):
        return  # every expected key is present: with the counts equal there is no other key
    for key in state_dict:
        if key not in expected and key not in envelopes and not key.startswith(owned):
            raise CheckpointError(f"checkpoint key {key!r} is not part of this model")


def check_data(key: str, value: object, shape: tuple[int, ...] | None = None) -> None:
    """A tensor that holds data: dense (strided) and not on the ``meta`` device."""
    if not isinstance(value, torch.Tensor):
        wanted = "a tensor" if shape is None else f"a tensor of shape {shape}"
        raise CheckpointError(f"checkpoint tensor {key!r}: got {type(value).__name__}; accepted: {wanted}")
    if value.layout is not torch.strided:
        raise CheckpointError(f"checkpoint tensor {key!r}: layout {value.layout}; accepted: torch.strided")
    if value.is_meta:
        raise CheckpointError(
            f"checkpoint tensor {key!r}: a tensor on the meta device (it holds no data); accepted: a tensor with data"
        )


def check_tensor(key: str, value: object, target: torch.Tensor) -> None:
    if (  # the usual case, decided without building a message or a device object
        type(value) is torch.Tensor
        and value.dtype is target.dtype
        and value.shape == target.shape
        and value.layout is torch.strided
        and not value.is_meta
    ):
        return
    check_data(key, value, tuple(target.shape))
    assert isinstance(value, torch.Tensor)
    problem = None
    if value.shape != target.shape:
        problem = f"shape {tuple(value.shape)}; accepted: {tuple(target.shape)}"
    elif value.is_floating_point() != target.is_floating_point() or (
        not target.is_floating_point() and value.dtype != target.dtype
    ):
        problem = (
            f"dtype {value.dtype}; accepted: {target.dtype} (or another floating dtype for a floating tensor)"
        )
    if problem is not None:
        raise CheckpointError(f"checkpoint tensor {key!r}: {problem}")
