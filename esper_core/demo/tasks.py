"""The two demo tasks: digit classification (CNN) and character-level language modelling (transformer)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import attrs
import torch
from torch import Tensor
from torch.nn import functional as F

from esper_core.control import ControllerConfig
from esper_core.demo.data import batches, load_digits, load_pydoc_text
from esper_core.errors import HostError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost, SegmentedHost, TransformerHost

__all__ = ["SIZES", "Task", "make_task"]

#: ``default`` is what ``esper demo`` runs; ``tiny`` is for tests.
SIZES = ("default", "tiny")


@attrs.frozen
class Task:
    """Everything a demo run needs to know about one problem."""

    name: str
    topology: str
    description: str
    make_host: Callable[[], SegmentedHost]
    train_batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]]
    val_batches: list[tuple[Tensor, Tensor]]
    lr: float
    seed_lr: float
    gates: QualityGates
    controller: Callable[[int], ControllerConfig]  # host params -> config
    language_model: bool = False

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def score(self, output: Tensor, target: Tensor) -> Tensor:
        """1.0 per correct prediction (a next character for the language model)."""
        return (output.argmax(dim=-1) == target).float()

    @torch.no_grad()
    def metrics(self, forward: Callable[[Tensor], Tensor]) -> dict[str, float]:
        """Validation accuracy in percent and, for the language model, bits per character."""
        correct = total = 0.0
        nats = 0.0
        for x, y in self.val_batches:
            out = forward(x)
            correct += float(self.score(out, y).sum())
            total += y.numel()
            nats += float(F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum"))
        result = {"accuracy": 100.0 * correct / total}
        if self.language_model:
            result["bits_per_char"] = nats / total / math.log(2)
        return result


def _gates(size: str) -> QualityGates:
    # Strict gates with thresholds fit for a small validation set: TRAINING needs two epochs
    # and no accuracy loss, BLENDING three, and fossilizing a non-negative contribution
    # (the controller prunes negative contributors first). Tiny runs (tests) are permissive.
    if size == "tiny":
        return QualityGates("permissive")
    return QualityGates(
        "strict",
        min_training_improvement=0.0,
        min_training_epochs=2,
        min_blending_epochs=3,
        min_fossilize_contribution=0.0,
    )


def _controller(
    size: str, budget_fraction: float, include: tuple[str, ...]
) -> Callable[[int], ControllerConfig]:
    def config(host_params: int) -> ControllerConfig:
        if size == "tiny":  # germinate at the first chance so a 3-epoch test sees a whole story
            return ControllerConfig(
                param_budget=host_params, plateau_window=1, plateau_min_delta=1e9, warmup_epochs=1, tempo=1
            )
        return ControllerConfig(
            param_budget=int(host_params * budget_fraction),
            plateau_window=2,
            plateau_min_delta=0.5,
            warmup_epochs=3,
            tempo=3,
            prune_patience=3,
            include=include,
        )

    return config


def _digits(seed: int, size: str) -> Task:
    tiny = size == "tiny"
    data = load_digits(seed)
    train_x, train_y = (data.train_x[:128], data.train_y[:128]) if tiny else (data.train_x, data.train_y)
    val_x, val_y = (data.val_x[:64], data.val_y[:64]) if tiny else (data.val_x, data.val_y)
    base = 4 if tiny else 3

    def train_batches(epoch: int) -> Iterable[tuple[Tensor, Tensor]]:
        return batches(train_x, train_y, 64, torch.Generator().manual_seed(seed * 1000 + epoch))

    return Task(
        name="digits",
        topology="cnn",
        description=f"scikit-learn digits: {len(train_y)} train / {len(val_y)} validation 8x8 images",
        make_host=lambda: CNNHost(10, in_channels=1, n_blocks=3, base_channels=base),
        train_batches=train_batches,
        val_batches=list(batches(val_x, val_y, 512)),
        lr=3e-3,
        seed_lr=3e-3,
        gates=_gates(size),
        controller=_controller(size, 1.0, ("conv_small", "depthwise", "bottleneck", "conv_light")),
    )


def _pydoc(seed: int, size: str) -> Task:
    tiny = size == "tiny"
    corpus = load_pydoc_text(20_000 if tiny else 200_000)
    length = 16 if tiny else 64
    steps, batch = (2, 4) if tiny else (30, 24)
    vx, vy = corpus.val_windows(length, 8 if tiny else 96)
    n_embd = 16 if tiny else 64

    def train_batches(epoch: int) -> Iterable[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        return [corpus.windows("train", length, batch, g) for _ in range(steps)]

    return Task(
        name="pydoc",
        topology="transformer",
        description=(
            f"pydoc topics text: {len(corpus.train)} train / {vx.numel()} validation characters, "
            f"alphabet {len(corpus.alphabet)}"
        ),
        make_host=lambda: TransformerHost(
            len(corpus.alphabet), n_embd=n_embd, n_head=4, n_layer=2, block_size=length, num_segments=2
        ),
        train_batches=train_batches,
        val_batches=[(vx[i : i + 32], vy[i : i + 32]) for i in range(0, len(vx), 32)],
        lr=3e-3,
        seed_lr=3e-3,
        gates=_gates(size),
        controller=_controller(size, 0.5, ("lora", "lora_large", "mlp_small", "attention", "mlp")),
        language_model=True,
    )


def make_task(topology: str, seed: int, size: str = "default") -> Task:
    """The demo task for ``topology`` ("cnn" or "transformer")."""
    if size not in SIZES:
        raise HostError(f"size must be one of {SIZES}, got {size!r}")
    if topology == "cnn":
        return _digits(seed, size)
    if topology == "transformer":
        return _pydoc(seed, size)
    raise HostError(f"topology must be 'cnn' or 'transformer', got {topology!r}")
