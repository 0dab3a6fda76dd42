"""Backward on channels_last inputs that do not require grad, in child processes.

KNOWN-ISSUES: on torch 2.13 CPU, GroupNorm's backward segfaults when its input is
channels_last and does not require grad - a seed's input under gradient isolation
(``h.detach()``), behind a frozen host, or a blueprint module used on its own. Every norm in
this pack is a ``SeedGroupNorm``, which is the core's ``esper_core.groupnorm.GroupNorm``
(the workaround lives there), so every blueprint must survive such a backward, in every
layout that crashes torch. The cases run in a fresh interpreter so a segfault fails a test
instead of killing the run; the child prints each case before running it, so a crash names
the culprit.
"""

from __future__ import annotations

from collections.abc import Callable

from .conftest import BLUEPRINTS

#: Blueprints with parameters (``noop`` has no backward to run).
LEARNABLE = tuple(name for name in BLUEPRINTS if name != "noop")

SCRIPT = """
import os
os.environ["ESPER_LOAD_PLUGINS"] = "esper-blueprints-cnn"  # skip unrelated packs: faster start
import torch
import esper_core

layouts = {{
    "5x7": lambda: torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last),
    "1x1": lambda: torch.randn(2, 16, 1, 1).to(memory_format=torch.channels_last),
    "slice": lambda: torch.randn(2, 16, 6, 7).to(memory_format=torch.channels_last)[:, :, 1:],
}}
for name in {blueprints!r}:
    for layout, make in layouts.items():
        for dtype in (torch.float32, torch.bfloat16):
            print(f"{{name}}/{{layout}}/{{dtype}}", flush=True)
            module = esper_core.create_blueprint("cnn", name, 16).to(dtype)
            x = make().to(dtype)
            assert not x.requires_grad
            optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
            for _ in range(2):  # the second step runs backward through every layer
                optimizer.zero_grad()
                out = module(x)
                assert out.is_contiguous(memory_format=torch.channels_last) or layout == "slice"
                (out.float() * torch.randn(out.shape)).sum().backward()
                optimizer.step()
print("ok")
"""


def test_every_blueprint_survives_backward_on_a_detached_channels_last_input(run_python: Callable) -> None:
    result = run_python(SCRIPT.format(blueprints=list(LEARNABLE)))
    assert result.returncode == 0, (
        f"exit {result.returncode} after: {result.stdout.split()[-1:]}\n{result.stderr[-2000:]}"
    )
    assert result.stdout.split()[-1] == "ok"
    assert len(result.stdout.split()) == len(LEARNABLE) * 3 * 2 + 1


FROZEN_HOST = """
import os
os.environ["ESPER_LOAD_PLUGINS"] = "esper-blueprints-cnn"
import torch
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import MorphogeneticModel
from esper_core.stages import SeedStage as S

torch.manual_seed(0)
model = MorphogeneticModel(CNNHost(num_classes=3, n_blocks=2, base_channels=16), gates=QualityGates("permissive"))
model.host.requires_grad_(False)  # a frozen backbone
model = model.to(memory_format=torch.channels_last)
x = torch.randn(2, 3, 16, 16).to(memory_format=torch.channels_last)
slot = model.slot(model.slot_ids[0])
slot.germinate("norm")

def step(stage):
    print(stage.name, flush=True)
    model.zero_grad(set_to_none=True)
    model(x).square().sum().backward()
    assert all(p.grad is not None for p in slot.seed_parameters())

for target in (S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED):
    if target is S.BLENDING:
        slot.record_accuracy(41.0)
    if target is S.HOLDING:
        while not (slot.schedule.at_rest and slot.alpha == 1.0):
            slot.step_epoch()
        slot.record_accuracy(43.0)
    if target is S.FOSSILIZED:
        slot.record_counterfactual(2.0)
    assert slot.advance(target).passed, target
    step(target)
print("ok")
"""


def test_norm_seed_on_a_frozen_channels_last_host_survives_every_stage(run_python: Callable) -> None:
    """Issue 15 item 6: HOLDING and FOSSILIZED (the seed input is not isolated there) crashed."""
    result = run_python(FROZEN_HOST)
    assert result.returncode == 0, (
        f"exit {result.returncode} after: {result.stdout.split()}\n{result.stderr[-2000:]}"
    )
    assert result.stdout.split() == ["TRAINING", "BLENDING", "HOLDING", "FOSSILIZED", "ok"]
