"""A folded model compiles like any module (fullgraph, no graph break from the folded seeds)."""

from __future__ import annotations

import torch

from esper_core.alpha import BlendAlgorithm
from esper_core.folding import fold
from esper_core.inject import InjectionTarget, inject_slots

from .conftest import grow
from .test_fold import TupleNet


def test_folded_model_compiles_with_fullgraph(permissive) -> None:
    torch.manual_seed(0)
    net = TupleNet()
    targets = [
        InjectionTarget("layer", "transformer", output=0),
        InjectionTarget("shared", "transformer", slot_id="first"),
    ]
    slots = inject_slots(net, targets, example_input=torch.randn(1, 4, 6), gates=permissive)
    grow(slots["layer"], "ship_mlp", seed=1)
    grow(slots["first"], "ship_mix", algorithm=BlendAlgorithm.GATE, seed=2)
    folded = fold(net).eval()
    torch.compiler.reset()
    try:
        compiled = torch.compile(folded, backend="eager", fullgraph=True)
        x = torch.randn(2, 5, 6)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), folded(x), rtol=0, atol=0)
    finally:
        torch.compiler.reset()
