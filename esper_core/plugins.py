"""Discovery and isolated loading of blueprint packs.

Packs are found through the ``esper.blueprints`` entry-point group and registered with one
pluggy :class:`~pluggy.PluginManager` for the ``esper`` project. Each entry point is loaded
on its own: a pack that fails to import (with any exception, ``SystemExit`` included; only
``KeyboardInterrupt`` propagates), has a hook implementation with a wrong signature, or
implements a hook name that does not exist is recorded as a failure (distribution, version,
error) and skipped, and the remaining packs still load. ``ESPER_STRICT_PLUGINS=1`` turns
any such failure into :class:`~esper_core.errors.PluginLoadError` (raised by the registry
once every pack has been tried); ``ESPER_LOAD_PLUGINS=dist1,dist2`` loads only the named
distributions (empty: none; separators are commas and any whitespace; names are compared
PEP 503-normalised; a name that matches no installed pack is reported).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from types import ModuleType

import attrs
import pluggy

from esper_core import hookspecs
from esper_core.errors import PluginLoadWarning

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "create_plugin_manager",
    "discover_entry_points",
    "is_strict",
    "load_entry_points",
    "normalize_distribution",
    "parse_allow_list",
    "plugin_allow_list",
]

ENTRY_POINT_GROUP = "esper.blueprints"
STRICT_ENV = "ESPER_STRICT_PLUGINS"
ALLOW_ENV = "ESPER_LOAD_PLUGINS"


@attrs.frozen
class PluginInfo:
    """What happened to one plugin: where it came from, what it provided, how it failed.

    ``error`` is set when the whole plugin failed to load; ``refused`` lists entries of a
    loaded plugin the registry did not keep (a name another pack holds, a broken count).
    """

    name: str
    distribution: str
    version: str
    module: str
    hooks: tuple[str, ...] = ()
    blueprints: tuple[str, ...] = ()
    topologies: tuple[str, ...] = ()
    error: str | None = None
    refused: tuple[str, ...] = ()

    @property
    def loaded(self) -> bool:
        return self.error is None


def is_strict() -> bool:
    """Whether ``ESPER_STRICT_PLUGINS`` asks for load failures to raise."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def normalize_distribution(name: str) -> str:
    """PEP 503 normalisation, so ``Esper_Blueprints.CNN`` and ``esper-blueprints-cnn`` match."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_allow_list(raw: str) -> tuple[str, ...]:
    """The PEP 503-normalised names in an ``ESPER_LOAD_PLUGINS`` value, in order, once each.

    Names are separated by commas and/or any whitespace (spaces, tabs, newlines), so
    ``"esper-blueprints-cnn, esper_blueprints.Transformer"`` names both packs.
    """
    names = (normalize_distribution(part) for part in re.split(r"[,\s]+", raw) if part)
    return tuple(dict.fromkeys(names))


def plugin_allow_list() -> frozenset[str] | None:
    """The distributions ``ESPER_LOAD_PLUGINS`` allows, or ``None`` when it is unset."""
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None
    return frozenset(parse_allow_list(raw))


def unmatched_allow_list(entry_points: Sequence[importlib.metadata.EntryPoint]) -> list[PluginInfo]:
    """A failed :class:`PluginInfo` for each ``ESPER_LOAD_PLUGINS`` name no installed pack has."""
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return []
    packs = sorted({normalize_distribution(_distribution_name(ep)) for ep in entry_points})
    infos = []
    for name in parse_allow_list(raw):
        if name in packs or name == "esper-core":
            continue
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version, state = "-", "no installed distribution has that name"
        else:
            state = f"{name} {version} is installed but declares no {ENTRY_POINT_GROUP!r} entry point"
        error = f"{ALLOW_ENV} names {name!r}, but {state}; installed packs: {', '.join(packs) or 'none'}"
        infos.append(
            PluginInfo(
                name=f"{name}:{ALLOW_ENV}", distribution=name, version=version, module="-", error=error
            )
        )
    return infos


def create_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager for the ``esper`` project with the hook specifications added."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def discover_entry_points() -> list[importlib.metadata.EntryPoint]:
    """Entry points of the group, one per (distribution, name), in a deterministic order."""
    seen: dict[tuple[str, str], importlib.metadata.EntryPoint] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution = _distribution_name(entry_point)
        seen.setdefault((normalize_distribution(distribution), entry_point.name), entry_point)
    return [seen[key] for key in sorted(seen)]


def load_entry_points(
    manager: pluggy.PluginManager, entry_points: Iterable[importlib.metadata.EntryPoint]
) -> list[PluginInfo]:
    """Register each allowed entry point with ``manager`` in isolation; report every outcome."""
    allowed = plugin_allow_list()
    infos = []
    for entry_point in entry_points:
        distribution = _distribution_name(entry_point)
        if allowed is not None and normalize_distribution(distribution) not in allowed:
            continue
        infos.append(_load_one(manager, entry_point, distribution))
    return infos


def report_failure(info: PluginInfo) -> None:
    """Warn once that the pack was skipped (:class:`~esper_core.errors.PluginLoadWarning`)."""
    message = f"esper: skipped plugin {info.name!r} from {info.distribution} {info.version}: {info.error}"
    warnings.warn(message, PluginLoadWarning, stacklevel=4)


def report_refusal(distribution: str, version: str, what: str) -> None:
    """Warn once that a loaded pack's entry was not kept."""
    warnings.warn(f"esper: {distribution} {version}: {what}", PluginLoadWarning, stacklevel=4)


