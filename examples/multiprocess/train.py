"""Grow a network on several processes with DistributedDataParallel, and resume from a checkpoint.

Run it on two CPU processes (gloo)::

    torchrun --nproc-per-node 2 examples/multiprocess/train.py --out runs/ddp

on GPUs (NCCL, one process per GPU)::

    torchrun --nproc-per-node 2 examples/multiprocess/train.py --device cuda --out runs/ddp

and resume a run from the checkpoint it wrote after epoch 4::

    torchrun --nproc-per-node 2 examples/multiprocess/train.py --save-at 4 --out runs/a
    torchrun --nproc-per-node 2 examples/multiprocess/train.py --resume runs/a/checkpoint.pt --out runs/b

The resumed run ends bit-identical to the uninterrupted one (same losses, decisions and
weights), as the checkpoint guide promises for CPU runs with fixed seeds (on GPUs, where
kernels need not be deterministic, it ends close but not bit-identical). The pieces:

* ``DistributedLifecycle``: rank 0 decides every germination, advance, prune and tick; each
  rank applies the same command; each epoch ends with a drift check.
* ``HeuristicController(..., lifecycle=lifecycle)``: the controller's decisions go through
  the lifecycle; every rank's controller sees the same numbers (``reduce_evaluation``
  averages the ranks' validation results), so every rank makes the same calls.
* ``OptimizerBinding``: seed (and blend gate) parameters join and leave Adam as seeds come
  and go; the optimizer is never rebuilt, so the host's Adam moments are never lost.
* ``DDPRewrapper``: DDP is rebuilt when the parameter set (or which parameters train)
  changes; ``refresh()`` is called on every rank right after the lifecycle calls.
* GATE blending: the blend gate exists from germination; parameters a stage does not use are
  frozen for that stage, so DDP never waits for a gradient that cannot come.
* A checkpoint holds the model (lifecycle included), the optimizer, the LR scheduler, the
  controller and the lifecycle's command stream; rank 0 writes it, every rank reads it.

The data is synthetic (noisy class templates), so the example needs no download. The
numbers (tiny host, two-epoch ramps, permissive gates) are chosen so that a seed lives a
whole lifecycle in a few seconds; use the library's defaults for real training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F

from esper_core import (
    BlendAlgorithm,
    CNNHost,
    ControllerConfig,
    HeuristicController,
    MorphogeneticModel,
    OptimizerBinding,
    QualityGates,
    load_checkpoint,
)
from esper_core.distributed import DDPRewrapper, DistributedLifecycle, reduce_evaluation

CLASSES, SIDE = 10, 8
TRAIN, VAL, BATCH = 512, 256, 32


def make_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Noisy copies of ten fixed 8x8 templates: the same tensors on every rank and every run."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(CLASSES, 1, SIDE, SIDE, generator=g)
    y = torch.randint(0, CLASSES, (TRAIN + VAL,), generator=g)
    x = templates[y] + 1.5 * torch.randn(TRAIN + VAL, 1, SIDE, SIDE, generator=g)
    return x[:TRAIN], y[:TRAIN], x[TRAIN:], y[TRAIN:]


def shard(x: torch.Tensor, y: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of the samples (what ``DistributedSampler`` does, without shuffling)."""
    return x[rank::world], y[rank::world]


