"""Grow seeds inside your own model, in one process, and resume the run from a checkpoint.

Run it::

    python examples/single_process.py --out runs/one

and cut a run after epoch 5, then resume it in a new process::

    python examples/single_process.py --save-at 5 --out runs/a
    python examples/single_process.py --resume runs/a/checkpoint.pt --out runs/b

The resumed run ends bit-identical to the uninterrupted one (losses, decisions, weights):
the checkpoint holds the model with its slots' lifecycles, the optimizer, the LR scheduler,
the controller's memory and the RNG state the training loop draws from (dropout). The pieces:

* ``inject_slots``: slots on the outputs of two blocks of a model written without Esper;
* ``HeuristicController``: germinates on plateaus, advances seeds whose gates pass, prunes
  seeds that do not help (``evaluate_injected`` measures each seed's contribution);
* ``Governor``: a seed that makes the loss or a gradient non-finite is pruned and the step
  skipped, before anything reaches the host's weights;
* ``OptimizerBinding``: seed parameters join and leave AdamW as seeds come and go; the
  ``OneCycleLR`` scheduler, created after the binding, schedules them like the host.

The data is synthetic (noisy class templates), so it needs no download. The settings (tiny
model, two-epoch ramps, permissive gates) let a seed live a whole lifecycle in seconds; use
the library's defaults for real training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from esper_core import (
    ControllerConfig,
    Governor,
    HeuristicController,
    OptimizerBinding,
    QualityGates,
    evaluate_injected,
    inject_slots,
    load_checkpoint,
)
from esper_core.optim import host_parameters

CLASSES, SIDE, TRAIN, VAL, BATCH = 10, 8, 512, 256, 32


class SmallNet(nn.Module):
    """Your model: nothing in it knows about Esper."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(16, CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def make_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Noisy copies of ten fixed 8x8 templates (the same tensors in every run)."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(CLASSES, 1, SIDE, SIDE, generator=g)
    y = torch.randint(0, CLASSES, (TRAIN + VAL,), generator=g)
    x = templates[y] + 1.5 * torch.randn(TRAIN + VAL, 1, SIDE, SIDE, generator=g)
    return x[:TRAIN], y[:TRAIN], x[TRAIN:], y[TRAIN:]


def build_model() -> tuple[SmallNet, nn.ModuleDict]:
    """The model with its slots; a resumed run builds it the same way, then loads the checkpoint."""
    torch.manual_seed(0)
    model = SmallNet()
    slots = inject_slots(
        model,
        {"stem": "cnn", "block": "cnn"},  # submodule path -> topology; widths found by a probe
        example_input=torch.zeros(1, 1, SIDE, SIDE),
        gates=QualityGates("permissive"),
    )
    return model, slots


def digest(model: nn.Module) -> str:
    """A hash of every tensor of the model's state (parameters, buffers, lifecycles)."""
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        data = value.numpy().tobytes() if isinstance(value, torch.Tensor) else str(value).encode()
        h.update(name.encode() + data)
    return h.hexdigest()


def score(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output.argmax(dim=1) == target).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--save-at", type=int, default=None, help="write a checkpoint after this epoch")
    parser.add_argument("--resume", type=Path, default=None, help="continue from this checkpoint")
    parser.add_argument("--out", type=Path, default=Path("runs/one"), help="checkpoint and summary folder")
    args = parser.parse_args()

    x, y, vx, vy = make_data()
    model, slots = build_model()
    checkpoint = None
    if args.resume is not None:
        checkpoint = torch.load(args.resume, weights_only=True)
        load_checkpoint(model, checkpoint["model"])  # all or nothing; seeds rebuilt, then loaded

    optimizer = torch.optim.AdamW(host_parameters(model, slots), lr=3e-3)
    binding = OptimizerBinding(optimizer, slots, lr=1e-3)  # seed groups: their own base lr
    steps = args.epochs * (TRAIN // BATCH)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[3e-3] + [1e-3] * len(slots), total_steps=steps
    )
    config = ControllerConfig(
        param_budget=800,
        warmup_epochs=2,
        plateau_window=1,
        plateau_min_delta=100.0,  # "plateaued" at every chance: the example grows at once
        ramp_epochs=2,
        include=("conv_small", "depthwise", "attention"),
    )
    controller = HeuristicController(slots, config)
    governor = Governor(model, slots)
    first = 1
    if checkpoint is not None:
        binding.load_optimizer_state(checkpoint["optimizer"])  # validated, matched by slot
        scheduler.load_state_dict(checkpoint["scheduler"])
        controller.load_state_dict(checkpoint["controller"])
        torch.set_rng_state(checkpoint["rng"])  # dropout continues where it was
        first = checkpoint["epoch"] + 1

    history = []
    for epoch in range(first, args.epochs + 1):
        model.train()
        losses = []
        order = torch.randperm(TRAIN, generator=torch.Generator().manual_seed(1000 + epoch))
        for i in range(0, TRAIN, BATCH):
            bx, by = x[order[i : i + BATCH]], y[order[i : i + BATCH]]
            replay = lambda bx=bx, by=by: F.cross_entropy(model(bx), by)  # noqa: E731 - reruns this forward
            optimizer.zero_grad()
            loss = replay()
            if governor.check_loss(loss, replay).ok:
                loss.backward()
                if governor.check_gradients(replay).ok:
                    optimizer.step()
                    losses.append(loss.item())
            scheduler.step()  # the schedule counts batches, applied or skipped

        evaluation = evaluate_injected(model, [(vx, vy)], score)  # score and each seed's contribution
        decisions = controller.step(evaluation, epoch)
        stages = {s: slot.stage.name for s, slot in slots.items() if slot.seed is not None}
        history.append(
            {
                "epoch": epoch,
                "loss": sum(losses) / max(len(losses), 1),
                "accuracy": evaluation.score,
                "contributions": dict(evaluation.contributions),
                "decisions": [f"{d.slot_id} {d.action} {d.detail}" for d in decisions],
                "stages": stages,
            }
        )
        print(
            f"epoch {epoch}: loss {history[-1]['loss']:.4f}, val {evaluation.score:.2f}%, seeds {stages}"
            + "".join(f"\n  {d}" for d in history[-1]["decisions"]),
            flush=True,
        )
        if epoch == args.save_at:
            args.out.mkdir(parents=True, exist_ok=True)
            state = {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "controller": controller.state_dict(),
                "rng": torch.get_rng_state(),
            }
            torch.save(state, args.out / "checkpoint.tmp")
            os.replace(args.out / "checkpoint.tmp", args.out / "checkpoint.pt")  # never half a file

    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "history": history,
        "digest": digest(model),
        "decisions": [[d.epoch, d.slot_id, d.action, d.detail] for d in controller.decisions],
        "governor_interventions": len(governor.interventions),
        "lr": [group["lr"] for group in optimizer.param_groups],
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
