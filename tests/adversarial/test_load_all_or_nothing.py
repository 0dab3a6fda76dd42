"""Issue 16 item 1: a bad checkpoint of a whole model raises CheckpointError naming the key and
changes nothing: not the host, not any slot, not a module, not the global RNG.

The source is a small ``MorphogeneticModel`` (a real ``TransformerHost``) with one real ``lora``
seed from the installed pack, saved and read back with ``torch.load(weights_only=True)``.
Every corruption is tried through ``load_checkpoint`` and through the model's own
``load_state_dict`` (which is ``load_checkpoint``), and the slot's part of it through a plain
``load_state_dict`` of a foreign model around the slot (``inject_slots``), where the slot
itself must stay unchanged.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from esper_core.checkpoint import load_checkpoint
from esper_core.errors import CheckpointError
from esper_core.gates import QualityGates
from esper_core.hosts import TransformerHost
from esper_core.inject import inject_slots
from esper_core.model import MorphogeneticModel
from esper_core.stages import SeedStage

from .conftest import model_snapshot
from .fuzzing import differences, same

SEED = "slots.r0c0.seed.down.weight"


def build_model() -> MorphogeneticModel:
    torch.manual_seed(0)
    host = TransformerHost(32, n_embd=16, n_head=2, n_layer=2, block_size=8, num_segments=1)
    return MorphogeneticModel(host, gates=QualityGates("permissive"))


def saved_checkpoint() -> dict[str, Any]:
    """A grown model's state dict after a real save and a ``weights_only`` load."""
    model = build_model()
    model.germinate("r0c0", "lora", options={"rank": 4})
    model.slot("r0c0").advance()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # every tensor differs from a fresh model's
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _set(key: str, value: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], None]:
    return lambda sd: sd.__setitem__(key, value(sd))


# (id, corruption, text the message must contain)
CORRUPTIONS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("extra host key", _set("host.bogus", lambda sd: torch.zeros(1)), "'host.bogus'"),
    ("missing host key", lambda sd: sd.pop("host.ln_f.weight"), "'host.ln_f.weight'"),
    ("host key wrong shape", _set("host.ln_f.weight", lambda sd: torch.zeros(3)), "'host.ln_f.weight'"),
    ("host key not a tensor", _set("host.ln_f.weight", lambda sd: 3.0), "'host.ln_f.weight'"),
    ("host key integer dtype", _set("host.ln_f.weight", lambda sd: torch.zeros(16, dtype=torch.int64)), "'host.ln_f.weight'"),
    ("host key sparse", _set("host.ln_f.weight", lambda sd: sd["host.ln_f.weight"].to_sparse()), "'host.ln_f.weight'"),
    ("host key meta", _set("host.ln_f.weight", lambda sd: torch.empty(16, device="meta")), "'host.ln_f.weight'"),
    ("seed tensor meta", _set(SEED, lambda sd: torch.empty(4, 16, device="meta")), f"'{SEED}'"),
    ("seed tensor sparse", _set(SEED, lambda sd: sd[SEED].to_sparse()), f"'{SEED}'"),
    ("seed tensor wrong shape", _set(SEED, lambda sd: torch.zeros(5, 16)), f"'{SEED}'"),
    ("seed tensor not a tensor", _set(SEED, lambda sd: [0.0] * 64), f"'{SEED}'"),
    ("seed tensor integer dtype", _set(SEED, lambda sd: torch.zeros(4, 16, dtype=torch.int32)), f"'{SEED}'"),
    ("seed tensor missing", lambda sd: sd.pop(SEED), "slots.r0c0.seed"),
    ("extra seed tensor", _set("slots.r0c0.seed.bogus", lambda sd: torch.zeros(1)), "'slots.r0c0.seed.bogus'"),
    ("envelope missing", lambda sd: sd.pop("slots.r0c0._extra_state"), "'slots.r0c0._extra_state'"),
    ("envelope garbled", _set("slots.r0c0._extra_state", lambda sd: sd["slots.r0c0._extra_state"][:-5]), "slots.r0c0._extra_state"),
]  # fmt: skip


def _full_snapshot(model: nn.Module) -> dict[str, Any]:
    return {"model": model_snapshot(model), "rng": torch.get_rng_state()}


def _check_refused(load: Callable[[], object], model: nn.Module, needle: str) -> None:
    before = _full_snapshot(model)
    with pytest.raises(CheckpointError) as info:
        load()
    after = _full_snapshot(model)
    assert same(before, after), differences(before, after)
    assert needle in str(info.value), str(info.value)


