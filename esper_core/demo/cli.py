"""``esper demo``: grow seeds in a small host and compare with two baselines over several seeds."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

from esper_core._extras import require_extras
from esper_core.control import STRATEGIES
from esper_core.demo.settings import DEFAULTS, MAX_BUDGET, DemoSettings, OutputError, SettingsError
from esper_core.errors import MissingExtraError
from esper_core.gates import POLICIES

__all__ = ["OutputError", "build_parser", "main", "prepare_out", "run_demo"]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _threshold(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not name.strip() or number is None:
        raise argparse.ArgumentTypeError(
            f"invalid threshold {text!r}: expected NAME=NUMBER, e.g. min_fossilize_contribution=0.5"
        )
    return name.strip(), number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``esper demo`` (every option is described in ``docs/user-guide.md``)."""
    cnn, lm = DEFAULTS["cnn"], DEFAULTS["transformer"]
    parser = argparse.ArgumentParser(
        prog="esper demo",
        description=(
            "Train a deliberately shallow host, grow seeds in it with the heuristic controller, and "
            "compare with the host trained alone and with a static model of the grown model's final "
            "architecture, over several random seeds, at equal epochs and at equal training compute."
        ),
    )
    parser.add_argument(
        "--topology",
        choices=sorted(DEFAULTS),
        default="cnn",
        help="cnn: scikit-learn digits; transformer: character LM on Python's pydoc topics (default: cnn)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help=f"epochs per model (default: {cnn['epochs']} cnn, {lm['epochs']} transformer)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help=f"number of random seeds, each training every model (default: {cnn['seeds']} cnn, {lm['seeds']} transformer)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="first random seed; seeds S..S+N-1 run (default: 0)"
    )
    parser.add_argument(
        "--strategy",
        type=_csv,
        metavar="NAMES",
        help=(
            f"comma-separated controller selection strategies from {', '.join(STRATEGIES)}; each grows its own "
            f"model (and static twin) per seed (default: {STRATEGIES[0]})"
        ),
    )
    parser.add_argument(
        "--gates",
        choices=POLICIES,
        default="strict",
        help="quality-gate policy of the grown model (default: strict, the library's default)",
    )
    parser.add_argument(
        "--gate-threshold",
        type=_threshold,
        action="append",
        metavar="NAME=VALUE",
        help="override one gate threshold (repeatable), e.g. min_fossilize_contribution=0.5",
    )
    parser.add_argument(
        "--budget",
        type=float,
        metavar="FRACTION",
        help=(
            f"seed parameter budget as a fraction of the host's parameters, > 0 and at most {MAX_BUDGET:g} "
            f"(default: {cnn['budget']})"
        ),
    )
    parser.add_argument(
        "--include",
        type=_csv,
        metavar="NAMES",
        help="only these blueprints (comma-separated); by default every installed pack's blueprints take part",
    )
    parser.add_argument(
        "--exclude",
        type=_csv,
        metavar="NAMES",
        help=(
            f"never these blueprints (comma-separated; replaces the default: {','.join(cnn['exclude'])} for cnn, "
            f"{','.join(lm['exclude'])} for transformer)"
        ),
    )
    parser.add_argument(
        "--lr",
        type=float,
        metavar="LR",
        help=f"AdamW learning rate of the host and baselines (default: {cnn['lr']})",
    )
    parser.add_argument(
        "--seed-lr", type=float, metavar="LR", help="AdamW learning rate of the seeds (default: --lr)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="B",
        help=f"samples per step: images or text windows (default: {cnn['batch_size']} cnn, {lm['batch_size']} transformer)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("esper-demo"),
        metavar="DIR",
        help="output folder (default: ./esper-demo/)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="T",
        help="torch intra-op threads (default: 1; the models are tiny, so more threads mostly add overhead)",
    )
    parser.add_argument(
        "--events",
        metavar="PATH",
        help="write every lifecycle event of the grown models to PATH as JSON Lines (replaced if it exists)",
    )
    parser.add_argument(
        "--events-csv",
        metavar="PATH",
        help="the same events as one CSV table at PATH (replaced if it exists)",
    )
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="TensorBoard logs of the events in DIR, one run per seed and strategy (needs the tensorboard extra)",
    )
    parser.add_argument("--size", choices=("default", "tiny"), default="default", help=argparse.SUPPRESS)
    return parser


def prepare_out(out: Path) -> None:
    """Create ``out`` and check that a file can be written in it; :class:`OutputError` if not."""
    probe = out / f".esper-demo-write-test-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        culprit = exc.filename if exc.filename not in (None, str(out), str(probe)) else None
        detail = f"{reason} ({culprit})" if culprit else reason
        raise OutputError(f"cannot write to --out {str(out)!r}: {detail}") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``esper demo``; returns the process exit status (2 for bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # before anything else: a missing extra is said once, for every extra this run needs
        require_extras("this run", "demo", *(("tensorboard",) if args.tensorboard is not None else ()))
    except MissingExtraError as exc:
        print(f"esper demo: error: {exc}", file=sys.stderr)
        return 2
    try:
        settings = DemoSettings.resolve(
            args.topology,
            epochs=args.epochs,
            seeds=args.seeds,
            first_seed=args.seed,
            strategies=args.strategy,
            gate_policy=args.gates,
            gate_thresholds=dict(args.gate_threshold or []),
            budget=args.budget,
            include=args.include,
            exclude=args.exclude,
            lr=args.lr,
            seed_lr=args.seed_lr,
            batch_size=args.batch_size,
            threads=args.threads,
            size=args.size,
            events=args.events,
            events_csv=args.events_csv,
            tensorboard=args.tensorboard,
        )
    except SettingsError as exc:
        parser.error(str(exc))
    from rich.console import Console

    try:
        prepare_out(args.out)
        run_demo(
            settings,
            args.out,
            console=Console(),
            command=["esper", "demo", *(sys.argv[1:] if argv is None else argv)],
        )
    except BrokenPipeError:  # stdout's reader left: not an --out problem; `esper` ends quietly
        raise
    except OSError as exc:  # OutputError, or a write that failed at the end (disk full...)
        message = (
            str(exc) if isinstance(exc, OutputError) else f"cannot write to --out {str(args.out)!r}: {exc}"
        )
        print(f"esper demo: error: {message}", file=sys.stderr)
        return 2
    return 0


def run_demo(settings: DemoSettings, out: Path, *, console: Any, command: list[str] | None = None) -> dict:
    """Run every model for every seed, print the results, write ``report.json`` and ``growth.png``.

    ``settings.threads`` sets torch's intra-op threads for the run (restored afterwards;
    ``None`` leaves them alone). Returns the report. Raises
    :class:`~esper_core.errors.MissingExtraError` when the ``demo`` extra (or, for
    ``settings.tensorboard``, the ``tensorboard`` extra) is missing, and :class:`OutputError`
    when ``out`` cannot be written (both checked before any training).
    """
    require_extras("esper demo", "demo", *(("tensorboard",) if settings.tensorboard is not None else ()))
    prepare_out(out)
    previous = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        from esper_core.demo.session import run_session

        return run_session(settings, out, console, command or ["esper", "demo"])
    finally:
        torch.set_num_threads(previous)
