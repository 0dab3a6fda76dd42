"""Validate a saved optimizer state completely before it touches the optimizer.

``torch.optim.Optimizer.load_state_dict`` matches param groups by position and checks only
the group count and each group's parameter count: a repeated group, a hyperparameter of the
wrong type or a state tensor of the wrong shape is accepted and fails later inside
``optimizer.step()`` (or silently steps the same parameters twice). :func:`plan_load` checks
everything first and returns the state, with the saved groups put into the optimizer's own
group order (seed groups matched by their ``esper_slot`` tag), that ``load_state_dict``
then takes without failing. It only reads: on any error the optimizer is untouched.

What is checked, each failure a :class:`~esper_core.errors.CheckpointError` naming the field:

* the top level is a mapping with exactly ``state`` and ``param_groups``;
* every group is a mapping whose ``params`` is a list of int ids, no id in two groups;
  ``esper_slot`` is absent/None or a slot id bound to this optimizer, each at most once;
  untagged groups as many as the optimizer has; parameter counts equal; ``param_names``
  (if any) strings that agree with the optimizer's;
* hyperparameters: every one the optimizer has (its ``defaults``) is present, with a value
  of the same kind (bool, number, tuple of the same length, tensor, string, None) that is
  finite, and ``lr``, ``eps``, ``weight_decay``, ``momentum`` >= 0, betas in [0, 1);
* ``state``: a mapping from ids of the listed parameters to mappings with exactly the keys
  this optimizer keeps for such a parameter, values of the right kind, tensors dense, not
  on ``meta``, real unless the parameter is complex, finite, not requiring grad, and of the
  shape the optimizer uses for that parameter. The expected keys and shapes come from
  stepping a throwaway optimizer of the same class and hyperparameters once on tiny
  parameters of the same rank, dtype and device (so factored states such as
  ``Adafactor``'s ``row_var``/``col_var`` are understood); when that probe cannot run,
  a tensor must be 0-dim or have the parameter's shape.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from esper_core.errors import CheckpointError

__all__ = ["SLOT_KEY", "plan_load"]

#: Param-group key naming the slot a group belongs to.
SLOT_KEY = "esper_slot"
_STRUCTURAL = frozenset({"params", "param_names", SLOT_KEY})
_NON_NEGATIVE = ("lr", "eps", "weight_decay", "momentum")
_PROBE_SIZES = (2, 3, 4, 5, 6, 7, 8, 9)


def _fail(field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"optimizer state field {field!r}: {problem}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_number(field: str, value: object) -> None:
    if not _is_number(value):
        raise _fail(field, f"expected a number, got {type(value).__name__} {value!r:.60}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(field, f"must be finite, got {value!r}")


def _check_hyper(field: str, key: str, saved: object, ours: object, has_ours: bool) -> None:
    """One hyperparameter: the same kind of value as the optimizer's, finite, in range."""
    if has_ours and isinstance(ours, bool):
        if not isinstance(saved, bool):
            raise _fail(field, f"expected a bool like the optimizer's {ours!r}, got {saved!r:.60}")
    elif has_ours and ours is None:
        if saved is not None and not isinstance(saved, bool):
            raise _fail(field, f"expected None or a bool, got {saved!r:.60}")
    elif has_ours and isinstance(ours, (tuple, list)):
        if not isinstance(saved, (tuple, list)) or len(saved) != len(ours):
            raise _fail(field, f"expected a sequence of {len(ours)} values like {ours!r}, got {saved!r:.60}")
        for i, (s, o) in enumerate(zip(saved, ours, strict=True)):
            _check_hyper(f"{field}[{i}]", key, s, o, True)
    elif has_ours and isinstance(ours, str):
        if not isinstance(saved, str):
            raise _fail(field, f"expected a string like {ours!r}, got {saved!r:.60}")
    elif isinstance(saved, torch.Tensor) or (has_ours and isinstance(ours, torch.Tensor)):
        value = saved
        if isinstance(saved, torch.Tensor):
            if saved.numel() != 1 or saved.layout != torch.strided or saved.device.type == "meta":
                raise _fail(field, f"expected a one-element dense tensor, got {saved!r:.60}")
            value = saved.item()
        _finite_number(field, value)
    elif has_ours and _is_number(ours):
        _finite_number(field, saved)
    elif has_ours:
        if type(saved) is not type(ours):
            raise _fail(field, f"expected a {type(ours).__name__}, got {type(saved).__name__}")
    elif isinstance(saved, (tuple, list)):  # a key the optimizer lacks (e.g. a scheduler's)
        for i, item in enumerate(saved):
            _finite_number(f"{field}[{i}]", item)
    elif not (saved is None or isinstance(saved, (bool, str))):
        _finite_number(field, saved)
    if key in _NON_NEGATIVE and _is_number(saved) and saved < 0:
        raise _fail(field, f"must be >= 0, got {saved!r}")
    if key == "betas" and isinstance(saved, (tuple, list)):
        for i, beta in enumerate(saved[:2]):
            if _is_number(beta) and not 0.0 <= beta < 1.0:
                raise _fail(f"{field}[{i}]", f"must be in [0, 1), got {beta!r}")


