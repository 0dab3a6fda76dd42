"""The demo's figure: alpha per slot over epochs, and validation accuracy of the three runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_growth"]


def plot_growth(
    path: Path,
    alphas: Mapping[str, Sequence[float]],
    accuracy: Mapping[str, Sequence[float]],
    title: str,
) -> None:
    """Write a two-panel PNG to ``path`` (matplotlib's non-interactive Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    epochs = range(1, 1 + max((len(v) for v in accuracy.values()), default=0))
    shown = False
    for slot_id, values in alphas.items():
        if any(v > 0 for v in values):
            top.plot(list(epochs)[: len(values)], values, marker=".", label=slot_id)
            shown = True
    if not shown:
        top.text(0.5, 0.5, "no seed was blended in", ha="center", va="center", transform=top.transAxes)
    top.set_ylabel("alpha")
    top.set_ylim(-0.05, 1.05)
    top.set_title(title)
    if shown:
        top.legend(loc="upper left", fontsize="small")
    for label, values in accuracy.items():
        bottom.plot(list(epochs)[: len(values)], values, label=label)
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("validation accuracy (%)")
    bottom.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
