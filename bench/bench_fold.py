"""Folding: what a folded model costs in inference against the grown model and the host.

* Folded / grown: a ``TransformerHost`` with a fossilized ``mlp`` seed at every injection
  point, its fold against the grown ``MorphogeneticModel``, under ``no_grad`` in eval mode.
  The fold runs the same seeds without the slots' stage branches. Target <= 1.02.
* Merged / host: a token MLP stack (``nn.Linear`` layers) with a fossilized ``lora`` seed on
  every layer, folded with ``merge="all"``, against the same stack without seeds: the merged
  model has the host's architecture, so it costs what the host costs. Target <= 1.02.
* Wrapped / merged: the same seeds folded without merging (each LoRA seed still runs) against
  the merged fold: what the merge saves. Reported, target >= 1.0.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bench._harness import Benchmark, Measurement, compare
from esper_core.folding import fold
from esper_core.gates import QualityGates
from esper_core.hosts import TransformerHost
from esper_core.inject import InjectionTarget, inject_slots
from esper_core.model import MorphogeneticModel
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage


def _fossilize(slot: SeedSlot, blueprint: str) -> None:
    slot.germinate(blueprint, ramp_epochs=1)
    slot.advance()
    slot.record_accuracy(40.0)
    slot.advance()
    slot.step_epoch()
    slot.advance()
    slot.record_counterfactual(2.0)
    slot.advance()
    assert slot.stage is SeedStage.FOSSILIZED
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.normal_(0.0, 0.02)


def _timed(case: nn.Module, reference: nn.Module, x: torch.Tensor, detail: str) -> Measurement:
    def run(model: nn.Module) -> None:
        with torch.no_grad():
            model(x)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compare(
            lambda: run(case), lambda: run(reference), repeats=21, number=5, warmup=3, detail=detail
        )
    finally:
        torch.set_num_threads(threads)


def _folded_vs_grown() -> Measurement:
    torch.manual_seed(0)
    host = TransformerHost(256, n_embd=128, n_head=4, n_layer=4, block_size=64)
    model = MorphogeneticModel(host, gates=QualityGates("permissive"))
    for slot_id in model.slot_ids:
        _fossilize(model.slot(slot_id), "mlp")
    model.eval()
    folded = fold(model).eval()
    ids = torch.randint(0, 256, (8, 64))
    return _timed(folded, model, ids, "4 fossilized mlp seeds; d 128, 4 layers; batch (8, 64); 1 thread")


def _stack() -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Linear(256, 256), nn.GELU()]
    return nn.Sequential(*layers)


def _lora_stack(merge: str) -> tuple[nn.Module, nn.Module]:
    host = _stack().eval()
    grown = copy.deepcopy(host)
    slots = inject_slots(
        grown,
        [InjectionTarget(str(2 * i), "transformer", slot_id=f"linear{i}") for i in range(4)],
        example_input=torch.zeros(1, 4, 256),
        gates=QualityGates("permissive"),
    )
    for slot in slots.values():
        _fossilize(slot, "lora")
    return fold(grown.eval(), merge=merge).eval(), host  # type: ignore[arg-type]


def _merged_vs_host() -> Measurement:
    merged, host = _lora_stack("all")
    x = torch.randn(16, 64, 256)
    return _timed(merged, host, x, "4 Linear(256) with merged lora seeds; batch (16, 64, 256); 1 thread")


def _wrapped_vs_merged() -> Measurement:
    wrapped, _ = _lora_stack("none")
    merged, _ = _lora_stack("all")
    x = torch.randn(16, 64, 256)
    return _timed(
        wrapped, merged, x, "4 Linear(256), lora seeds wrapped vs merged; batch (16, 64, 256); 1 thread"
    )


BENCHMARKS = [
    Benchmark("fold: folded / grown model (inference)", "<= 1.02", _folded_vs_grown),
    Benchmark("fold: merged lora / plain host (inference)", "<= 1.02", _merged_vs_host),
    Benchmark("fold: wrapped lora / merged lora (inference)", ">= 1.0", _wrapped_vs_merged),
]
