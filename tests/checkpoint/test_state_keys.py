"""``expected_entries`` holds exactly the keys (and tensors) ``model.state_dict()`` would.

``load_checkpoint`` checks a checkpoint's keys against it instead of calling
``state_dict()`` (which encodes every slot's envelope): the kind is "every way a module
decides what it saves", so each case below is one of them, compared with torch's own
``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from esper_core._state_keys import expected_entries, walk
from esper_core.checkpoint import find_slots
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.inject import inject_slots
from esper_core.model import MorphogeneticModel


class _Extra(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def get_extra_state(self) -> dict[str, int]:
        return {"calls": 1}

    def set_extra_state(self, state: object) -> None:
        pass


class _CustomSave(nn.Linear):
    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "scale"] = torch.ones(1)


def _shared() -> nn.Module:
    lin = nn.Linear(3, 3)
    return nn.Sequential(lin, nn.ReLU(), lin)  # one module under two paths: saved under both


def _buffers() -> nn.Module:
    bn = nn.BatchNorm1d(4)
    bn.register_buffer("scratch", torch.zeros(2), persistent=False)
    bn.register_buffer("absent", None)
    return nn.Sequential(bn, nn.Linear(4, 4, bias=False))


def _hooked() -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 2))
    model.register_state_dict_post_hook(lambda module, sd, prefix, local: sd.__setitem__("extra.key", 1))
    return model


def _grown() -> nn.Module:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(10, in_channels=1, n_blocks=2, base_channels=4), gates=QualityGates())
    model.slot("r0c0").germinate("conv_light")
    return model


def _injected() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    inject_slots(model, {"0": "transformer"}, example_input=torch.randn(2, 3, 8))
    model.esper_slots["_0"].germinate("mlp_small")
    return model


CASES: dict[str, Callable[[], nn.Module]] = {
    "extra state": lambda: nn.Sequential(_Extra(), nn.Linear(2, 2)),
    "own _save_to_state_dict": lambda: nn.Sequential(_CustomSave(2, 2)),
    "shared module": _shared,
    "buffers": _buffers,
    "state-dict hook": _hooked,
    "grown model": _grown,
    "injected model": _injected,
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_entries_are_torchs(name: str) -> None:
    model = CASES[name]()
    full = model.state_dict(keep_vars=True)
    skip = tuple(k.rpartition(".")[0] + "." for k in full if k.endswith("_extra_state"))[:1]
    skip_keys = {k for k in full if k.endswith("_extra_state")}
    expected = {k: v for k, v in full.items() if not k.startswith(skip) and k not in skip_keys}
    got = expected_entries(model, skip, skip_keys)
    assert list(got) == list(expected) or set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert got[key] is value or torch.equal(got[key], value), key
        else:
            assert got[key] == value, key
    plain = expected_entries(model, (), set())
    assert set(plain) == set(full)  # nothing skipped: every key torch saves


@pytest.mark.parametrize("name", list(CASES))
def test_walk_is_named_modules_without_deduplication(name: str) -> None:
    model = CASES[name]()
    assert [(p, id(m)) for p, m in walk(model)] == [
        (p, id(m)) for p, m in model.named_modules(remove_duplicate=False)
    ]


def test_find_slots_lists_a_shared_slot_once_at_its_first_path() -> None:
    model = _grown()
    slot = model.slots["r0c0"]
    model.extra = nn.ModuleDict({"again": slot})  # the same slot under a second path
    found = find_slots(model)
    assert [e.prefix for e in found].count("slots.r0c0.") == 1
    assert [e.slot for e in found].count(slot) == 1
    assert [e.prefix for e in found] == [
        f"{p}." for p, m in model.named_modules() if m in model.slots.values()
    ]
