"""Injected slots: what an empty slot costs on a model Esper did not write.

* Empty slots on ``nn.TransformerEncoder`` in inference: a slot on every layer, none
  holding a seed, against the same encoder without slots, under ``no_grad`` in eval mode
  (torch's fused ``_transformer_encoder_layer_fwd`` path, which any forward hook turns
  off). Once on a regular batch and once with a ``src_key_padding_mask`` (the default
  ``enable_nested_tensor=True`` path). Target <= 1.02.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bench._harness import Benchmark, Measurement, compare
from esper_core.inject import inject_slots


def _encoder_inference(masked: bool) -> Measurement:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True)
    plain = nn.TransformerEncoder(layer, 4).eval()
    injected = copy.deepcopy(plain)
    inject_slots(
        injected, {f"layers.{i}": "transformer" for i in range(4)}, example_input=torch.zeros(1, 4, 128)
    )
    x = torch.randn(16, 64, 128)
    mask = None
    if masked:
        lengths = torch.randint(16, 65, (16,), generator=torch.Generator().manual_seed(1))
        mask = torch.arange(64)[None, :] >= lengths[:, None]

    def run(model: nn.Module) -> None:
        with torch.no_grad():
            model(x, src_key_padding_mask=mask)

    # One thread: ratios of CPU kernels are far steadier single-threaded on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return compare(
            lambda: run(injected),
            lambda: run(plain),
            repeats=31,
            number=5,
            warmup=3,
            detail=f"4 empty slots; d_model 128, 4 layers; batch {tuple(x.shape)}; 1 thread"
            + ("; padding mask (nested tensors)" if masked else ""),
        )
    finally:
        torch.set_num_threads(threads)


BENCHMARKS = [
    Benchmark(
        "inject: empty slots / plain nn.TransformerEncoder (inference)",
        "<= 1.02",
        lambda: _encoder_inference(masked=False),
    ),
    Benchmark(
        "inject: empty slots / plain nn.TransformerEncoder (inference, padding mask)",
        "<= 1.02",
        lambda: _encoder_inference(masked=True),
    ),
]
