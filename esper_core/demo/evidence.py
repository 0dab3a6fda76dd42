"""Text generated from committed demo reports: the README caption and the tables of
``docs/evidence.md``. ``scripts/make_evidence.py`` runs :data:`COMMANDS` and writes these
into the documents between ``<!-- BEGIN generated: NAME -->`` / ``<!-- END generated: NAME -->``
markers; ``tests/docs/test_evidence.py`` checks that the documents still say exactly what
the committed reports say.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "COMMANDS",
    "REPORTS",
    "block",
    "blocks_in",
    "capacity_table",
    "caption",
    "evidence_section",
    "replace_block",
    "verdict",
]

#: The documented commands behind ``docs/evidence.md`` and the README figure.
COMMANDS: Mapping[str, tuple[str, ...]] = {
    "cnn": ("esper", "demo", "--seeds", "5", "--strategy", "gain_per_param,cheapest", "--out", "docs/evidence/cnn"),
    "transformer": (
        "esper", "demo", "--topology", "transformer", "--seeds", "5", "--strategy", "gain_per_param,cheapest",
        "--out", "docs/evidence/transformer",
    ),
}  # fmt: skip

#: Where each committed report lives, relative to the repository root.
REPORTS: Mapping[str, str] = {topology: f"docs/evidence/{topology}/report.json" for topology in COMMANDS}

_UNITS = {"accuracy": "%", "bits_per_char": " bits/char"}
_DIGITS = {"accuracy": 2, "bits_per_char": 3}


def _name(model: str) -> str:
    if model == "host_alone":
        return "host alone"
    kind, _, strategy = model.partition(":")
    return f"{kind} (`{strategy}`)"


def _ms(entry: Mapping[str, Any], digits: int) -> str:
    if entry["std"] is None:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def _ci(entry: Mapping[str, Any], digits: int) -> str:
    text = f"{entry['mean']:+.{digits}f}"
    if entry["ci95"] is not None:
        lo, hi = entry["ci95"]
        text += f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return text


def verdict(comparison: Mapping[str, Any], basis: str) -> str:
    """ "better", "worse" or "no clear difference": the 95% interval of ``a - b`` against zero."""
    entry = comparison[basis]
    if entry["ci95"] is None:
        return "one seed: no interval"
    lo, hi = entry["ci95"]
    if lo <= 0.0 <= hi:
        return "no clear difference"
    a_larger = lo > 0.0
    return "better" if a_larger == comparison["higher_is_better"] else "worse"


def _comparison(report: Mapping[str, Any], a: str, b: str, metric: str) -> Mapping[str, Any]:
    for c in report["comparisons"]:
        if (c["a"], c["b"], c["metric"]) == (a, b, metric):
            return c
    raise KeyError(f"report has no comparison {a} - {b} on {metric}")


def caption(report: Mapping[str, Any]) -> str:
    """The README caption for the figure of ``report`` (a CNN evidence report)."""
    metric = report["metrics"][0]
    strategy = report["settings"]["strategies"][0]
    grown, static = f"grown:{strategy}", f"static:{strategy}"
    models = report["summary"]["models"]
    digits = _DIGITS[metric]
    unit = _UNITS[metric]
    seeds = report["settings"]["seeds"]
    vs_host = _comparison(report, grown, "host_alone", metric)
    vs_static = _comparison(report, grown, static, metric)
    host = report["task"]["host"]
    return (
        f"*`{report['command']}`: {report['task']['name']}, a {host['params']:,}-parameter "
        f"{host['n_blocks']}-block CNN host, seed budget {report['settings']['budget_fraction']:g} x host "
        f"parameters, the library's default {report['settings']['gates']['policy']} gates, seeds "
        f"{seeds[0]}-{seeds[-1]}, {report['settings']['epochs']} epochs. Final validation {metric}, mean ± std: "
        f"grown {_ms(models[grown]['final'][metric], digits)}{unit}, host alone "
        f"{_ms(models['host_alone']['final'][metric], digits)}{unit}, static model of the grown size "
        f"{_ms(models[static]['final'][metric], digits)}{unit}. Grown minus host: "
        f"{_ci(vs_host['equal_epochs'], digits)} at equal epochs ({verdict(vs_host, 'equal_epochs')}), "
        f"{_ci(vs_host['equal_compute'], digits)} at equal training compute "
        f"({verdict(vs_host, 'equal_compute')}); grown minus static: "
        f"{_ci(vs_static['equal_epochs'], digits)} at equal epochs, {_ci(vs_static['equal_compute'], digits)} "
        f"at equal compute, with {vs_static['compute_ratio']['mean']:.2f}x the static model's training FLOPs "
        "(95% intervals in brackets). Panels: (a) alpha of every slot for seed "
        f"{seeds[0]} (▲ germinated, ★ fossilized, ✖ pruned), (b) {metric} per epoch, (c) {metric} "
        "against training FLOPs, (d) each seed's final value. Growth here is chosen by the "
        f"`{strategy}` strategy; `make demo` runs the same seeds with it alone and prints the same "
        "numbers for it and for the two baselines.*"
    )


def _seed_cell(record: Mapping[str, Any]) -> str:
    kept = [f"{s['blueprint']}@{s['slot_id']}" for s in record["seeds"] if s["final_stage"] == "FOSSILIZED"]
    pending = [
        f"{s['blueprint']}@{s['slot_id']}*"
        for s in record["seeds"]
        if s["final_stage"] not in ("FOSSILIZED", "PRUNED")
    ]
    pruned = sum(s["final_stage"] == "PRUNED" for s in record["seeds"])
    text = ", ".join(kept + pending) or "none"
    return text + (f"; {pruned} pruned" if pruned else "")


def evidence_section(report: Mapping[str, Any]) -> str:
    """The generated part of ``docs/evidence.md`` for one topology's report (Markdown)."""
    metrics = report["metrics"]
    headline = metrics[0]
    strategies = report["settings"]["strategies"]
    models = list(report["runs"][0]["models"])
    summary = report["summary"]["models"]
    settings = report["settings"]
    host_flops = summary["host_alone"]["train_flops"]["mean"]
    lines = [
        f"Command: `{report['command']}` ({report['wall_time_s'] / 60:.1f} min on this machine, "
        f"{report['torch_threads']} torch thread; torch {report['environment']['torch']}).",
        "",
        f"Task: {report['task']['description']}. Host: {report['task']['host']['class']} "
        + ", ".join(f"{k}={v}" for k, v in report["task"]["host"].items() if k not in ("class", "params"))
        + f", {report['task']['host']['params']:,} parameters. Seed budget {settings['budget_fraction']:g} x host "
        f"= {report['task']['budget_params']:,} parameters. Gates: {settings['gates']['policy']}"
        + (
            f" with {settings['gates']['overrides']}"
            if settings["gates"]["overrides"]
            else " (library defaults)"
        )
        + f". {len(settings['seeds'])} seeds ({settings['seeds'][0]}-{settings['seeds'][-1]}), "
        f"{settings['epochs']} epochs, AdamW lr {settings['lr']:g} (seeds {settings['seed_lr']:g}), "
        f"batch {settings['batch_size']}, blueprints: "
        + ("all" if settings["include"] is None else ", ".join(settings["include"]))
        + " except "
        + ", ".join(settings["exclude"])
        + ".",
        "",
        f"**Per model**, mean ± std over seeds. *Equal compute* reads every model's {headline} off its "
        "curve at the host alone's total training FLOPs.",
        "",
        "| model | parameters | training FLOPs (x host) | "
        + " | ".join(f"{m} at equal epochs" for m in metrics)
        + f" | {headline} at equal compute |",
        "|---|---:|---:|" + "---:|" * (len(metrics) + 1),
    ]
    for model in models:
        entry = summary[model]
        lines.append(
            f"| {_name(model)} | {entry['params']['mean']:,.0f} | "
            f"{entry['train_flops']['mean'] / host_flops:.2f} | "
            + " | ".join(_ms(entry["final"][m], _DIGITS[m]) for m in metrics)
            + f" | {_ms(entry['at_equal_compute'][headline], _DIGITS[headline])} |"
        )
    lines += [
        "",
        "**Paired differences** a - b over seeds: mean [95% t-interval]; *equal compute* compares each "
        "seed's pair at the smaller of their two training budgets.",
        "",
        "| a - b | metric | at equal epochs | verdict | at equal compute | verdict | FLOPs a / b |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for c in report["comparisons"]:
        digits = _DIGITS[c["metric"]]
        direction = "" if c["higher_is_better"] else " (lower is better)"
        lines.append(
            f"| {_name(c['a'])} - {_name(c['b'])} | {c['metric']}{direction} | {_ci(c['equal_epochs'], digits)} | "
            f"{verdict(c, 'equal_epochs')} | {_ci(c['equal_compute'], digits)} | {verdict(c, 'equal_compute')} | "
            f"{c['compute_ratio']['mean']:.2f} |"
        )
    lines += [
        "",
        f"**Per seed**: final {headline}, and each grown model's seeds (blueprint@slot) that were kept "
        "(fossilized) or, marked *, are still on probation at the end (not kept).",
        "",
        "| seed | "
        + " | ".join(_name(m) for m in models)
        + " | "
        + " | ".join(f"kept, *on probation (`{s}`)" for s in strategies)
        + " |",
        "|---:|" + "---:|" * len(models) + "---|" * len(strategies),
    ]
    for run in report["runs"]:
        cells = [f"{run['models'][m]['final'][headline]:.{_DIGITS[headline]}f}" for m in models]
        kept = [_seed_cell(run["models"][f"grown:{s}"]) for s in strategies]
        lines.append(f"| {run['seed']} | " + " | ".join(cells) + " | " + " | ".join(kept) + " |")
    return "\n".join(lines)


def capacity_table(data: Mapping[str, Any]) -> str:
    """The table of ``scripts/host_capacity.py``'s output (static models, no lifecycle)."""
    metric = data["rows"][0]["metric"]
    digits = _DIGITS[metric]
    seeds = data["seeds"]
    lines = [
        f"`{data['command']}`: static models trained from scratch for {data['epochs']} epochs with the "
        f"demo's data, optimizer and batches, seeds {seeds[0]}-{seeds[-1]}; final {metric}, mean ± std.",
        "",
        f"| model | parameters | {metric} |",
        "|---|---:|---:|",
    ]
    for row in data["rows"]:
        lines.append(f"| {row['name']} | {row['params']:,} | {_ms(row['final'], digits)} |")
    return "\n".join(lines)


def block(name: str, text: str) -> str:
    """``text`` between the generated-block markers of ``name``."""
    return f"<!-- BEGIN generated: {name} -->\n{text}\n<!-- END generated: {name} -->"


def replace_block(document: str, name: str, text: str) -> str:
    """``document`` with the block ``name`` replaced by ``text``; ``KeyError`` if it has none."""
    pattern = re.compile(
        rf"<!-- BEGIN generated: {re.escape(name)} -->\n(?:.*?\n)?<!-- END generated: {re.escape(name)} -->",
        re.DOTALL,
    )
    if not pattern.search(document):
        raise KeyError(f"no generated block {name!r} in the document")
    return pattern.sub(lambda _m: block(name, text), document, count=1)


def blocks_in(document: str) -> Sequence[str]:
    """Names of the generated blocks in ``document``."""
    return re.findall(r"<!-- BEGIN generated: ([\w-]+) -->", document)
