"""Property: any mutation of a valid envelope either loads to a working slot or raises
CheckpointError and leaves the slot exactly as it was. Never anything else."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from esper_core.checkpoint import slot_envelope
from esper_core.errors import CheckpointError
from esper_core.restore import restore_slot

SOURCES = ("training", "blending_gate", "pending_prune", "fossilized", "embargoed", "dormant")
TARGETS = ("dormant", "holding")

# Values a corrupted file plausibly holds: near-misses of valid ones and plain junk.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 0.5, -0.0, 1e-7, 100.0, math.nan]),
    st.text(max_size=4),
    st.sampled_from(["cnn", "transformer", "ckpt_conv", "ckpt_token", "hold", "up", "down", "gate", "add",
                     "multiply", "linear", "sigmoid", "cosine", "s0", "x"]),
    st.lists(st.integers(0, 10), max_size=3),
    st.dictionaries(st.sampled_from(["reason", "initiator", "hidden", "bound", "stages"]),
                    st.one_of(st.integers(0, 5), st.text(max_size=3)), max_size=2),
)  # fmt: skip


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location in a nested dict/list (the root excluded)."""
    found = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return found
    for key, value in items:
        found.append((*prefix, key))
        found.extend(paths(value, (*prefix, key)))
    return found


def perturb(original: object, value: object, index: int) -> object:
    """A value of the original's type (so many mutations stay loadable)."""
    if isinstance(original, bool):
        return not original
    if isinstance(original, int):
        return max(0, original + index % 3 - 1)
    if isinstance(original, float):
        return original * [0.5, 0.0, 1.0 - 1e-9][index % 3]
    if isinstance(original, str):
        return f"{original}_{index % 5}"
    return value


def apply(envelope: dict[str, Any], op: str, index: int, value: object) -> None:
    locations = paths(envelope)
    path = locations[index % len(locations)]
    parent = envelope
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "perturb":
        parent[last] = perturb(parent[last], value, index)
    elif op == "replace":
        parent[last] = value
    elif op == "add" and isinstance(parent, dict):
        parent[f"extra_{index % 3}"] = value
    elif op == "add":
        parent.append(value)


mutation = st.tuples(
    st.sampled_from(["perturb", "perturb", "delete", "replace", "add"]), st.integers(0, 10_000), junk
)


_ENVELOPES: dict[str, dict[str, Any]] = {}


def source_envelope(scenario: Any, name: str) -> dict[str, Any]:
    """A valid envelope of scenario ``name`` (built once; callers get a deep copy)."""
    if name not in _ENVELOPES:
        _ENVELOPES[name] = slot_envelope(scenario(name))
    return copy.deepcopy(_ENVELOPES[name])


def state_of(slot: Any) -> tuple[Any, ...]:
    tensors = {k: v.clone() for k, v in slot.state_dict().items() if isinstance(v, torch.Tensor)}
    return slot_envelope(slot), id(slot.seed), id(slot.blend_gate), tensors


@settings(max_examples=120)
@given(
    source=st.sampled_from(SOURCES),
    target_name=st.sampled_from(TARGETS),
    mutations=st.lists(mutation, min_size=1, max_size=2),
    as_text=st.booleans(),
)
def test_mutated_envelope_loads_validly_or_raises_checkpoint_error(
    scenario, fresh_slot, example_input, source, target_name, mutations, as_text
):
    envelope = source_envelope(scenario, source)
    for op, index, value in mutations:
        apply(envelope, op, index, copy.deepcopy(value))
    # A slot stores its envelope as JSON text; the dict form is accepted too.
    check_load(
        scenario, fresh_slot, example_input, target_name, json.dumps(envelope) if as_text else envelope
    )


# Edits of the stored text: what a truncated or bit-flipped file holds.
text_edit = st.tuples(
    st.sampled_from(["delete", "insert", "replace", "truncate"]),
    st.integers(0, 10_000),
    st.sampled_from(list('{}[]",:0123456789.-eE ntrufalsNI\\x')),
)


@settings(max_examples=80)
@given(
    source=st.sampled_from(SOURCES),
    target_name=st.sampled_from(TARGETS),
    edits=st.lists(text_edit, min_size=1, max_size=3),
)
def test_corrupted_envelope_text_loads_validly_or_raises_checkpoint_error(
    scenario, fresh_slot, example_input, source, target_name, edits
):
    text = json.dumps(source_envelope(scenario, source), separators=(",", ":"))
    for op, index, char in edits:
        at = index % (len(text) + 1)
        if op == "delete":
            text = text[:at] + text[at + 1 :]
        elif op == "insert":
            text = text[:at] + char + text[at:]
        elif op == "replace":
            text = text[:at] + char + text[at + 1 :]
        else:
            text = text[:at]
    check_load(scenario, fresh_slot, example_input, target_name, text)


def check_load(scenario, fresh_slot, example_input, target_name: str, envelope: object) -> None:
    target = scenario(target_name)
    before = state_of(target)
    try:
        restore_slot(target, envelope)
    except CheckpointError:
        event("rejected")
        after = state_of(target)
        assert before[:3] == after[:3]
        assert all(torch.equal(before[3][k], after[3][k]) for k in before[3])
        assert before[3].keys() == after[3].keys()
        return
    event("loaded")
    # Loaded: the slot must be a working slot whose state survives its own round trip.
    written = slot_envelope(target)
    copy_of = fresh_slot()
    restore_slot(copy_of, written)
    assert slot_envelope(copy_of) == written
    x = example_input(target)
    assert target(x).shape == x.shape
    target.report()
    target.step_epoch()
    slot_envelope(target)
