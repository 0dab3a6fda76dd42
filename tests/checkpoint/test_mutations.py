"""Property: any mutation of a valid envelope either loads to a working slot or raises
CheckpointError and leaves the slot exactly as it was. Never anything else."""

from __future__ import annotations

import copy
import json
import math
import random
import time
from typing import Any

import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from esper_core.checkpoint import load_checkpoint, slot_envelope
from esper_core.codec import decode_envelope
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


# ---- counted, seeded fuzzing (issue 16: report how many were tried and how many failed) -----------------

JUNK: tuple[object, ...] = (
    None, True, False, -1, 0, 1, 2, 5, 11, 2**31, 10**400, 0.0, -0.0, 0.5, 1.0, 100.0, 1e-7, math.nan, math.inf,
    "", " ", "x", "cnn", "transformer", "ckpt_conv", "hold", "down", "gate", "cosine", [], [1, 2], {}, {"hidden": 3},
)  # fmt: skip


def _mutated_envelope(rng: random.Random, scenario: Any) -> object:
    envelope = source_envelope(scenario, rng.choice(SOURCES))
    if rng.random() < 0.3:  # text-level damage: truncation, a flipped character
        text = json.dumps(envelope, separators=(",", ":"))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            op = rng.choice(["delete", "insert", "replace", "truncate"])
            char = rng.choice('{}[]",:0123456789.-eE ntrufalsNI\\x')
            text = {
                "delete": text[:at] + text[at + 1 :],
                "insert": text[:at] + char + text[at:],
                "replace": text[:at] + char + text[at + 1 :],
                "truncate": text[:at],
            }[op]
        return text
    for _ in range(rng.randint(1, 2)):
        op = rng.choice(["perturb", "perturb", "delete", "replace", "add"])
        apply(envelope, op, rng.randrange(10_000), copy.deepcopy(rng.choice(JUNK)))
    return json.dumps(envelope) if rng.random() < 0.5 else envelope


def _tensor_damage(rng: random.Random, value: torch.Tensor) -> object:
    """A plausible corruption of one checkpoint tensor (some are valid data that must load)."""
    shape = tuple(value.shape)
    return rng.choice(
        [
            lambda: torch.zeros(*(s + 1 for s in shape)) if shape else torch.zeros(2),
            lambda: torch.zeros(shape, dtype=torch.int64),
            lambda: torch.zeros(shape, dtype=torch.float64),  # another floating dtype: valid, cast on load
            lambda: torch.full(shape, math.nan),  # valid data (a NaN weight is the governor's business)
            lambda: torch.empty(shape, device="meta"),
            lambda: value.reshape(-1).to_sparse() if value.dim() <= 1 else value.to_sparse(),
            lambda: torch.zeros(1).expand(shape) if shape else torch.zeros(()),
            lambda: value.tolist(),
            lambda: rng.choice(JUNK),
            lambda: value.clone(),  # unchanged: valid
        ]
    )()


def _mutated_state(rng: random.Random, state: dict[str, Any], scenario: Any) -> dict[str, Any]:
    state = dict(state)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(sorted(state))
        op = rng.choice(["damage", "damage", "delete", "add", "swap", "envelope"])
        if op == "damage" and isinstance(state[key], torch.Tensor):
            state[key] = _tensor_damage(rng, state[key])
        elif op == "delete":
            del state[key]
        elif op == "add":
            prefix = rng.choice(["first.", "slot.", "slot.seed.", "slot.blend_gate.", "slot.seed.inner.", ""])
            state[f"{prefix}extra{rng.randrange(3)}"] = rng.choice(
                [torch.zeros(2), torch.zeros(6, 6, 1, 1), 3]
            )
        elif op == "swap":
            other = rng.choice(sorted(state))
            state[key], state[other] = state[other], state[key]
        else:  # another scenario's envelope, mutated (data or text)
            envelope = _mutated_envelope(rng, scenario)
            state["slot._extra_state"] = envelope if isinstance(envelope, str) else json.dumps(envelope)
    return state


class _Net(torch.nn.Module):
    def __init__(self, slot: torch.nn.Module) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(6, 6, 1)
        self.slot = slot
        self.last = torch.nn.Conv2d(6, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.slot(self.first(x)))


