"""The ``esper`` command: ``blueprints``, ``plugins`` and ``demo``.

Output is plain text (or JSON with ``--json``) so the command needs nothing beyond the
core's own dependencies. Bad input is reported in one line that names what is accepted,
with exit status 2. A reader that goes away (``esper blueprints --json | head``) ends the
command quietly with status :data:`BROKEN_PIPE_STATUS`. Plugin problems are printed once:
``esper plugins`` shows them in its report (the loader's warnings are dropped), other
commands print each warning once on stderr. Under ``ESPER_STRICT_PLUGINS=1`` a plugin problem
makes a command exit with status 1 (``esper plugins`` after printing the full report), never
with a traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import warnings
from collections.abc import Sequence

__all__ = ["BROKEN_PIPE_STATUS", "main", "version_text"]

BROKEN_PIPE_STATUS = 141
"""Exit status when stdout's reader has gone: 128 + SIGPIPE, what a shell reports for a
C tool such as ``cat`` in the same place, so ``set -o pipefail`` scripts see one rule."""


class CliError(Exception):
    """A user error to report in one line with exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid dim {text!r}: expected a positive integer such as 64")
    return value


def version_text() -> str:
    """The versions ``esper --version`` prints: the core, torch, Python, then every pack.

    One line per pack distribution (a pack with several entry points is listed once), in
    the order of :func:`esper_core.registry.plugin_report`; a pack that failed to load is
    listed with a pointer to ``esper plugins``, which shows the error.
    """
    import torch

    from esper_core.registry import plugin_report

    try:
        core = importlib.metadata.version("esper-core")
    except importlib.metadata.PackageNotFoundError:
        core = "(not installed: no distribution metadata; running from a source tree?)"
    lines = [f"esper-core {core} (torch {torch.__version__}, Python {platform.python_version()})"]
    packs: dict[str, tuple[str, bool]] = {}
    for info in plugin_report():
        if info.distribution == "esper-core":
            continue
        _, loaded = packs.get(info.distribution, (info.version, True))
        packs[info.distribution] = (info.version, loaded and info.loaded)
    for distribution, (version, loaded) in packs.items():
        note = "" if loaded else "  (failed to load; `esper plugins` shows why)"
        lines.append(f"{distribution} {version}{note}")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    """``--version``: computed when asked for, so ``esper --help`` loads no plugins."""

    def __init__(
        self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object
    ) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[no-untyped-def]
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esper",
        description="Grow neural networks while they train. Inspect blueprints and plugins, or run the demo.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the versions of esper-core, torch, Python and every installed pack, then exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    blueprints = commands.add_parser(
        "blueprints",
        help="list registered blueprints with exact parameter counts",
        description="List registered blueprints, sorted by exact parameter count at --dim.",
    )
    blueprints.add_argument(
        "pattern", nargs="?", default="*", help="fnmatch pattern on the name, e.g. 'conv*'"
    )
    blueprints.add_argument("--topology", metavar="T", help="only this topology (e.g. cnn, transformer)")
    blueprints.add_argument(
        "--dim",
        type=_positive_int,
        metavar="D",
        help="width to count parameters at (default: topology's reference)",
    )
    blueprints.add_argument("--json", action="store_true", help="print JSON instead of a table")

    plugins = commands.add_parser(
        "plugins",
        help="list loaded blueprint packs and load failures",
        description="List every plugin: distribution, version, hooks, blueprints, and load errors.",
    )
    plugins.add_argument("--json", action="store_true", help="print JSON instead of text")

    commands.add_parser(
        "demo",
        help="grow seeds in a small host on bundled data (see `esper demo --help`)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``esper`` command; return its exit status.

    Every command writes through this function, so a closed stdout is handled once, here:
    the output is flushed before returning (otherwise a reader that left early would be
    noticed only at interpreter exit, as an "Exception ignored" message) and a
    ``BrokenPipeError`` ends the command silently with :data:`BROKEN_PIPE_STATUS`.
    """
    try:
        try:
            return _run(argv)
        finally:  # also after argparse's SystemExit for --help/--version
            sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return BROKEN_PIPE_STATUS


def _discard_stdout() -> None:
    """Point stdout at the null device so the interpreter's final flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (e.g. captured in-process): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _run(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["demo"]:
        from esper_core.demo import main as demo_main

        return demo_main(args_list[1:])
    args = build_parser().parse_args(args_list)
    from esper_core.errors import PluginLoadError, PluginLoadWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginLoadWarning)
        try:
            status = _blueprints(args) if args.command == "blueprints" else _plugins(args)
        except CliError as exc:
            print(f"esper: error: {exc}", file=sys.stderr)
            status = 2
        except PluginLoadError as exc:
            print(f"esper: error: {exc}\n(run `esper plugins` for the full report)", file=sys.stderr)
            status = 1
    if args.command != "plugins":  # the plugins report already shows every problem
        for message in dict.fromkeys(str(w.message) for w in caught if w.category is PluginLoadWarning):
            print(f"esper: warning: {message.removeprefix('esper: ')}", file=sys.stderr)
    for other in caught:  # anything else is not ours to swallow
        if other.category is not PluginLoadWarning:
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return status


