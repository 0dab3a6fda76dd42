"""Loading optimizer state is all or nothing (issue 16, item 2).

The kind: a saved optimizer state that is wrong anywhere must raise ``CheckpointError``
naming the field, with the optimizer exactly as before (group order included); one that
loads must step. First the reported instances, then a seeded, time-bounded fuzzer over
twelve torch optimizers that mutates real saved states and counts tried/failed.
"""

from __future__ import annotations

import copy
import io
import math
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from esper_core.errors import CheckpointError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import MorphogeneticModel
from esper_core.optim import SLOT_KEY, OptimizerBinding
from esper_core.stages import SeedStage

from .conftest import drive

OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "SGD": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "AdamW-amsgrad": lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
    "Adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
    "RMSprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
    "Adafactor": lambda p: torch.optim.Adafactor(p, lr=1e-2),
    "NAdam": lambda p: torch.optim.NAdam(p, lr=1e-2),
    "RAdam": lambda p: torch.optim.RAdam(p, lr=1e-2),
    "Adamax": lambda p: torch.optim.Adamax(p, lr=1e-2),
    "ASGD": lambda p: torch.optim.ASGD(p, lr=1e-2),
    "Rprop": lambda p: torch.optim.Rprop(p, lr=1e-3),
    "Adadelta": lambda p: torch.optim.Adadelta(p, lr=0.5),
}
TRIALS_PER_OPTIMIZER = 60
DEADLINE_S = 90.0


class Setup:
    """A CNN host with three seeds (two of equal shapes), trained a few steps, and its saved state."""

    def __init__(self, make: Callable[[Any], torch.optim.Optimizer]) -> None:
        torch.manual_seed(0)
        self.model = MorphogeneticModel(
            CNNHost(3, in_channels=1, base_channels=4), gates=QualityGates("permissive")
        )
        self.optimizer = make(self.model.host.parameters())
        self.binding = OptimizerBinding(self.optimizer, self.model.slots, lr=1e-2)
        for slot_id, blueprint in (("r1c1", "toy_conv"), ("r0c0", "toy_conv"), ("r0c1", "toy_scale")):
            self.model.germinate(slot_id, blueprint)
            drive(self.model.slots[slot_id], SeedStage.BLENDING)
            self.model.slots[slot_id].step_epoch()
        self.x, self.y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
        for _ in range(2):
            self.step()
        buffer = io.BytesIO()
        torch.save(self.optimizer.state_dict(), buffer)
        buffer.seek(0)
        self.saved = torch.load(buffer, weights_only=True)
        self.weights = copy.deepcopy(self.model.state_dict())

    def step(self) -> None:
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def reset(self) -> None:
        self.model.load_state_dict(self.weights)
        self.binding.load_optimizer_state(self.saved)


