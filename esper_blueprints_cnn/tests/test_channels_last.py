"""Backward on channels_last input, in child processes.

KNOWN-ISSUES: on torch 2.13 CPU, GroupNorm's backward segfaults when its input is
channels_last and does not require grad, which is what a seed sees under gradient isolation
(``h.detach()``). The slot owns the workaround. These tests record which blueprints are
exposed: only ``norm`` applies GroupNorm to the seed's input itself; every other blueprint
normalises a conv output, which requires grad. The cases run in a fresh interpreter so a
segfault fails a test instead of killing the run; the child prints each blueprint's name
before running it, so a crash names the culprit.
"""

from __future__ import annotations

from collections.abc import Callable

EXPOSED = ("norm",)
SAFE = ("attention", "depthwise", "bottleneck", "conv_small", "conv_light", "conv_heavy")

SCRIPT = """
import os
os.environ["ESPER_LOAD_PLUGINS"] = "esper-blueprints-cnn"  # skip unrelated packs: faster start
import torch
import esper_core

for name, requires_grad in {cases!r}:
    print(name, flush=True)
    module = esper_core.create_blueprint("cnn", name, 16)
    x = torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last)
    x = x.requires_grad_() if requires_grad else x.detach()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    for _ in range(2):  # the second step runs backward through every layer
        optimizer.zero_grad()
        out = module(x)
        assert out.is_contiguous(memory_format=torch.channels_last)
        (out * torch.randn(out.shape)).sum().backward()
        optimizer.step()
print("ok")
"""


def test_channels_last_backward(run_python: Callable) -> None:
    # Blueprints whose GroupNorm only sees conv outputs run backward on a *detached*
    # channels_last input; the exposed ones are run with an input that requires grad.
    assert not set(SAFE) & set(EXPOSED)
    cases = [(name, False) for name in SAFE] + [(name, True) for name in EXPOSED]
    result = run_python(SCRIPT.format(cases=cases))
    assert result.returncode == 0, (
        f"exit {result.returncode} after: {result.stdout.split()}\n{result.stderr[-2000:]}"
    )
    assert result.stdout.split() == [*SAFE, *EXPOSED, "ok"]
