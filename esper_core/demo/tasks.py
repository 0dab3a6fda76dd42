"""The two demo tasks: digit classification (CNN) and character-level language modelling (transformer).

Both hosts are chosen to be short of capacity *in a way seeds can supply*: seeds are
shape-preserving residual modules, so they add depth and processing at a fixed width,
never width. A host that is short of width gains nothing from them even when they are
trained from the start (``docs/evidence.md`` has the measurements), so the hosts here are
shallow rather than narrow:

* CNN: two conv blocks of 4 and 8 channels (438 parameters). A static model with one
  extra 3x3 conv block in it reaches about 3 points more on digits than the host alone.
* Transformer: a single pre-norm block at width 64 (about 60k parameters). A second
  attention layer lets a model look up earlier context through what the first layer
  computed (what induction heads do), which a one-layer model cannot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import torch
from torch import Tensor
from torch.nn import functional as F

from esper_core.demo.data import batches, load_digits, load_pydoc_text
from esper_core.demo.settings import SIZES, SettingsError
from esper_core.hosts import CNNHost, SegmentedHost, TransformerHost

__all__ = ["Task", "make_task"]


@attrs.frozen
class Task:
    """Everything a demo run needs to know about one problem.

    ``train_batches(epoch, batch_size)`` yields the epoch's mini-batches (the same order for
    every model of a seed); ``example`` is one input sample (batch of 1) for FLOP counting;
    ``metrics`` lists the reported metrics, the first being the headline one.
    """

    name: str
    topology: str
    description: str
    host: dict[str, Any]
    make_host: Callable[[], SegmentedHost]
    train_batches: Callable[[int, int], Iterable[tuple[Tensor, Tensor]]]
    val_batches: list[tuple[Tensor, Tensor]]
    samples_per_epoch: int
    example: Tensor
    metrics: tuple[str, ...] = ("accuracy",)

    @property
    def language_model(self) -> bool:
        return "bits_per_char" in self.metrics

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def score(self, output: Tensor, target: Tensor) -> Tensor:
        """1.0 per correct prediction (a next character for the language model)."""
        return (output.argmax(dim=-1) == target).float()

    @torch.no_grad()
    def evaluate(self, forward: Callable[[Tensor], Tensor]) -> dict[str, float]:
        """Validation accuracy in percent and, for the language model, bits per character.

        Bits per character is the mean cross-entropy in nats divided by ln 2.
        """
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


def _digits(seed: int, size: str) -> Task:
    tiny = size == "tiny"
    data = load_digits(seed)
    train_x, train_y = (data.train_x[:128], data.train_y[:128]) if tiny else (data.train_x, data.train_y)
    val_x, val_y = (data.val_x[:64], data.val_y[:64]) if tiny else (data.val_x, data.val_y)
    host = {"class": "CNNHost", "num_classes": 10, "in_channels": 1, "n_blocks": 2, "base_channels": 4}
    if tiny:
        host["base_channels"] = 2

    def make_host() -> SegmentedHost:
        return CNNHost(10, in_channels=1, n_blocks=host["n_blocks"], base_channels=host["base_channels"])

    def train_batches(epoch: int, batch_size: int) -> Iterable[tuple[Tensor, Tensor]]:
        return batches(train_x, train_y, batch_size, torch.Generator().manual_seed(seed * 1000 + epoch))

    return Task(
        name="digits",
        topology="cnn",
        description=f"scikit-learn digits: {len(train_y)} train / {len(val_y)} validation 8x8 images",
        host=host,
        make_host=make_host,
        train_batches=train_batches,
        val_batches=list(batches(val_x, val_y, 512)),
        samples_per_epoch=len(train_y),
        example=train_x[:1],
    )


def _pydoc(seed: int, size: str) -> Task:
    tiny = size == "tiny"
    corpus = load_pydoc_text(20_000 if tiny else 200_000)
    length = 16 if tiny else 64
    windows = 8 if tiny else 720  # training windows per epoch
    vx, vy = corpus.val_windows(length, 8 if tiny else 96)
    n_embd = 16 if tiny else 64
    host = {
        "class": "TransformerHost",
        "vocab_size": len(corpus.alphabet),
        "n_embd": n_embd,
        "n_head": 4,
        "n_layer": 1,
        "block_size": length,
    }

    def make_host() -> SegmentedHost:
        return TransformerHost(
            len(corpus.alphabet), n_embd=n_embd, n_head=4, n_layer=1, block_size=length, num_segments=1
        )

    def train_batches(epoch: int, batch_size: int) -> Iterable[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        x, y = corpus.windows("train", length, windows, g)
        return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, windows, batch_size)]

    return Task(
        name="pydoc",
        topology="transformer",
        description=(
            f"pydoc topics text: {len(corpus.train):,} train / {vx.numel():,} validation characters, "
            f"alphabet {len(corpus.alphabet)}; {windows} windows of {length} characters per epoch"
        ),
        host=host,
        make_host=make_host,
        train_batches=train_batches,
        val_batches=[(vx[i : i + 32], vy[i : i + 32]) for i in range(0, len(vx), 32)],
        samples_per_epoch=windows,
        example=vx[:1],
        metrics=("bits_per_char", "accuracy"),
    )


def make_task(topology: str, seed: int, size: str = "default") -> Task:
    """The demo task for ``topology`` ("cnn" or "transformer") with data order from ``seed``."""
    if size not in SIZES:
        raise SettingsError(f"size must be one of {list(SIZES)}, got {size!r}")
    if topology == "cnn":
        return _digits(seed, size)
    if topology == "transformer":
        return _pydoc(seed, size)
    raise SettingsError(f"topology must be 'cnn' or 'transformer', got {topology!r}")