def snapshot(optimizer: torch.optim.Optimizer) -> list[Any]:
    """Everything about the optimizer, groups by identity and order, tensors by value."""

    def value(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return ("tensor", v.dtype, tuple(v.shape), v.detach().clone())
        if isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
            return ("params", [id(p) for p in v])
        return v

    groups = [(id(g), {k: value(v) for k, v in g.items()}) for g in optimizer.param_groups]
    state = {id(p): {k: value(v) for k, v in s.items()} for p, s in optimizer.state.items()}
    return [groups, state]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and a and a[0] == "tensor":
        return isinstance(b, tuple) and a[:3] == b[:3] and torch.equal(a[3], b[3])
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def refused(setup: Setup, state: Any, match: str) -> None:
    before = snapshot(setup.optimizer)
    with pytest.raises(CheckpointError, match=match):
        setup.binding.load_optimizer_state(state)
    assert same(before, snapshot(setup.optimizer))


@pytest.fixture
def adam() -> Setup:
    return Setup(OPTIMIZERS["Adam"])


def _group_index(state: dict, tag: str | None) -> int:
    return next(i for i, g in enumerate(state["param_groups"]) if g.get(SLOT_KEY) == tag)


def test_a_repeated_seed_group_is_refused(adam: Setup) -> None:
    bad = copy.deepcopy(adam.saved)
    bad["param_groups"].append(copy.deepcopy(bad["param_groups"][_group_index(bad, "r0c0")]))
    refused(adam, bad, r"param_groups\[7\]\.params.*parameter id \d+ also appears")
    bad["param_groups"][-1]["params"] = [900, 901]
    refused(adam, bad, r"'param_groups\[7\]\.esper_slot'.*seed slot 'r0c0' has two groups")


def test_a_group_tag_that_is_not_a_string_is_refused(adam: Setup) -> None:
    bad = copy.deepcopy(adam.saved)
    bad["param_groups"][_group_index(bad, "r0c1")][SLOT_KEY] = ["r0c1"]
    refused(
        adam, bad, r"'param_groups\[\d\]\.esper_slot'.*must be a slot id string or absent, got \['r0c1'\]"
    )


def test_reordered_groups_load_and_a_bad_reordered_state_leaves_the_order(adam: Setup) -> None:
    order = [g.get(SLOT_KEY) for g in adam.optimizer.param_groups]
    shuffled = copy.deepcopy(adam.saved)
    shuffled["param_groups"].reverse()
    adam.binding.load_optimizer_state(shuffled)  # matched by tag: valid
    assert [g.get(SLOT_KEY) for g in adam.optimizer.param_groups] == order
    adam.step()
    shuffled["param_groups"][0]["lr"] = "fast"
    refused(adam, shuffled, r"'param_groups\[0\]\.lr'.*expected a number")
    assert [g.get(SLOT_KEY) for g in adam.optimizer.param_groups] == order


def test_wrong_parameter_counts_missing_state_wrong_shapes_and_types(adam: Setup) -> None:
    bad = copy.deepcopy(adam.saved)
    bad["param_groups"][_group_index(bad, "r1c1")]["params"].pop()
    refused(adam, bad, r"param_groups\[\d\]\.params.*1 parameters.*'r1c1' has 2")
    refused(adam, {"param_groups": adam.saved["param_groups"]}, r"no 'state' field")
    bad = copy.deepcopy(adam.saved)
    pid = bad["param_groups"][_group_index(bad, "r0c0")]["params"][0]
    bad["state"][pid]["exp_avg"] = bad["state"][pid]["exp_avg"].flatten()
    refused(
        adam, bad, rf"'state\[{pid}\]\.exp_avg'.*shape \(16,\) does not match the expected \(4, 4, 1, 1\)"
    )
    bad = copy.deepcopy(adam.saved)
    bad["param_groups"][0]["betas"] = (0.9,)
    refused(adam, bad, r"'param_groups\[0\]\.betas'.*sequence of 2 values")
    bad = copy.deepcopy(adam.saved)
    bad["param_groups"][0]["amsgrad"] = "no"
    refused(adam, bad, r"'param_groups\[0\]\.amsgrad'.*expected a bool")
    bad = copy.deepcopy(adam.saved)
    del bad["state"][pid]["exp_avg_sq"]
    refused(adam, bad, rf"'state\[{pid}\]'.*missing \['exp_avg_sq'\]")


def test_factored_states_are_understood() -> None:
    setup = Setup(OPTIMIZERS["Adafactor"])
    setup.reset()  # Adafactor keeps row_var (R, 1) and col_var (1, C): a valid state loads
    setup.step()
    bad = copy.deepcopy(setup.saved)
    pid = next(p for p, s in bad["state"].items() if "row_var" in s)
    bad["state"][pid]["row_var"] = bad["state"][pid]["row_var"].transpose(-1, -2)
    refused(setup, bad, rf"'state\[{pid}\]\.row_var'.*does not match")


# ---- the fuzzer ------------------------------------------------------------------------------------


def _tensor_paths(state: dict) -> list[tuple[Any, str]]:
    return [
        (pid, key) for pid, entry in state["state"].items() for key, v in entry.items() if torch.is_tensor(v)
    ]


VALID_OPS = ("reorder", "scale", "lr_valid")


def _mutate(state: dict, rng: random.Random, valid_only: bool = False) -> str:
    """Apply one random mutation to ``state`` in place; returns its name (marked ``-`` when an
    earlier mutation left nothing it can act on)."""
    try:
        return _mutate_once(state, rng, valid_only)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, RuntimeError):
        return "-"


