"""The demo's figure, drawn from ``report.json`` alone (so it can be redrawn from a saved report).

Panels: (a) alpha of every slot over the epochs for the first seed's grown model, with
markers where seeds germinated, fossilized and were pruned; (b) the headline metric per
epoch, mean over seeds with a band of one standard deviation, grown drawn on top and its
lifecycle events (all seeds) marked along the bottom; (c) for the language model, accuracy per
epoch as well; (d) the headline metric against cumulative training FLOPs; (e) each seed's
final headline metric per model, lines joining one seed's models. Epochs are numbered as in
the printed events and ``report.json``: 0 is the initial evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["EVENT_MARKERS", "METRIC_LABELS", "draw_figure", "plot_report"]

#: Marker per lifecycle event kind drawn on the figure.
EVENT_MARKERS = {"SeedGerminated": "^", "SeedFossilized": "*", "SeedPruned": "X"}
_EVENT_NAMES = {"SeedGerminated": "germinated", "SeedFossilized": "fossilized", "SeedPruned": "pruned"}

METRIC_LABELS = {
    "accuracy": "validation accuracy (%)",
    "bits_per_char": "validation bits/char (lower is better)",
}


def _label(model: str) -> str:
    if model == "host_alone":
        return "host alone"
    kind, _, strategy = model.partition(":")
    return f"{kind} ({strategy})"


def _colour(model: str, strategies: Sequence[str]) -> str:
    if model == "host_alone":
        return "tab:gray"
    kind, _, strategy = model.partition(":")
    index = list(strategies).index(strategy) if strategy in strategies else 0
    palette = ("tab:red", "tab:purple") if kind == "grown" else ("tab:blue", "tab:cyan")
    return palette[index % len(palette)]


def _flop_unit(largest: float) -> tuple[float, str]:
    for scale, unit in ((1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1e3, "kFLOP")):
        if largest >= scale:
            return scale, unit
    return 1.0, "FLOP"


def _draw_order(models: Sequence[str]) -> list[str]:
    """Static first, grown over it, and the host alone as a thin dashed line over both.

    Grown equals the host alone until its first seed blends in, so a solid host line
    would vanish under it (or hide it); dashed and thin on top, both stay visible.
    """
    rank = {"static": 0, "grown": 1, "host_alone": 2}
    return sorted(models, key=lambda m: rank[m.partition(":")[0]])


def _style(model: str, colour: str) -> dict[str, Any]:
    if model == "host_alone":
        return {"color": "black", "lw": 1.2, "ls": "--"}
    return {"color": colour, "lw": 2.6 if model.startswith("grown:") else 1.6}


def _mean_std(rows: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    n = len(rows)
    means = [sum(col) / n for col in zip(*rows, strict=True)]
    if n < 2:
        return means, [0.0] * len(means)
    stds = [
        (sum((v - m) ** 2 for v in col) / (n - 1)) ** 0.5
        for col, m in zip(zip(*rows, strict=True), means, strict=True)
    ]
    return means, stds


def _focus(ax: Any, series: Sequence[Sequence[float]], skip: int) -> None:
    """A y-range that shows the differences: the span of every series after ``skip`` points."""
    tail = [v for s in series for v in s[skip:]]
    if not tail:
        return
    lo, hi = min(tail), max(tail)
    pad = max((hi - lo) * 0.12, 1e-6)
    ax.set_ylim(lo - pad, hi + pad)


def draw_figure(report: Mapping[str, Any]) -> Any:
    """Build the matplotlib ``Figure`` for ``report`` (Agg backend; nothing is shown)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    runs = report["runs"]
    metrics = report["metrics"]
    strategies = report["settings"]["strategies"]
    models = _draw_order(list(runs[0]["models"]))
    grown_models = [m for m in models if m.startswith("grown:")]
    panels = 4 + (len(metrics) > 1)
    cols = 3 if panels > 4 else 2
    fig, axes = plt.subplots(2, cols, figsize=(6.0 * cols, 9.0))
    axes = list(axes.flat)
    for ax in axes[panels:]:
        ax.set_visible(False)
    seeds = [run["seed"] for run in runs]
    fig.suptitle(
        f"esper demo: {report['task']['name']} ({report['topology']}), {len(seeds)} seed(s) "
        f"{seeds[0]}..{seeds[-1]}, {report['settings']['epochs']} epochs, gates {report['settings']['gates']['policy']}",
        fontsize="large",
    )
    _alpha_panel(axes[0], runs[0], grown_models[0])
    skip = max(1, report["settings"]["epochs"] // 2)  # the y-range fits the second half
    letters = iter("bcdef")
    index = 1
    for metric in metrics:
        _epoch_panel(axes[index], next(letters), runs, models, grown_models, metric, strategies, skip)
        index += 1
    _compute_panel(axes[index], next(letters), runs, models, metrics[0], strategies, skip, report)
    _paired_panel(axes[index + 1], next(letters), runs, models, metrics[0], strategies)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def _alpha_panel(ax: Any, run: Mapping[str, Any], model: str) -> None:
    record = run["models"][model]
    planted = {e["slot_id"] for e in record["events"] if e["event"] == "SeedGerminated"}
    for slot_id, values in record["alpha"].items():
        label = slot_id if slot_id in planted else f"{slot_id} (no seed)"
        style = "-" if slot_id in planted else ":"
        (line,) = ax.plot(range(len(values)), values, style, label=label, gid=f"alpha:{slot_id}")
        for event in record["events"]:
            if event["slot_id"] == slot_id and event["event"] in EVENT_MARKERS:
                epoch = event["epoch"]
                ax.plot(
                    [epoch],
                    [values[epoch]],
                    EVENT_MARKERS[event["event"]],
                    color=line.get_color(),
                    markersize=10,
                    markeredgecolor="black",
                    gid=f"event:{event['event']}:{slot_id}",
                )
    for kind, marker in EVENT_MARKERS.items():
        ax.plot([], [], marker, color="white", markeredgecolor="black", label=_EVENT_NAMES[kind])
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("alpha (blend amplitude)")
    ax.set_title(f"(a) lifecycle of {_label(model)}, seed {run['seed']}")
    ax.legend(loc="upper left", fontsize="small", ncol=2)


def _epoch_panel(
    ax: Any,
    letter: str,
    runs: Sequence[Mapping[str, Any]],
    models: Sequence[str],
    grown_models: Sequence[str],
    metric: str,
    strategies: Sequence[str],
    skip: int,
) -> None:
    shown = []
    for z, model in enumerate(models):
        rows = [[h[metric] for h in run["models"][model]["history"]] for run in runs]
        mean, std = _mean_std(rows)
        epochs = list(range(len(mean)))
        grown = model in grown_models
        colour = _colour(model, strategies)
        ax.fill_between(
            epochs, [m - s for m, s in zip(mean, std, strict=True)], [m + s for m, s in zip(mean, std, strict=True)],
            color=colour, alpha=0.08 if model == "host_alone" else 0.12, zorder=z,
        )  # fmt: skip
        ax.plot(
            epochs, mean, **_style(model, colour), label=_label(model), zorder=10 + z, gid=f"curve:{model}"
        )
        shown.append(mean)
        if grown:
            # A rug along the bottom (x: epoch, y: axes fraction), so markers stay visible
            # whatever the y-range; one row per strategy.
            row = 0.04 + 0.05 * list(grown_models).index(model)
            for run in runs:
                for event in run["models"][model]["events"]:
                    if event["event"] in EVENT_MARKERS:
                        ax.plot(
                            [event["epoch"]], [row], EVENT_MARKERS[event["event"]], transform=ax.get_xaxis_transform(),
                            color=colour, markeredgecolor="black", markersize=8, alpha=0.7, zorder=30, clip_on=False,
                            gid=f"event:{event['event']}:{model}",
                        )  # fmt: skip
    _focus(ax, shown, skip)
    ax.set_xlabel("epoch")
    ax.set_ylabel(METRIC_LABELS[metric])
    n = len(runs)
    ax.set_title(f"({letter}) {metric} per epoch, mean" + (f" ± 1 std over {n} seeds" if n > 1 else ""))
    ax.legend(loc="best", fontsize="small")


def _compute_panel(
    ax: Any,
    letter: str,
    runs: Sequence[Mapping[str, Any]],
    models: Sequence[str],
    metric: str,
    strategies: Sequence[str],
    skip: int,
    report: Mapping[str, Any],
) -> None:
    shown = []
    largest = max(run["models"][m]["train_flops"] for run in runs for m in models)
    scale, unit = _flop_unit(largest)
    for z, model in enumerate(models):
        flops, _ = _mean_std(
            [[h["train_flops"] / scale for h in run["models"][model]["history"]] for run in runs]
        )
        values, _ = _mean_std([[h[metric] for h in run["models"][model]["history"]] for run in runs])
        ax.plot(flops, values, **_style(model, _colour(model, strategies)), label=_label(model), zorder=10 + z,
                gid=f"compute:{model}")  # fmt: skip
        shown.append(values)
    equal = report["summary"]["equal_compute_flops"]["mean"] / scale
    ax.axvline(equal, color="black", ls=":", lw=1, label="equal compute (host alone's total)")
    _focus(ax, shown, skip)
    ax.set_xlabel(f"cumulative training {unit} (forward + backward), mean over seeds")
    ax.set_ylabel(METRIC_LABELS[metric])
    ax.set_title(f"({letter}) {metric} against training compute")
    ax.legend(loc="best", fontsize="small")


def _paired_panel(
    ax: Any,
    letter: str,
    runs: Sequence[Mapping[str, Any]],
    models: Sequence[str],
    metric: str,
    strategies: Sequence[str],
) -> None:
    order = [m for m in ("host_alone",) if m in models]
    for strategy in strategies:
        order += [m for m in (f"grown:{strategy}", f"static:{strategy}") if m in models]
    xs = list(range(len(order)))
    for run in runs:
        ax.plot(xs, [run["models"][m]["final"][metric] for m in order], color="0.6", lw=0.8, marker="o",
                markersize=3)  # fmt: skip
    for x, model in zip(xs, order, strict=True):
        values = [run["models"][model]["final"][metric] for run in runs]
        ax.plot([x], [sum(values) / len(values)], "D", color=_colour(model, strategies), markersize=9,
                markeredgecolor="black", zorder=5)  # fmt: skip
    ax.set_xticks(xs, [_label(m).replace(" (", "\n(") for m in order], fontsize="small")
    ax.set_ylabel(METRIC_LABELS[metric])
    ax.set_title(f"({letter}) final {metric} per seed (grey) and mean (diamond)")


def plot_report(path: Path, report: Mapping[str, Any]) -> None:
    """Write the figure for ``report`` to ``path`` as PNG."""
    from matplotlib import pyplot as plt

    fig = draw_figure(report)
    try:
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