def _load_one(
    manager: pluggy.PluginManager, entry_point: importlib.metadata.EntryPoint, distribution: str
) -> PluginInfo:
    version = _distribution_version(entry_point)
    plugin_name = f"{normalize_distribution(distribution)}:{entry_point.name}"
    base = PluginInfo(name=plugin_name, distribution=distribution, version=version, module=entry_point.value)
    try:
        module = entry_point.load()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a pack's import may fail in any way, SystemExit included
        return attrs.evolve(base, error=f"import failed: {describe_exception(exc)}")
    if not isinstance(module, ModuleType):
        return attrs.evolve(base, error=f"entry point must name a module, got {type(module).__name__}")
    try:
        manager.register(module, name=plugin_name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        return attrs.evolve(base, error=f"invalid hook implementation: {exc}")
    unknown = unknown_hooks(manager, module)
    if unknown:
        manager.unregister(module)
        known = ", ".join(sorted(spec_hook_names()))
        return attrs.evolve(base, error=f"unknown hook name(s) {unknown}; known hooks: {known}")
    return attrs.evolve(base, hooks=tuple(implemented_hooks(manager, module)))


def describe_exception(exc: BaseException) -> str:
    """One line for a pack's exception; ``SystemExit`` says the host was protected from it."""
    if isinstance(exc, SystemExit):
        return (
            f"SystemExit({exc.code!r}): the pack tried to end the process "
            "(sys.exit, or argparse parsing the host's sys.argv); Esper caught it"
        )
    return f"{type(exc).__name__}: {exc}"


def spec_hook_names() -> set[str]:
    return {name for name in dir(hookspecs) if name.startswith("esper_")}


def implemented_hooks(manager: pluggy.PluginManager, plugin: object) -> list[str]:
    callers = manager.get_hookcallers(plugin) or []
    return sorted(caller.name for caller in callers)


def unknown_hooks(manager: pluggy.PluginManager, plugin: object) -> list[str]:
    callers = manager.get_hookcallers(plugin) or []
    return sorted(caller.name for caller in callers if not caller.has_spec())


def _distribution_name(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = entry_point.dist
    return dist.metadata["Name"] if dist is not None else "<unknown distribution>"


def _distribution_version(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = entry_point.dist
    return dist.version if dist is not None else "unknown"