def _blueprints(args: argparse.Namespace) -> int:
    from esper_core.errors import RegistryError
    from esper_core.registry import get_registry

    registry = get_registry()
    try:
        specs = registry.list_blueprints(args.topology, args.pattern, args.dim)
    except RegistryError as exc:  # BlueprintError included: a broken count under strict mode
        raise CliError(str(exc)) from None
    if not specs and not registry.all_blueprints():
        print("no blueprints are registered; install a pack (see `esper plugins`)")
        return 0
    if not specs:
        names = sorted({s.name for s in registry.all_blueprints() if args.topology in (None, s.topology)})
        kind = "" if args.topology is None else f"{args.topology} "
        message = f"no {kind}blueprint matches {args.pattern!r}; available: {', '.join(names) or 'none'}"
        raise CliError(message + _other_topologies(registry, args.pattern, args.topology))
    rows = [_blueprint_row(registry, spec, args.dim) for spec in specs]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        header = ["topology", "name", "distribution", "version", "dim", "params", "options"]
        reasons = list(dict.fromkeys(r["unbuildable_reason"] for r in rows if r["unbuildable_reason"]))
        table = [[_format_cell(key, row, reasons) for key in header] for row in rows]
        print(_format_table(header, table))
        for number, reason in enumerate(reasons, start=1):
            print(f"[{number}] {reason}")
    return 0


def _other_topologies(registry, pattern: str, topology: str | None) -> str:
    """What ``pattern`` matches outside ``--topology``, and the flag that shows it ("" if nothing)."""
    if topology is None:
        return ""
    elsewhere: dict[str, list[str]] = {}
    for spec in registry.list_blueprints(None, pattern):
        if spec.topology != topology:
            elsewhere.setdefault(spec.topology, []).append(spec.name)
    if not elsewhere:
        return ""
    found = "; ".join(f"{t}: {', '.join(sorted(names))}" for t, names in sorted(elsewhere.items()))
    flags = " or ".join(f"--topology {t}" for t in sorted(elsewhere))
    return f"; it matches blueprints of other topologies ({found}): use {flags}, or no --topology"


def _unbuildable_reason(spec, width: int) -> str | None:
    """Why ``spec`` cannot be built at ``width`` with its default options (the OptionError's message)."""
    from esper_core.errors import OptionError

    try:
        spec.count_params(width)
    except OptionError as exc:
        return str(exc)
    return None


def _blueprint_row(registry, spec, dim: int | None) -> dict:
    width = dim if dim is not None else registry.get_topology(spec.topology).reference_dim
    source = registry.source(spec)
    count = registry.count_at(spec, width)  # checked by list_blueprints at this width
    return {
        "topology": spec.topology,
        "name": spec.name,
        "distribution": source.distribution,
        "version": source.version,
        "dim": width,
        "params": count,  # None (JSON null) when the default options are invalid at this width
        "unbuildable_reason": None if count is not None else _unbuildable_reason(spec, width),
        "options": {opt.name: opt.default for opt in spec.options},
        "accepted": {opt.name: opt.describe_accepted() for opt in spec.options},
        "description": spec.description,
    }


def _format_cell(key: str, row: dict, reasons: list[str]) -> str:
    if key == "options":
        return _format_options(row)
    value = row[key]
    if value is None and key == "params" and row["unbuildable_reason"]:
        return f"n/a [{reasons.index(row['unbuildable_reason']) + 1}]"  # the footnote says why
    return "n/a" if value is None else str(value)


def _format_options(row: dict) -> str:
    """``name=default (accepted values)`` for each option, e.g. ``groups=1 (an int >= 1)``."""
    options, accepted = row["options"], row["accepted"]
    return ", ".join(f"{k}={v!r} ({accepted[k]})" for k, v in options.items()) or "-"


def _plugins(args: argparse.Namespace) -> int:
    from esper_core.plugins import is_strict
    from esper_core.registry import plugin_report

    infos = plugin_report()  # the report never raises for a pack's fault, strict or not
    failed = sum(not info.loaded for info in infos)
    refused = sum(len(info.refused) for info in infos)
    if args.json:
        print(json.dumps([_plugin_dict(info) for info in infos], indent=2))
    else:
        for info in infos:
            _print_plugin(info)
        print(f"{len(infos)} plugin(s), {failed} failed to load, {refused} refused entr{_y(refused)}")
    if is_strict() and (failed or refused):
        print(
            f"esper: error: ESPER_STRICT_PLUGINS is set: {failed} plugin(s) failed to load and "
            f"{refused} entr{_y(refused)} refused (see the report)",
            file=sys.stderr,
        )
        return 1
    return 0


def _y(count: int) -> str:
    return "y" if count == 1 else "ies"


def _print_plugin(info) -> None:
    status = "FAILED" if not info.loaded else "loaded"
    if info.refused:
        status += f", {len(info.refused)} refused"
    print(f"{info.name}  ({info.distribution} {info.version})  {status}")
    print(f"  module:      {info.module}")
    print(f"  hooks:       {', '.join(info.hooks) or '-'}")
    if info.topologies:
        print(f"  topologies:  {', '.join(info.topologies)}")
    print(f"  blueprints:  {', '.join(info.blueprints) or '-'}")
    for refusal in info.refused:
        print(f"  refused:     {refusal}")
    if info.error is not None:
        print(f"  error:       {info.error}")


def _plugin_dict(info) -> dict:
    return {
        "name": info.name,
        "distribution": info.distribution,
        "version": info.version,
        "module": info.module,
        "loaded": info.loaded,
        "hooks": list(info.hooks),
        "topologies": list(info.topologies),
        "blueprints": list(info.blueprints),
        "refused": list(info.refused),
        "error": info.error,
    }


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
