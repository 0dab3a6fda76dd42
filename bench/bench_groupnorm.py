"""The GroupNorm channels_last workaround (``esper_core.groupnorm``): its memory.

* Bytes autograd keeps for backward when the CNN pack's ``norm`` seed (a GroupNorm on its
  input) runs on a channels_last activation that does not require grad - the case torch
  2.13 segfaults on, which the workaround turns into a view that requires grad - against
  the same seed on the same activation requiring grad (torch's own working path). Target
  <= 1.01: the workaround copies nothing. The detail also gives what the earlier
  contiguous-copy workaround kept, and the one transient tensor the workaround costs in
  backward (the input gradient GroupNorm computes and the view then drops).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bench._harness import Benchmark, Measurement, ratio_of


def _saved_bytes(fn: Callable[[], Tensor], exclude: Tensor) -> int:
    """Bytes of distinct storages autograd keeps for backward, not counting ``exclude``'s."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() != exclude.untyped_storage().data_ptr():
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.float().square().sum().backward()
    return sum(storages.values())


def workaround_memory() -> Measurement:
    import esper_core

    torch.manual_seed(0)
    seed = esper_core.create_blueprint("cnn", "norm", 64)
    x = torch.randn(32, 64, 16, 16).to(memory_format=torch.channels_last)
    ours = _saved_bytes(lambda: seed(x), x)
    wants_grad = x.clone().requires_grad_(True)
    reference = _saved_bytes(lambda: seed(wants_grad), wants_grad)
    copied = _saved_bytes(lambda: seed(x.contiguous()), x)  # the copy is a new storage: counted
    activation = x.numel() * x.element_size()
    return ratio_of(
        [ours / reference],
        detail=f"kept for backward: workaround {ours} B, input requiring grad {reference} B, "
        f"contiguous-copy workaround {copied} B; transient in backward: one input gradient "
        f"({activation} B, the activation's size)",
    )


BENCHMARKS = [
    Benchmark(
        "groupnorm: channels_last workaround memory / input requiring grad",
        "<= 1.01",
        workaround_memory,
        note="bytes autograd keeps for backward; no activation copy",
    ),
]