def batches(x: torch.Tensor, y: torch.Tensor, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A shuffle that depends on the epoch only, so a resumed run sees the same batches."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1000 + epoch))
    return [(x[order[i : i + BATCH]], y[order[i : i + BATCH]]) for i in range(0, len(x), BATCH)]


def build_model() -> MorphogeneticModel:
    torch.manual_seed(0)  # the same host weights on every rank (DDP also broadcasts rank 0's)
    host = CNNHost(CLASSES, in_channels=1, n_blocks=2, base_channels=8)
    return MorphogeneticModel(host, gates=QualityGates("permissive"))


def controller_config(model: MorphogeneticModel) -> ControllerConfig:
    return ControllerConfig(
        param_budget=model.host_param_count // 2,
        warmup_epochs=2,
        plateau_window=1,
        plateau_min_delta=100.0,  # "plateaued" at every chance: the example grows at once
        ramp_epochs=2,
        include=("depthwise", "bottleneck"),
        algorithm=BlendAlgorithm.GATE,
    )


def digest(model: MorphogeneticModel) -> str:
    """A hash of every parameter and every slot's lifecycle: equal on all ranks when replicas agree.

    Buffers are left out: BatchNorm's running statistics are each rank's own until DDP's
    next forward broadcasts rank 0's (``broadcast_buffers=True``), as in any DDP job.
    """
    h = hashlib.sha256()
    for name, param in model.named_parameters():
        h.update(name.encode() + param.detach().cpu().numpy().tobytes())
    for slot_id, slot in model.slots.items():
        h.update(slot_id.encode() + slot.lifecycle_text().encode())
    return h.hexdigest()


def score(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output.argmax(dim=1) == target).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--save-at", type=int, default=None, help="write a checkpoint after this epoch")
    parser.add_argument("--resume", type=Path, default=None, help="continue from this checkpoint")
    parser.add_argument("--out", type=Path, default=Path("runs/ddp"), help="checkpoint and summary folder")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu (gloo) or cuda (NCCL)")
    args = parser.parse_args()

    if args.device == "cuda":  # one GPU per process; torchrun sets LOCAL_RANK
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")  # torchrun sets the rank, world size and address
    rank, world = dist.get_rank(), dist.get_world_size()
    lead = rank == 0
    x, y, vx, vy = (t.to(device) for t in make_data())
    x, y = shard(x, y, rank, world)
    val = [shard(vx, vy, rank, world)]

    model = build_model().to(device)  # slots follow the host; seeds are built on its device
    checkpoint = None
    if args.resume is not None:
        checkpoint = torch.load(args.resume, weights_only=True, map_location=device)  # every rank reads it
        load_checkpoint(model, checkpoint["model"])  # seeds and blend gates rebuilt, then loaded
    lifecycle = DistributedLifecycle(model)  # collective; rank 0 decides
    # DistributedDataParallel, rebuilt when the parameters change.
    ddp = DDPRewrapper(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.host.parameters(), lr=3e-3)
    binding = OptimizerBinding(optimizer, model.slots)  # before the scheduler
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    controller = HeuristicController(model.slots, controller_config(model), lifecycle=lifecycle)
    first = 1
    if checkpoint is not None:
        binding.load_optimizer_state(checkpoint["optimizer"])  # matched to the slots by tag
        scheduler.load_state_dict(checkpoint["scheduler"])
        controller.load_state_dict(checkpoint["controller"])
        lifecycle.load_state_dict(checkpoint["lifecycle"])
        first = checkpoint["epoch"] + 1

    history = []
    for epoch in range(first, args.epochs + 1):
        model.train()
        losses = []
        for bx, by in batches(x, y, epoch):
            loss = F.cross_entropy(ddp(bx), by)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()

        # Each rank validates its shard; the controllers decide from the mean over ranks.
        evaluation = reduce_evaluation(model.evaluate(val, score))
        decisions = controller.step(evaluation, epoch)  # through the lifecycle, then a tick
        rebuilt = ddp.refresh()  # on every rank, right after the lifecycle calls
        # No new optimizer: the binding already holds the new seed's parameters, and every
        # host parameter keeps its Adam moments across DDP rebuilds.

        stages = {s: slot.stage.name for s, slot in model.slots.items() if slot.seed is not None}
        history.append(
            {
                "epoch": epoch,
                "loss": sum(losses) / len(losses),
                "accuracy": evaluation.score,
                "decisions": [f"{d.slot_id} {d.action} {d.detail}" for d in decisions],
                "stages": stages,
                "rebuilt": rebuilt,
            }
        )
        if lead:
            print(
                f"epoch {epoch}: loss {history[-1]['loss']:.4f}, val {evaluation.score:.2f}%, seeds {stages}"
                + "".join(f"\n  {d}" for d in history[-1]["decisions"]),
                flush=True,
            )

        if epoch == args.save_at:
            if lead:
                args.out.mkdir(parents=True, exist_ok=True)
                state = {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "controller": controller.state_dict(),
                    "lifecycle": lifecycle.state_dict(),
                }
                torch.save(state, args.out / "checkpoint.tmp")
                os.replace(args.out / "checkpoint.tmp", args.out / "checkpoint.pt")  # never half a file
            dist.barrier()  # nobody reads the checkpoint before it is complete

    # Every replica must be identical: compare the digests of all ranks.
    digests: list[str | None] = [None] * world
    dist.all_gather_object(digests, digest(model))
    host_step = optimizer.state[next(model.host.parameters())]["step"]
    if lead:
        args.out.mkdir(parents=True, exist_ok=True)
        summary = {
            "history": history,
            "digests": digests,
            "host_adam_steps": int(host_step),
            "ddp_rebuilds": ddp.rebuilds,
            "decisions": [[d.epoch, d.slot_id, d.action, d.detail] for d in controller.decisions],
        }
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"replicas identical: {len(set(digests)) == 1}; wrote {args.out / 'summary.json'}")
    lifecycle.close()
    ddp.close()  # before the process group goes (see DDPRewrapper.close)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