def _whole(model: torch.nn.Module) -> tuple[Any, ...]:
    tensors = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    return slot_envelope(model.slot), id(model.slot.seed), id(model.slot.blend_gate), tensors


def _unchanged(before: tuple[Any, ...], after: tuple[Any, ...]) -> bool:
    if before[:3] != after[:3] or before[3].keys() != after[3].keys():
        return False
    return all(
        before[3][k].dtype == after[3][k].dtype
        and torch.equal(before[3][k].nan_to_num(0), after[3][k].nan_to_num(0))
        for k in before[3]
    )


def _try(counts: dict[str, Any], what: str, load: Any, snapshot: Any, loaded: Any) -> None:
    counts["tried"] += 1
    before = snapshot()
    try:
        load()
    except CheckpointError as exc:
        if _unchanged(before, snapshot()):
            counts["rejected"] += 1
        else:
            counts["failures"].append(f"{what}: rejected ({str(exc)[:120]}) but the target changed")
        return
    except Exception as exc:  # anything but the library's error is a failure
        counts["failures"].append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
        return
    try:
        loaded()
    except Exception as exc:
        counts["failures"].append(f"{what}: loaded, but {type(exc).__name__}: {str(exc)[:200]}")
        return
    counts["loaded"] += 1


def test_counted_checkpoint_mutations(scenario, fresh_slot, example_input) -> None:
    """2,400 seeded mutations: 1,500 of slot envelopes (data and text), 900 of whole state dicts
    (tensors damaged, deleted, added, swapped, envelopes edited) through ``load_checkpoint``
    and (one in three) the slot's own ``load_state_dict``. Every one either loads to a working
    model or raises CheckpointError and changes nothing."""
    rng = random.Random(1616)
    counts: dict[str, Any] = {"tried": 0, "loaded": 0, "rejected": 0, "failures": []}
    deadline = time.monotonic() + 120
    for i in range(1500):
        if time.monotonic() > deadline:
            break
        target = scenario(rng.choice(TARGETS))
        envelope = _mutated_envelope(rng, scenario)

        def slot_loaded(target=target) -> None:
            written = slot_envelope(target)
            again = fresh_slot()
            restore_slot(again, written)
            assert slot_envelope(again) == written
            x = example_input(target)
            assert target(x).shape == x.shape
            target.step_epoch()

        _try(
            counts,
            f"envelope #{i}",
            lambda t=target, e=envelope: restore_slot(t, e),
            lambda t=target: state_of(t),
            slot_loaded,
        )
    sources = [
        _Net(scenario(name)).state_dict() for name in ("blending_gate", "holding", "training", "dormant")
    ]
    for i in range(900):
        if time.monotonic() > deadline:
            break
        state = _mutated_state(rng, rng.choice(sources), scenario)
        model = _Net(scenario(rng.choice(TARGETS)))

        def model_loaded(model=model, state=state) -> None:
            x = torch.randn(2, 6, 3, 3, generator=torch.Generator().manual_seed(0))
            assert model(x).shape == x.shape
            loaded = model.state_dict()
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(
                        loaded[key].nan_to_num(0), value.to(loaded[key].dtype).nan_to_num(0)
                    ), key
            assert decode_envelope(model.slot.lifecycle_text()).state == model.slot.state

        if i % 3 == 2:  # the slot's own load_state_dict, with the slot's part of the file
            part = {k[len("slot.") :]: v for k, v in state.items() if k.startswith("slot.")}
            _try(
                counts,
                f"slot state dict #{i}",
                lambda m=model, s=part: m.slot.load_state_dict(s),
                lambda m=model: _whole(m),
                lambda m=model: decode_envelope(m.slot.lifecycle_text()),
            )
            continue
        _try(
            counts,
            f"state dict #{i}",
            lambda m=model, s=state: load_checkpoint(m, s),
            lambda m=model: _whole(m),
            model_loaded,
        )
    print(
        f"checkpoint mutations: tried {counts['tried']}, loaded {counts['loaded']}, rejected {counts['rejected']}, "
        f"failed {len(counts['failures'])}"
    )
    assert not counts["failures"], "\n".join(counts["failures"][:15])
    assert counts["tried"] >= 1000, counts["tried"]
