"""Slots, models and snapshots for the adversarial tests (real blueprints from the installed packs)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from esper_core.alpha import BlendAlgorithm
from esper_core.gates import QualityGates
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

_S = SeedStage
DIM = 8
#: Lifecycle states the fuzzers start from, each reached through the public API.
STAGES = (
    "dormant",
    "germinated",
    "training",
    "blending",
    "blending_gate",
    "blending_down",
    "holding",
    "fossilized",
    "embargoed",
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # Tiny tensors on a busy 2-core machine: a thread pool costs more than it saves.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def example(slot: SeedSlot, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (2, slot.dim, 3, 3) if slot.topology == "cnn" else (2, 4, slot.dim)
    return torch.randn(shape, generator=g)


def new_slot(slot_id: str = "s0", topology: str = "cnn", **config: Any) -> SeedSlot:
    config.setdefault("gates", QualityGates("permissive"))
    config.setdefault("embargo_epochs", 2)
    return SeedSlot(slot_id, topology=topology, dim=DIM, **config)


def _epoch(slot: SeedSlot, accuracy: float) -> None:
    """One tiny SGD step on the seed (if it runs), then the epoch's accuracy."""
    params = [p for p in slot.seed_parameters() if p.requires_grad]
    if params:
        slot(example(slot, int(accuracy)).requires_grad_(True)).square().mean().backward()
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p -= 0.01 * p.grad
                    p.grad = None
    slot.record_accuracy(accuracy)


def drive(name: str, topology: str = "cnn") -> SeedSlot:
    """A slot in lifecycle state ``name`` (see :data:`STAGES`), reached through the public API."""
    torch.manual_seed(7)
    slot = new_slot(topology=topology)
    if name == "dormant":
        return slot
    blueprint = "conv_light" if topology == "cnn" else "lora"
    algorithm = BlendAlgorithm.GATE if name == "blending_gate" else BlendAlgorithm.ADD
    slot.germinate(blueprint, algorithm=algorithm, ramp_epochs=3)
    if name == "germinated":
        return slot
    _epoch(slot, 40.0)
    slot.advance()
    _epoch(slot, 42.0)
    if name == "training":
        return slot
    if name == "embargoed":
        slot.prune("test", "tester")
        slot.step_epoch()
        return slot
    slot.advance()
    slot.step_epoch()
    _epoch(slot, 45.0)
    if name in ("blending", "blending_gate"):
        return slot
    slot.step_epoch()
    slot.step_epoch()
    _epoch(slot, 47.0)
    slot.advance()
    slot.record_counterfactual(2.5)
    if name == "holding":
        return slot
    if name == "blending_down":
        slot.schedule_prune(3, reason="test", initiator="tester")
        slot.step_epoch()
        return slot
    slot.advance()
    assert name == "fossilized" and slot.stage is _S.FOSSILIZED, name
    return slot


_BUILT: dict[tuple[str, str], SeedSlot] = {}


def stage_slot(name: str, topology: str = "cnn") -> SeedSlot:
    """A fresh deep copy of the slot in state ``name`` (built once per process)."""
    key = (name, topology)
    if key not in _BUILT:
        _BUILT[key] = drive(name, topology)
    return copy.deepcopy(_BUILT[key])


def tensors(module: nn.Module) -> dict[str, Any]:
    """Every parameter and buffer (persistent or not), with its requires_grad flag."""
    found: dict[str, Any] = {}
    for name, p in module.named_parameters():
        found[name] = (p.detach().clone(), p.requires_grad)
    for name, b in module.named_buffers():
        found[name] = b.detach().clone()
    return found


def slot_snapshot(slot: SeedSlot) -> dict[str, Any]:
    """Everything a rejected call must leave alone on a slot."""
    return {
        "envelope": slot.lifecycle_text(),
        "config": slot.config,
        "modules": (id(slot.seed), id(slot.blend_gate)),
        "tensors": tensors(slot),
        "training": [m.training for m in slot.modules()],
        "report": slot.report(),
    }


def model_snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a rejected call must leave alone on a model: all tensors and every slot."""
    from esper_core.checkpoint import find_slots

    return {
        "tensors": tensors(model),
        "training": [m.training for m in model.modules()],
        "slots": {prefix: slot_snapshot(slot) for prefix, slot in find_slots(model)},
        "modules": [type(m).__name__ for m in model.modules()],
    }
