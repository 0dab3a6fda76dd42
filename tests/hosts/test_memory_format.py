"""Seeds are laid out like their host, so every seed gradient has its parameter's own strides.

A conv's weight gradient takes its input's layout. A contiguous seed weight with a size-1
dimension (depthwise ``(C, 1, k, k)``, 1x1 ``(C, C, 1, 1)``) in a channels_last host got
gradients with other nominal strides, which ``DistributedDataParallel``'s reducer reports as
"Grad strides do not match bucket view strides" (and copies) on every step of a two-rank run.
The kind: for every CNN blueprint, in a ``MorphogeneticModel`` and in an injected model, in
either layout, each seed parameter's gradient has the parameter's strides. The two-rank
instance itself runs in ``tests/docs/test_examples.py`` (the multi-process example asserts
that it prints no warning).
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.inject import inject_slots
from esper_core.model import MorphogeneticModel
from esper_core.registry import list_blueprints
from esper_core.stages import SeedStage

CNN_BLUEPRINTS = sorted(spec.name for spec in list_blueprints("cnn") if spec.name != "noop")
LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def _grow_and_backward(slot: object, run: object) -> None:
    """Germinate-to-BLENDING in ``slot`` with one backward per stage that runs the seed."""
    slot.advance(SeedStage.TRAINING)
    run()
    slot.record_accuracy(50.0)
    slot.advance(SeedStage.BLENDING)
    slot.step_epoch()
    run()


def _mismatched(slot: object) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    grads = [(n, p) for n, p in slot.seed.named_parameters() if p.grad is not None]
    assert grads, "the seed received no gradient"
    return [(n, p.stride(), p.grad.stride()) for n, p in grads if p.grad.stride() != p.stride()]


def _net() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(conv=nn.Conv2d(3, 8, 3, padding=1), act=nn.ReLU(), head=nn.Conv2d(8, 4, 1))
    )


def _is_layout(t: torch.Tensor, layout: torch.memory_format) -> bool:
    """Nominal strides, as DDP compares them (``is_contiguous`` ignores size-1 dimensions)."""
    return t.stride() == torch.empty(t.shape).to(memory_format=layout).stride()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("blueprint", CNN_BLUEPRINTS)
def test_morphogenetic_seed_gradients_have_their_parameters_strides(blueprint: str, layout: str) -> None:
    torch.manual_seed(0)
    host = CNNHost(10, in_channels=1, n_blocks=2, base_channels=8, memory_format=LAYOUTS[layout])
    model = MorphogeneticModel(host, gates=QualityGates("permissive"))
    model.germinate("r0c1", blueprint, ramp_epochs=2)
    slot = model.slot("r0c1")
    x = torch.randn(4, 1, 8, 8)
    _grow_and_backward(slot, lambda: model(x).square().sum().backward())
    weights = [p for p in slot.seed.parameters() if p.dim() == 4]
    assert all(_is_layout(p, LAYOUTS[layout]) for p in weights)
    assert _mismatched(slot) == []


@pytest.mark.parametrize("blueprint", ["depthwise", "bottleneck", "conv_small"])
def test_injected_channels_last_model_grows_channels_last_seeds(blueprint: str) -> None:
    torch.manual_seed(0)
    model = _net()
    model.to(memory_format=torch.channels_last)  # the standard PyTorch channels_last recipe
    x = torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)
    slots = inject_slots(model, {"act": "cnn"}, example_input=x, gates=QualityGates("permissive"))
    slots["act"].germinate(blueprint, ramp_epochs=2)
    _grow_and_backward(slots["act"], lambda: model(x).square().sum().backward())
    assert _mismatched(slots["act"]) == []


def test_seeds_follow_a_later_change_of_memory_format() -> None:
    """``model.to(memory_format=...)`` after injection moves future seeds too (like ``.to(device)``)."""
    torch.manual_seed(0)
    model = _net()
    slots = inject_slots(model, {"act": "cnn"}, example_input=torch.randn(1, 3, 4, 4))
    slot = slots["act"]
    slot.germinate("depthwise")
    assert _is_layout(slot.seed.depthwise.weight, torch.contiguous_format)  # a contiguous host
    slot.prune("relayout", "test")
    model.to(memory_format=torch.channels_last)
    for _ in range(10):  # through the cooldown back to DORMANT
        if slot.stage is SeedStage.DORMANT:
            break
        slot.step_epoch()
    slot.germinate("depthwise")
    weight = slot.seed.depthwise.weight
    assert _is_layout(weight, torch.channels_last)


def test_a_contiguous_host_keeps_seeds_contiguous() -> None:
    """Only a channels_last host makes channels_last seeds: a plain (N, C, H, W) model does not."""
    torch.manual_seed(0)
    model = _net()
    x = torch.randn(2, 3, 6, 6)
    slots = inject_slots(model, {"act": "cnn"}, example_input=x, gates=QualityGates("permissive"))
    slots["act"].germinate("depthwise", ramp_epochs=2)
    assert _is_layout(slots["act"].seed.depthwise.weight, torch.contiguous_format)
    _grow_and_backward(slots["act"], lambda: model(x).square().sum().backward())
    assert _mismatched(slots["act"]) == []
