"""Helpers for the torch.compile tests: small models driven into any stage configuration.

Models use the real host classes and the installed blueprint packs, and reach each stage
through the public lifecycle API (permissive gates, one tiny epoch per gate), so what is
compiled is exactly what a user compiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from esper_core.blend import BlendAlgorithm
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost, TransformerHost
from esper_core.model import MorphogeneticModel
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

__all__ = ["CountingBackend", "build_model", "drive", "example"]

_S = SeedStage
#: Stages reachable by ``drive``, in lifecycle order.
_ORDER = (_S.GERMINATED, _S.TRAINING, _S.BLENDING, _S.HOLDING, _S.FOSSILIZED)
BLUEPRINT = {"cnn": "conv_light", "transformer": "mlp_small"}


class CountingBackend:
    """A ``torch.compile`` backend that counts the graphs dynamo hands it, then runs them eagerly
    (or hands them to the backend named ``inner``, e.g. ``"aot_eager"`` for AOTAutograd).

    Every (re)compilation of a frame produces at least one call, so the count is the number
    of compilations (``fullgraph=True`` rules out extra calls from graph breaks).
    """

    def __init__(self, inner: str | None = None) -> None:
        self.compilations = 0
        self.inner = None if inner is None else torch._dynamo.lookup_backend(inner)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
        self.compilations += 1
        return gm.forward if self.inner is None else self.inner(gm, example_inputs)


def build_model(topology: str) -> MorphogeneticModel:
    torch.manual_seed(0)
    if topology == "cnn":
        host = CNNHost(num_classes=3, n_blocks=2, base_channels=4)
    else:
        host = TransformerHost(vocab_size=11, n_embd=8, n_head=2, n_layer=2, block_size=6)
    return MorphogeneticModel(host, gates=QualityGates("permissive"))


def example(topology: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if topology == "cnn":
        return torch.randn(2, 3, 8, 8, generator=g)
    return torch.randint(0, 11, (2, 6), generator=g)


def _epoch(model: MorphogeneticModel, slot: SeedSlot, accuracy: float) -> None:
    """One eager training step through the whole model, then the slot's epoch accuracy."""
    out = model(example(model.topology, seed=int(accuracy)))
    out.float().square().mean().backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.01 * p.grad
                p.grad = None
    slot.record_accuracy(accuracy)


def drive(
    model: MorphogeneticModel,
    slot_id: str,
    target: SeedStage,
    algorithm: BlendAlgorithm = BlendAlgorithm.ADD,
    ramp_epochs: int = 3,
) -> SeedSlot:
    """Germinate the topology's test blueprint in ``slot_id`` and advance it to ``target``.

    BLENDING stops right after entering the stage (alpha still 0, ramp ahead).
    """
    slot = model.slot(slot_id)
    slot.germinate(BLUEPRINT[model.topology], algorithm=algorithm, ramp_epochs=ramp_epochs)
    for stage in _ORDER[1 : _ORDER.index(target) + 1]:
        if stage is _S.BLENDING:
            _epoch(model, slot, 41.0)
        elif stage is _S.HOLDING:
            while not slot.schedule.at_rest or slot.alpha < 1.0:
                slot.step_epoch()
            _epoch(model, slot, 43.0)
        elif stage is _S.FOSSILIZED:
            slot.record_counterfactual(2.0)
        result = slot.advance(stage)
        assert result.passed, result
    assert slot.stage is target
    return slot


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    """Each test starts and ends with empty dynamo caches (no state leaks between tests)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