@pytest.mark.parametrize(("corrupt", "needle"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
@pytest.mark.parametrize("via", ["load_checkpoint", "model.load_state_dict"])
@pytest.mark.parametrize("target", ["fresh", "grown"])
def test_a_bad_checkpoint_changes_nothing(corrupt, needle, via, target) -> None:
    state = saved_checkpoint()
    corrupt(state)
    model = build_model()
    if target == "grown":  # a live model already holding a seed (a resume into a running job)
        model.germinate("r0c0", "lora", options={"rank": 4})
    load = {
        "load_checkpoint": lambda: load_checkpoint(model, state),
        "model.load_state_dict": lambda: model.load_state_dict(state),
    }[via]
    _check_refused(load, model, needle)


def test_the_uncorrupted_checkpoint_loads_both_ways() -> None:
    """The control: the same file, uncorrupted, restores the grown model exactly."""
    state = saved_checkpoint()
    for load in (load_checkpoint, lambda m, s: m.load_state_dict(s)):
        model = build_model()
        load(model, state)
        assert model.slot("r0c0").stage is SeedStage.TRAINING
        loaded = model.state_dict()
        assert all(same(loaded[k], state[k]) for k in state)


def test_strict_false_still_refuses_bad_tensors_but_allows_missing_ones() -> None:
    state = saved_checkpoint()
    del state["host.ln_f.bias"]
    model = build_model()
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["host.ln_f.bias"] and model.slot("r0c0").stage is SeedStage.TRAINING
    state["host.ln_f.weight"] = torch.zeros(3)
    fresh = build_model()
    _check_refused(lambda: fresh.load_state_dict(state, strict=False), fresh, "'host.ln_f.weight'")


@pytest.mark.parametrize("bad", [None, [1, 2], "state", torch.zeros(2), {1: torch.zeros(1)}], ids=repr)
def test_a_state_dict_that_is_not_one_is_refused(bad) -> None:
    model = build_model()
    _check_refused(lambda: model.load_state_dict(bad), model, "")
    slot = model.slot("r0c0")
    _check_refused(lambda: slot.load_state_dict(bad), slot, "")


# ---- a slot inside a model Esper does not own -------------------------------------------------------


class Foreign(nn.Module):
    """A user's own model (its load_state_dict is torch's) with a slot injected after ``body``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, 16)
        self.body = nn.Linear(16, 16)
        self.head = nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(x)))


def foreign(grown: bool) -> Foreign:
    torch.manual_seed(0)
    model = Foreign()
    inject_slots(model, {"body": "transformer"}, example_input=torch.zeros(1, 4, dtype=torch.long))
    if grown:
        model.esper_slots["body"].germinate("lora", options={"rank": 4})
        model.esper_slots["body"].advance()
    return model


FOREIGN_SEED = "esper_slots.body.seed.down.weight"
SLOT_CORRUPTIONS = [
    ("seed tensor meta", lambda sd: sd.__setitem__(FOREIGN_SEED, torch.empty(4, 16, device="meta"))),
    ("seed tensor sparse", lambda sd: sd.__setitem__(FOREIGN_SEED, sd[FOREIGN_SEED].to_sparse())),
    ("seed tensor wrong shape", lambda sd: sd.__setitem__(FOREIGN_SEED, torch.zeros(5, 16))),
    ("seed tensor not a tensor", lambda sd: sd.__setitem__(FOREIGN_SEED, 1.0)),
    (
        "seed tensor integer dtype",
        lambda sd: sd.__setitem__(FOREIGN_SEED, torch.zeros(4, 16, dtype=torch.int8)),
    ),
]


@pytest.mark.parametrize("corrupt", [c[1] for c in SLOT_CORRUPTIONS], ids=[c[0] for c in SLOT_CORRUPTIONS])
def test_a_plain_load_of_a_foreign_model_leaves_the_slot_unchanged(corrupt) -> None:
    """torch's own load_state_dict copies layers before the slot (documented); the slot itself
    checks its tensors before anything of it changes (its load pre-hook)."""
    source = foreign(grown=True)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.5)
    state = source.state_dict()
    corrupt(state)
    model = foreign(grown=False)
    slot = model.esper_slots["body"]
    before = model_snapshot(slot)
    with pytest.raises(CheckpointError, match=r"esper_slots\.body\.seed"):
        model.load_state_dict(state)
    after = model_snapshot(slot)
    assert same(before, after), differences(before, after)
    assert slot.seed is None and slot.stage is SeedStage.DORMANT
    # and through load_checkpoint the whole foreign model is unchanged too
    whole = _full_snapshot(model)
    with pytest.raises(CheckpointError, match=r"esper_slots\.body\.seed"):
        load_checkpoint(model, state)
    assert same(whole, _full_snapshot(model))


def test_a_plain_load_of_a_foreign_model_still_restores_a_good_slot() -> None:
    source = foreign(grown=True)
    state = source.state_dict()
    model = foreign(grown=False)
    model.load_state_dict(state)
    slot = model.esper_slots["body"]
    assert slot.stage is SeedStage.TRAINING
    assert torch.equal(slot.seed.down.weight, source.esper_slots["body"].seed.down.weight)
