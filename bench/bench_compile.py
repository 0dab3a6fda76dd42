"""torch.compile: what compiling a MorphogeneticModel buys, and what the slots cost compiled.

Both cases use a small CNN (``CNNHost``, 3 blocks of 32/64/128 channels, 32x32 inputs,
batch 16) whose two pre-pool slots hold FOSSILIZED ``conv_light`` seeds - the steady state
a grown network runs in for the rest of its life. Each step is one inference forward in
eval mode under ``torch.no_grad()``.

* compiled / eager: the same model, ``torch.compile(model, fullgraph=True)`` vs eager.
  Target <= 1.0 (compiling must not make it slower).
* compiled model / compiled hand-written: the MorphogeneticModel vs a plain module that
  calls the very same host layers and seed modules in order and blends with one
  ``torch.lerp`` per seed, both compiled the same way. Target <= 1.05: once compiled, the
  lifecycle machinery (stage checks, slot routing, the alpha buffer) must cost nothing.

The backend is ``inductor`` when a C compiler is available (it generates C++ for the CPU),
else ``aot_eager``; the backend used is reported in each row's detail. Compilation happens
before timing (in the warm-up calls), so the ratios are steady-state speed only.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench._harness import Benchmark, Measurement, compare
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import MorphogeneticModel
from esper_core.stages import SeedStage

BATCH = 16
SIDE = 32
SEEDED = ("r0c0", "r0c1")
BLUEPRINT = "conv_light"


def backend() -> str:
    """``inductor`` needs a C compiler for CPU code; fall back to ``aot_eager`` without one."""
    return "inductor" if shutil.which("gcc") or shutil.which("cc") else "aot_eager"


def _fossilized_model() -> MorphogeneticModel:
    """The steady state, reached through the public lifecycle API (permissive gates)."""
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(num_classes=10, n_blocks=3, base_channels=32), slots=SEEDED,
                               gates=QualityGates("permissive"))  # fmt: skip
    for slot_id in SEEDED:
        slot = model.slot(slot_id)
        slot.germinate(BLUEPRINT, ramp_epochs=1)
        slot.advance(SeedStage.TRAINING)
        slot.record_accuracy(50.0)
        slot.advance(SeedStage.BLENDING)
        slot.step_epoch()
        slot.advance(SeedStage.HOLDING)
        slot.record_counterfactual(1.0)
        slot.advance(SeedStage.FOSSILIZED)
        assert slot.stage is SeedStage.FOSSILIZED
    return model.eval()


class HandWritten(nn.Module):
    """The FOSSILIZED model written out by hand: same layers, same seeds, same blend math."""

    def __init__(self, model: MorphogeneticModel) -> None:
        super().__init__()
        host = model.host
        assert isinstance(host, CNNHost)
        self.blocks = host.blocks
        self.pool = host.pool
        self.classifier = host.classifier
        slots = dict(model.slots.items())
        seeds = [slots.get(f"r0c{i}") for i in range(len(self.blocks))]
        self.seeds = nn.ModuleList(nn.Identity() if s is None or s.seed is None else s.seed for s in seeds)
        self.register_buffer("alpha", torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        h = x.contiguous(memory_format=torch.channels_last)
        for block, seed in zip(self.blocks, self.seeds, strict=True):
            h = block(h)
            if not isinstance(seed, nn.Identity):
                h = torch.lerp(h, seed(h), self.alpha)
            h = self.pool(h)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


def _step(module: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            module(x)

    return run


def _setup() -> tuple[MorphogeneticModel, HandWritten, Tensor]:
    model = _fossilized_model()
    hand = HandWritten(model).eval()
    x = torch.randn(BATCH, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the hand-written module must really be equivalent
        torch.testing.assert_close(hand(x), model(x))
    return model, hand, x


def compiled_vs_eager() -> Measurement:
    model, _, x = _setup()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend(), fullgraph=True)
    return compare(_step(compiled, x), _step(model, x), repeats=21, number=5, warmup=3,
                   detail=f"backend={backend()}")  # fmt: skip


def compiled_vs_hand_written() -> Measurement:
    model, hand, x = _setup()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend(), fullgraph=True)
    compiled_hand = torch.compile(hand, backend=backend(), fullgraph=True)
    return compare(_step(compiled, x), _step(compiled_hand, x), repeats=21, number=5, warmup=3,
                   detail=f"backend={backend()}")  # fmt: skip


BENCHMARKS = [
    Benchmark("compile: FOSSILIZED model compiled / eager (inference)", "<= 1.0", compiled_vs_eager),
    Benchmark(
        "compile: compiled model / compiled hand-written equivalent (FOSSILIZED)",
        "<= 1.05",
        compiled_vs_hand_written,
    ),
]