def _mutate_once(state: dict, rng: random.Random, valid_only: bool) -> str:
    groups = state["param_groups"]
    group = rng.choice(groups)
    paths = _tensor_paths(state)
    ops: dict[str, Callable[[], None]] = {}

    def tensor_op(name: str, fn: Callable[[torch.Tensor], Any]) -> None:
        def apply() -> None:
            if paths:
                pid, key = rng.choice(paths)
                state["state"][pid][key] = fn(state["state"][pid][key])

        ops[name] = apply

    ops["repeat_group"] = lambda: groups.append(copy.deepcopy(group))
    ops["tag_type"] = lambda: group.__setitem__(
        SLOT_KEY, rng.choice([["r0c0"], 3, 1.5, b"r0c0", {"a": 1}, True])
    )
    ops["tag_unknown"] = lambda: group.__setitem__(SLOT_KEY, "r9c9")
    ops["tag_swap"] = lambda: _swap_tags(groups, rng)
    ops["reorder"] = lambda: rng.shuffle(groups)
    ops["drop_param"] = lambda: group["params"] and group["params"].pop()
    ops["add_param"] = lambda: group["params"].append(
        rng.choice([999, group["params"][0] if group["params"] else 0])
    )
    ops["param_id_type"] = lambda: (
        group["params"] and group["params"].__setitem__(0, rng.choice(["0", 1.5, True]))
    )
    ops["params_type"] = lambda: group.__setitem__("params", rng.choice(["abc", 5, None]))
    ops["group_type"] = lambda: groups.__setitem__(groups.index(group), rng.choice([[1, 2], "g", None]))
    ops["drop_state"] = lambda: state.pop("state")
    ops["drop_groups"] = lambda: state.pop("param_groups")
    ops["state_type"] = lambda: state.__setitem__("state", rng.choice([[], None, "s"]))
    ops["groups_type"] = lambda: state.__setitem__("param_groups", rng.choice([{}, None, "g"]))
    ops["extra_top_key"] = lambda: state.__setitem__("extra", 1)
    ops["unknown_state_id"] = lambda: state["state"].__setitem__(12345, {})
    ops["state_entry_type"] = lambda: (
        state["state"]
        and state["state"].__setitem__(rng.choice(list(state["state"])), rng.choice([[1], "x", None, 3]))
    )
    ops["state_key_drop"] = lambda: paths and state["state"][paths[0][0]].pop(rng.choice(paths)[1], None)
    ops["state_key_add"] = lambda: paths and state["state"][paths[0][0]].__setitem__("bogus", torch.zeros(1))
    ops["state_value_type"] = lambda: (
        paths
        and state["state"][paths[0][0]].__setitem__(paths[0][1], rng.choice(["x", [1.0], object.__name__]))
    )
    tensor_op("shape_flatten", lambda t: t.flatten() if t.dim() > 1 else t.reshape(1, -1))
    tensor_op("shape_extra_dim", lambda t: t.unsqueeze(0))
    tensor_op("shape_slice", lambda t: t[..., :1] if t.dim() and t.shape[-1] > 1 else t.repeat(2))
    tensor_op("dtype", lambda t: t.to(rng.choice([torch.int32, torch.bool, torch.complex64, torch.float64])))
    tensor_op("meta", lambda t: t.to("meta"))
    tensor_op("sparse", lambda t: t.to_sparse() if t.dim() else t.reshape(1).to_sparse())
    tensor_op("non_finite", lambda t: t.float().fill_(rng.choice([math.nan, math.inf])))
    tensor_op("requires_grad", lambda t: t.float().requires_grad_())
    tensor_op("scale", lambda t: t * 0.5)  # valid
    ops["hyper_type"] = lambda: group.__setitem__(
        rng.choice([k for k in group if k not in ("params", SLOT_KEY)]),
        rng.choice(["0.1", None, [0.1], math.nan, -1, {"x": 1}, (1, 2, 3)]),
    )
    ops["hyper_drop"] = lambda: group.pop(rng.choice([k for k in group if k not in ("params", SLOT_KEY)]))
    ops["lr_valid"] = lambda: group.__setitem__("lr", rng.choice([0.0, 1e-4, 5e-3]))  # valid
    ops["param_names"] = lambda: group.__setitem__("param_names", rng.choice([["a"], [1, 2], "ab"]))
    name = rng.choice(VALID_OPS if valid_only else sorted(ops))
    ops[name]()
    return name


