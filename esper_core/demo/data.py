"""Data sets that ship with the demo's dependencies or with Python itself (no downloads).

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes).
* ``pydoc``: the text of the standard library's pydoc help topics
  (``pydoc_data.topics``), for a character-level language model.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import torch
from torch import Tensor

__all__ = ["CharCorpus", "Digits", "batches", "load_digits", "load_pydoc_text"]


@attrs.frozen
class Digits:
    """Standardised digit images ``(N, 1, 8, 8)`` and labels, split into train and validation."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor


def load_digits(seed: int, val_fraction: float = 0.25) -> Digits:
    """Shuffle with ``seed`` and split; pixels are standardised with train-set statistics."""
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(y) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return Digits(x[train], y[train], x[val], y[val])


def batches(
    x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mini-batches in order, or shuffled when a ``generator`` is given."""
    order = torch.arange(len(y)) if generator is None else torch.randperm(len(y), generator=generator)
    for start in range(0, len(y), batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]


@attrs.frozen
class CharCorpus:
    """A character-level corpus as token ids, with its alphabet."""

    alphabet: str
    train: Tensor
    val: Tensor

    def windows(
        self, split: str, length: int, count: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """``count`` random windows: inputs ``(count, length)`` and next-character targets."""
        data = self.train if split == "train" else self.val
        starts = torch.randint(0, len(data) - length - 1, (count,), generator=generator)
        index = starts[:, None] + torch.arange(length + 1)
        chunk = data[index]
        return chunk[:, :-1], chunk[:, 1:]

    def val_windows(self, length: int, limit: int) -> tuple[Tensor, Tensor]:
        """Consecutive non-overlapping validation windows (deterministic), at most ``limit``."""
        n = min(limit, (len(self.val) - 1) // length)
        x = self.val[: n * length].view(n, length)
        y = self.val[1 : n * length + 1].view(n, length)
        return x, y


def load_pydoc_text(max_chars: int, val_fraction: float = 0.1) -> CharCorpus:
    """The pydoc topics, sorted by topic name, truncated to ``max_chars``; the last part is validation.

    Characters outside printable ASCII (plus newline) are mapped to ``?`` to keep the
    alphabet small and stable across Python versions.
    """
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))[:max_chars]
    allowed = {chr(c) for c in range(32, 127)} | {"\n"}
    text = "".join(ch if ch in allowed else "?" for ch in text)
    alphabet = "".join(sorted(set(text)))
    lookup = {ch: i for i, ch in enumerate(alphabet)}
    ids = torch.tensor([lookup[ch] for ch in text], dtype=torch.long)
    n_val = int(len(ids) * val_fraction)
    return CharCorpus(alphabet, ids[:-n_val], ids[-n_val:])
