"""Run by test_wheels.py with the Python of a fresh venv that holds only the built wheels.

A user's own models (not Esper's hosts) get slots with ``inject_slots``; a CNN seed from
esper-blueprints-cnn is grown from germination to FOSSILIZED with a JSON Lines sink on,
and a transformer seed from esper-blueprints-transformer is germinated and checked to be
the identity at birth. Prints one JSON object with what the test checks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import esper_core
from esper_core.gates import QualityGates
from esper_core.inject import evaluate_injected, inject_slots
from esper_core.optim import OptimizerBinding, host_parameters
from esper_core.sinks import JsonlSink
from esper_core.stages import SeedStage


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 32)
        self.block = nn.Sequential(nn.Linear(32, 32), nn.GELU())
        self.out = nn.Linear(32, 16)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(self.embed(tokens)))


def grow_cnn(events_path: Path) -> dict:
    torch.manual_seed(0)
    x = torch.randn(128, 1, 8, 8)
    y = (x[:, :, :4].mean((1, 2, 3)) > x[:, :, 4:].mean((1, 2, 3))).long()
    model = Net()
    slots = inject_slots(model, {"features": "cnn"}, example_input=x[:1], gates=QualityGates("permissive"))
    optimizer = torch.optim.Adam(host_parameters(model, slots), lr=1e-2)
    OptimizerBinding(optimizer, slots)
    slot = slots["features"]
    with JsonlSink(events_path, mode="w"):
        before = model(x).detach()
        slot.germinate("conv_light", ramp_epochs=2)
        identity_at_birth = torch.equal(model(x).detach(), before)
        in_optimizer = all(
            any(p is q for group in optimizer.param_groups for q in group["params"])
            for p in slot.seed_parameters()
        )
        stages = []
        for _ in range(12):
            for i in range(0, 128, 32):
                optimizer.zero_grad()
                F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
                optimizer.step()
            result = evaluate_injected(model, [(x, y)], lambda out, t: (out.argmax(1) == t).float())
            slot.record_accuracy(result.score)
            if "features" in result.contributions:
                slot.record_counterfactual(result.contributions["features"])
            if slot.stage is SeedStage.FOSSILIZED:
                break
            slot.advance()
            slot.step_epoch()
            stages.append(slot.stage.name)
    report = slot.report()
    return {
        "identity_at_birth": identity_at_birth,
        "seed_params_in_optimizer": in_optimizer,
        "stage": report.stage.name,
        "blueprint": report.blueprint,
        "param_count": report.param_count,
        "stages": stages,
        "events": [json.loads(line)["event"] for line in events_path.read_text().splitlines()],
    }


def germinate_transformer() -> dict:
    torch.manual_seed(0)
    tokens = torch.randint(0, 16, (2, 10))
    model = TinyLM()
    slots = inject_slots(model, {"block": "transformer"}, example_input=tokens[:1])
    before = model(tokens).detach()
    slots["block"].germinate("lora")
    return {
        "stage": slots["block"].stage.name,
        "identity_at_birth": torch.allclose(model(tokens).detach(), before, atol=0.0, rtol=0.0),
        "seed_params": sum(p.numel() for p in slots["block"].seed_parameters()),
    }


if __name__ == "__main__":
    out = Path(sys.argv[1])
    print(
        json.dumps(
            {
                "esper_core_file": esper_core.__file__,
                "torch": torch.__version__,
                "cnn": grow_cnn(out / "events.jsonl"),
                "transformer": germinate_transformer(),
            }
        )
    )