def _swap_tags(groups: list, rng: random.Random) -> None:
    tagged = [g for g in groups if isinstance(g, dict) and g.get(SLOT_KEY) is not None]
    if len(tagged) >= 2:
        a, b = rng.sample(tagged, 2)
        a[SLOT_KEY], b[SLOT_KEY] = b[SLOT_KEY], a[SLOT_KEY]


def _check_loaded(setup: Setup) -> str | None:
    """A state that loaded must leave matching groups and an optimizer that steps."""
    tags = [g.get(SLOT_KEY) for g in setup.optimizer.param_groups]
    if tags != [None, *setup.model.slot_ids]:
        return f"groups reordered to {tags}"
    for slot_id in setup.model.slot_ids:
        slot = setup.model.slots[slot_id]
        want = [id(p) for p in slot.seed_parameters()] if slot.seed is not None else []
        if [id(p) for p in setup.binding.group(slot_id)["params"]] != want:
            return f"group of {slot_id} holds other parameters"
    try:
        setup.step()
    except Exception as exc:
        return f"step after a valid load raised {type(exc).__name__}: {exc}"
    if not all(torch.isfinite(p).all() for p in setup.model.parameters()):
        return "a valid load led to non-finite parameters"
    return None


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fuzz_optimizer_state_loading(name: str) -> None:
    setup = Setup(OPTIMIZERS[name])
    setup.reset()
    assert _check_loaded(setup) is None  # the unmutated state loads and steps
    rng = random.Random(f"optim-state-{name}")
    start = time.monotonic()
    tried, outcomes, failures = 0, {"loaded": 0, "refused": 0}, []
    for trial in range(TRIALS_PER_OPTIMIZER):
        if time.monotonic() - start > DEADLINE_S:
            break
        state = copy.deepcopy(setup.saved)
        valid_only = rng.random() < 0.3  # also exercise states that must load and step
        ops = [_mutate(state, rng, valid_only) for _ in range(rng.randint(1, 3))]
        before = snapshot(setup.optimizer)
        tried += 1
        try:
            setup.binding.load_optimizer_state(state)
        except CheckpointError:
            outcomes["refused"] += 1
            if not same(before, snapshot(setup.optimizer)):
                failures.append(f"trial {trial} {ops}: refused but the optimizer changed")
            continue
        except Exception as exc:
            failures.append(f"trial {trial} {ops}: {type(exc).__name__}: {exc}")
            continue
        outcomes["loaded"] += 1
        problem = _check_loaded(setup)
        if problem:
            failures.append(f"trial {trial} {ops}: {problem}")
        setup.reset()
    print(f"{name}: tried {tried}, failed {len(failures)}, {outcomes}")
    assert tried >= 10
    assert not failures, f"{len(failures)} of {tried} failed:\n" + "\n".join(failures[:10])