# ---- expected per-parameter state, from a throwaway optimizer ------------------------------------


def _probe(optimizer: torch.optim.Optimizer, hyper: Mapping[str, Any], like: torch.Tensor) -> dict | None:
    """Keys and example values the optimizer keeps for a parameter like ``like`` (rank,
    dtype, device), from one step of a fresh optimizer of the same class on a tiny
    parameter whose dims are 2, 3, 4, ...; ``None`` when that cannot run."""
    cls = type(optimizer)
    shape = _PROBE_SIZES[: like.dim()]
    try:
        tiny = torch.nn.Parameter(torch.full(shape, 0.5, dtype=like.dtype, device=like.device))
        tiny.grad = torch.full_like(tiny, 0.25)
        group = {k: v for k, v in hyper.items() if k not in _STRUCTURAL}
        required = {
            name: group[name]
            for name, p in list(inspect.signature(cls.__init__).parameters.items())[2:]
            if p.default is inspect.Parameter.empty and name in group
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = cls([{"params": [tiny], **group}], **required)
            probe.step()
        return {"shape": shape, "state": dict(probe.state.get(tiny, {}))}
    except Exception:
        return None


def _expected_shape(example: torch.Tensor, probe_shape: tuple[int, ...], param: torch.Tensor) -> tuple:
    if example.dim() != len(probe_shape):
        return tuple(example.shape)  # a fixed-size state, independent of the parameter
    return tuple(
        p if s == t else (1 if s == 1 else s)
        for s, t, p in zip(example.shape, probe_shape, param.shape, strict=True)
    )


def _check_tensor(field: str, value: torch.Tensor, param: torch.Tensor, differentiable: bool) -> None:
    if value.layout != torch.strided or value.is_quantized:
        raise _fail(field, f"must be a dense tensor, got layout {value.layout}")
    if value.device.type == "meta":
        raise _fail(field, "is on the 'meta' device: it holds no values")
    if value.dtype == torch.bool or (value.is_complex() and not param.is_complex()):
        raise _fail(field, f"dtype {value.dtype} is not accepted for a {param.dtype} parameter")
    if value.requires_grad and not differentiable:
        raise _fail(field, "requires grad; optimizer state must not")
    if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
        raise _fail(field, "contains non-finite values")


def _check_entry(
    field: str,
    entry: object,
    param: torch.Tensor,
    probe: dict | None,
    differentiable: bool,
) -> None:
    if not isinstance(entry, Mapping):
        raise _fail(field, f"expected a mapping of state values, got {type(entry).__name__}")
    if not entry:
        return
    expected = None if probe is None else probe["state"]
    if expected is not None and set(entry) != set(expected):
        missing, unknown = sorted(set(expected) - set(entry)), sorted(set(entry) - set(expected), key=str)
        raise _fail(
            field,
            f"keys {sorted(entry, key=str)} do not match the keys this optimizer keeps for such a "
            f"parameter {sorted(expected)} (missing {missing}, unknown {unknown})",
        )
    for key, value in entry.items():
        where = f"{field}.{key}"
        if not isinstance(key, str):
            raise _fail(where, "state keys must be strings")
        example = None if expected is None else expected[key]
        if value is None:
            if expected is not None and example is not None:
                raise _fail(where, f"expected a {type(example).__name__}, got None")
            continue
        if isinstance(value, torch.Tensor):
            _check_tensor(where, value, param, differentiable)
            if isinstance(example, torch.Tensor):
                want = _expected_shape(example, probe["shape"], param)  # type: ignore[index]
            elif example is None and expected is None:
                want = tuple(param.shape) if value.dim() else ()
            else:
                want = ()  # a number in this optimizer: a one-element tensor stands in for it
            if tuple(value.shape) != want:
                raise _fail(where, f"shape {tuple(value.shape)} does not match the expected {want}")
            continue
        if isinstance(example, torch.Tensor) and example.dim() != 0:
            raise _fail(where, f"expected a tensor of shape like the parameter, got {type(value).__name__}")
        _finite_number(where, value)


# ---- the plan ---------------------------------------------------------------------------------------


def _label(group: Mapping[str, Any], index: int) -> str:
    tag = group.get(SLOT_KEY)
    return f"seed slot {tag!r}" if tag is not None else f"group {index} (not a seed group)"


def _index_groups(saved: Sequence[Any], bound: Sequence[str]) -> tuple[list[int], dict[str, int]]:
    untagged: list[int] = []
    tagged: dict[str, int] = {}
    owner: dict[int, int] = {}
    names_seen: set[bool] = set()
    for i, group in enumerate(saved):
        field = f"param_groups[{i}]"
        if not isinstance(group, Mapping):
            raise _fail(field, f"expected a mapping, got {type(group).__name__}")
        params = group.get("params")
        if not isinstance(params, (list, tuple)):
            raise _fail(f"{field}.params", f"expected a list of parameter ids, got {type(params).__name__}")
        for pid in params:
            if not isinstance(pid, int) or isinstance(pid, bool):
                raise _fail(f"{field}.params", f"parameter ids must be ints, got {pid!r:.40}")
            if pid in owner:
                raise _fail(
                    f"{field}.params", f"parameter id {pid} also appears in param_groups[{owner[pid]}]"
                )
            owner[pid] = i
        names_seen.add("param_names" in group)
        tag = group.get(SLOT_KEY)
        if tag is None:
            untagged.append(i)
        elif not isinstance(tag, str):
            raise _fail(f"{field}.{SLOT_KEY}", f"must be a slot id string or absent, got {tag!r:.60}")
        elif tag in tagged:
            raise _fail(
                f"{field}.{SLOT_KEY}", f"seed slot {tag!r} has two groups (also param_groups[{tagged[tag]}])"
            )
        elif tag not in bound:
            raise _fail(
                f"{field}.{SLOT_KEY}", f"slot {tag!r} is not bound to this optimizer; bound: {list(bound)}"
            )
        else:
            tagged[tag] = i
    if len(names_seen) > 1:
        raise _fail("param_groups", "some groups have 'param_names' and others do not")
    return untagged, tagged


def plan_load(optimizer: torch.optim.Optimizer, state: object, bound: Sequence[str]) -> dict[str, Any]:
    """The state ``optimizer.load_state_dict`` should get, or :class:`CheckpointError`.

    ``bound`` lists the slot ids whose groups (tagged ``esper_slot``) the optimizer has;
    saved seed groups are matched by tag, other groups by position among themselves. A
    seed group missing from ``state`` is accepted only while its slot holds no seed (it
    keeps its own settings). Reads only; the optimizer is never changed.
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f"optimizer state must be a mapping, got {type(state).__name__}")
    for key in ("state", "param_groups"):
        if key not in state:
            raise CheckpointError(f"optimizer state has no {key!r} field; it has {sorted(map(str, state))}")
    extra = sorted(str(k) for k in state if k not in ("state", "param_groups"))
    if extra:
        raise CheckpointError(
            f"optimizer state has unknown fields {extra}; expected 'state' and 'param_groups'"
        )
    saved, saved_state = state["param_groups"], state["state"]
    if not isinstance(saved, (list, tuple)):
        raise _fail("param_groups", f"expected a list, got {type(saved).__name__}")
    if not isinstance(saved_state, Mapping):
        raise _fail(
            "state", f"expected a mapping from parameter id to state, got {type(saved_state).__name__}"
        )
    untagged, tagged = _index_groups(saved, bound)
    groups = optimizer.param_groups
    ours_untagged = [i for i, g in enumerate(groups) if g.get(SLOT_KEY) is None]
    if len(untagged) != len(ours_untagged):
        raise _fail(
            "param_groups",
            f"{len(untagged)} groups that are not seed groups; this optimizer has {len(ours_untagged)}",
        )
    match = dict(zip(ours_untagged, untagged, strict=True))
    for ci, group in enumerate(groups):
        tag = group.get(SLOT_KEY)
        if tag is None:
            continue
        if tag in tagged:
            match[ci] = tagged[tag]
        elif group["params"]:
            raise _fail("param_groups", f"no group for seed slot {tag!r}, which holds a seed here")
    new_groups: list[dict[str, Any]] = []
    param_of: dict[int, tuple[torch.Tensor, int]] = {}
    probes: dict[tuple[int, int, str, str], dict | None] = {}
    for ci, ours in enumerate(groups):
        if ci not in match:  # an empty seed group absent from an older checkpoint
            new_groups.append(
                {k: (list(v) if k in ("params", "param_names") else v) for k, v in ours.items()}
            )
            continue
        si = match[ci]
        field = f"param_groups[{si}]"
        theirs = saved[si]
        if len(theirs["params"]) != len(ours["params"]):
            raise _fail(
                f"{field}.params",
                f"{len(theirs['params'])} parameters, but the optimizer's group for {_label(ours, ci)} "
                f"has {len(ours['params'])}",
            )
        if "param_names" in theirs:
            names = theirs["param_names"]
            if not isinstance(names, (list, tuple)) or len(names) != len(ours["params"]):
                raise _fail(
                    f"{field}.param_names", f"expected {len(ours['params'])} names, got {names!r:.60}"
                )
            if not all(isinstance(n, str) for n in names):
                raise _fail(f"{field}.param_names", "names must be strings")
            if "param_names" in ours and list(names) != list(ours["param_names"]):
                raise _fail(f"{field}.param_names", f"{list(names)} differ from {list(ours['param_names'])}")
        for key in optimizer.defaults:
            if key not in theirs and key in ours:
                raise _fail(f"{field}.{key}", "missing: every hyperparameter of the optimizer must be saved")
        for key, value in theirs.items():
            if key in _STRUCTURAL:
                continue
            if not isinstance(key, str):
                raise _fail(field, f"hyperparameter names must be strings, got {key!r:.40}")
            _check_hyper(f"{field}.{key}", key, value, ours.get(key), key in ours)
        merged = {k: v for k, v in ours.items() if k not in theirs and k not in _STRUCTURAL}
        new_groups.append({**dict(theirs), **merged})
        for pid, param in zip(theirs["params"], ours["params"], strict=True):
            param_of[pid] = (param, ci)
            key = (ci, param.dim(), str(param.dtype), str(param.device))
            if key not in probes and pid in saved_state:
                probes[key] = _probe(optimizer, new_groups[-1], param)
    for pid, entry in saved_state.items():
        if pid not in param_of:
            raise _fail(f"state[{pid!r}]", "no parameter with this id is listed in param_groups")
        param, ci = param_of[pid]
        probe = probes[(ci, param.dim(), str(param.dtype), str(param.device))]
        differentiable = bool(new_groups[ci].get("differentiable", False))
        _check_entry(f"state[{pid}]", entry, param, probe, differentiable)
    return {"state": dict(saved_state), "param_groups": new_groups}
