"""The blueprint registry: every topology and blueprint that loaded plugins provide.

The registry is built lazily, on first use, from the built-in plugin and the installed
packs (see :mod:`esper_core.plugins`). Each pack registers in isolation and atomically:
if any of its registrations fails, none of them is kept, and the pack is reported as a
load failure. Every change bumps :func:`registry_version`, so consumers that cache an
action space over the blueprints know when to rebuild it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.metadata
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pluggy
from torch import nn

from esper_core import _builtin
from esper_core.errors import (
    ConflictError,
    OptionError,
    RegistryError,
    UnknownBlueprintError,
    UnknownTopologyError,
)
from esper_core.plugins import (
    PluginInfo,
    create_plugin_manager,
    discover_entry_points,
    implemented_hooks,
    is_strict,
    load_entry_points,
    report_failure,
)
from esper_core.spec import BlueprintSpec, check_dim
from esper_core.topology import Topology

__all__ = [
    "Registry",
    "Source",
    "create_blueprint",
    "flop_count",
    "get_blueprint",
    "get_plugin_manager",
    "get_registry",
    "get_topology",
    "list_blueprints",
    "list_topologies",
    "param_count",
    "plugin_report",
    "registry_version",
    "reset_registry",
    "temporary_blueprints",
]


def _core_version() -> str:
    try:
        return importlib.metadata.version("esper-core")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@attrs.frozen
class Source:
    """Where a registration came from."""

    distribution: str
    version: str
    plugin: str


BUILTIN_PLUGIN = "esper-core:builtin"


class Registry:
    """Topologies and blueprints, each with the source that registered it."""

    def __init__(self, manager: pluggy.PluginManager | None = None) -> None:
        self.manager = manager if manager is not None else create_plugin_manager()
        self.plugins: list[PluginInfo] = []
        self._topologies: dict[str, tuple[Topology, Source]] = {}
        self._blueprints: dict[str, tuple[BlueprintSpec, Source]] = {}
        self._version = 0
        self._lock = threading.RLock()

    @property
    def version(self) -> int:
        return self._version

    # ---- registration ---------------------------------------------------------------------

    def register_topology(self, topology: Topology, source: Source) -> None:
        self.register_batch([topology], [], source)

    def register_blueprint(self, spec: BlueprintSpec, source: Source) -> None:
        self.register_batch([], [spec], source)

    def register_batch(self, topologies: list[Topology], specs: list[BlueprintSpec], source: Source) -> None:
        """Register everything or nothing: validate the whole batch before changing state."""
        with self._lock:
            new_topologies = self._check_topologies(topologies, source)
            new_blueprints = self._check_blueprints(specs, source, new_topologies)
            self._topologies.update(new_topologies)
            self._blueprints.update(new_blueprints)
            if new_topologies or new_blueprints:
                self._version += 1

    def unregister_blueprint(self, topology: str, name: str) -> None:
        with self._lock:
            spec = self.get_blueprint(topology, name)
            del self._blueprints[spec.key]
            self._version += 1

    def _check_topologies(
        self, topologies: list[Topology], source: Source
    ) -> dict[str, tuple[Topology, Source]]:
        staged: dict[str, tuple[Topology, Source]] = {}
        for topology in topologies:
            if not isinstance(topology, Topology):
                raise RegistryError(
                    f"register() expects a Topology, got {topology!r} from {source.distribution}"
                )
            previous = self._topologies.get(topology.name) or staged.get(topology.name)
            if previous is not None:
                raise ConflictError(_conflict_message(f"topology {topology.name!r}", previous[1], source))
            staged[topology.name] = (topology, source)
        return staged

    def _check_blueprints(
        self, specs: list[BlueprintSpec], source: Source, new_topologies: dict[str, tuple[Topology, Source]]
    ) -> dict[str, tuple[BlueprintSpec, Source]]:
        staged: dict[str, tuple[BlueprintSpec, Source]] = {}
        for spec in specs:
            if not isinstance(spec, BlueprintSpec):
                raise RegistryError(
                    f"register() expects a BlueprintSpec, got {spec!r} from {source.distribution}"
                )
            if spec.topology not in self._topologies and spec.topology not in new_topologies:
                raise UnknownTopologyError(
                    f"blueprint {spec.key!r} from {source.distribution} targets unknown topology "
                    f"{spec.topology!r}; registered topologies: {sorted(self._topologies)}"
                )
            previous = self._blueprints.get(spec.key) or staged.get(spec.key)
            if previous is not None:
                raise ConflictError(_conflict_message(f"blueprint {spec.key!r}", previous[1], source))
            staged[spec.key] = (spec, source)
        return staged

    # ---- lookup ---------------------------------------------------------------------------

    def topology_names(self) -> list[str]:
        return sorted(self._topologies)

    def get_topology(self, name: str) -> Topology:
        entry = self._topologies.get(name) if isinstance(name, str) else None
        if entry is None:
            raise UnknownTopologyError(
                f"unknown topology {name!r}; registered topologies: {self.topology_names()}"
            )
        return entry[0]

    def topology_source(self, name: str) -> Source:
        self.get_topology(name)
        return self._topologies[name][1]

    def get_blueprint(self, topology: str, name: str) -> BlueprintSpec:
        self.get_topology(topology)
        entry = self._blueprints.get(f"{topology}:{name}") if isinstance(name, str) else None
        if entry is None:
            available = sorted(s.name for s, _ in self._blueprints.values() if s.topology == topology)
            raise UnknownBlueprintError(
                f"unknown blueprint {name!r} for topology {topology!r}; available: {available}"
            )
        return entry[0]

    def source(self, spec: BlueprintSpec) -> Source:
        return self._blueprints[spec.key][1]

    def all_blueprints(self) -> list[BlueprintSpec]:
        return [spec for spec, _ in self._blueprints.values()]

    def count_at(self, spec: BlueprintSpec, dim: int | None = None) -> int | None:
        """Exact count with default options at ``dim`` (or the reference dim); None if invalid there."""
        width = self.get_topology(spec.topology).reference_dim if dim is None else dim
        try:
            return spec.count_params(width)
        except OptionError:
            return None

    def list_blueprints(
        self, topology: str | None = None, pattern: str = "*", dim: int | None = None
    ) -> list[BlueprintSpec]:
        if topology is not None:
            self.get_topology(topology)
        if not isinstance(pattern, str) or not pattern:
            raise RegistryError(
                f"pattern must be a non-empty fnmatch pattern such as 'conv*'; got {pattern!r}"
            )
        if dim is not None:
            check_dim(dim)
        chosen = [
            spec
            for spec in self.all_blueprints()
            if (topology is None or spec.topology == topology)
            and (fnmatch.fnmatchcase(spec.name, pattern) or fnmatch.fnmatchcase(spec.key, pattern))
        ]

        def order(spec: BlueprintSpec) -> tuple[float, str, str]:
            count = self.count_at(spec, dim)
            return (math.inf if count is None else count, spec.name, spec.topology)

        return sorted(chosen, key=order)


def _conflict_message(what: str, first: Source, second: Source) -> str:
    return (
        f"{what} is registered by both {first.distribution} {first.version} ({first.plugin}) "
        f"and {second.distribution} {second.version} ({second.plugin}); uninstall one of them"
    )


# ---- building the registry from plugins -------------------------------------------------------


def build_registry() -> Registry:
    """Load the built-in plugin and every allowed pack into a new registry."""
    registry = Registry()
    registry.manager.register(_builtin, name=BUILTIN_PLUGIN)
    builtin = PluginInfo(
        name=BUILTIN_PLUGIN,
        distribution="esper-core",
        version=_core_version(),
        module=_builtin.__name__,
        hooks=tuple(implemented_hooks(registry.manager, _builtin)),
    )
    infos = [builtin, *load_entry_points(registry.manager, discover_entry_points())]
    for info in infos:
        if info.error is not None:
            report_failure(info)
    loaded = {info.name: info for info in infos if info.loaded}
    failures = [info for info in infos if not info.loaded]
    loaded = _run_registration(registry, loaded, "esper_register_topologies")
    loaded = _run_registration(registry, loaded, "esper_register_blueprints")
    registry.plugins = sorted([*loaded.values(), *failures, *registry.plugins], key=lambda i: i.name)
    return registry


def _run_registration(
    registry: Registry, loaded: dict[str, PluginInfo], hook_name: str
) -> dict[str, PluginInfo]:
    """Call one registration hook plugin by plugin, so each pack succeeds or fails alone."""
    caller = getattr(registry.manager.hook, hook_name)
    impls = {impl.plugin_name: impl for impl in caller.get_hookimpls()}
    result = dict(loaded)
    for name in sorted(loaded):
        impl = impls.get(name)
        if impl is None:
            continue
        info = loaded[name]
        source = Source(info.distribution, info.version, info.name)
        try:
            topologies, specs = _collect(impl.function, impl.argnames)
            registry.register_batch(topologies, specs, source)
        except Exception as exc:
            failed = attrs.evolve(info, error=f"{hook_name} failed: {type(exc).__name__}: {exc}")
            registry.manager.unregister(name=name)
            del result[name]
            registry.plugins.append(failed)
            if is_strict() and isinstance(exc, RegistryError):
                raise
            report_failure(failed)
            continue
        if hook_name == "esper_register_topologies":
            result[name] = attrs.evolve(info, topologies=tuple(t.name for t in topologies))
        else:
            result[name] = attrs.evolve(info, blueprints=tuple(s.key for s in specs))
    return result


def _collect(
    function: Callable[..., Any], argnames: tuple[str, ...]
) -> tuple[list[Topology], list[BlueprintSpec]]:
    """Run a registration hook, staging what it registers instead of applying it."""
    topologies: list[Topology] = []
    specs: list[BlueprintSpec] = []

    def register(item: object) -> None:
        if isinstance(item, Topology):
            topologies.append(item)
        else:
            specs.append(item)  # type: ignore[arg-type]  # checked by register_batch

    function(**{name: register for name in argnames if name == "register"})
    return topologies, specs


# ---- the process-wide registry -----------------------------------------------------------------

_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, built from plugins on first use."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = build_registry()
    return _registry


def reset_registry() -> None:
    """Forget the loaded registry; the next use reloads plugins (and re-reads the env vars)."""
    global _registry
    with _registry_lock:
        _registry = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager holding every successfully loaded plugin."""
    return get_registry().manager


def plugin_report() -> list[PluginInfo]:
    """One entry per plugin seen: loaded ones with what they provided, failed ones with the error."""
    return list(get_registry().plugins)


@contextlib.contextmanager
def temporary_blueprints(
    *specs: BlueprintSpec, distribution: str = "<test>"
) -> Iterator[list[BlueprintSpec]]:
    """Register ``specs`` for the duration of a ``with`` block (for tests and experiments)."""
    registry = get_registry()
    registry.register_batch([], list(specs), Source(distribution, "0", f"{distribution}:temporary"))
    try:
        yield list(specs)
    finally:
        for spec in specs:
            registry.unregister_blueprint(spec.topology, spec.name)


def registry_version() -> int:
    """A number that changes whenever the set of registered blueprints or topologies changes."""
    return get_registry().version


def list_topologies() -> list[Topology]:
    registry = get_registry()
    return [registry.get_topology(name) for name in registry.topology_names()]


def get_topology(name: str) -> Topology:
    return get_registry().get_topology(name)


def get_blueprint(topology: str, name: str) -> BlueprintSpec:
    return get_registry().get_blueprint(topology, name)


def list_blueprints(
    topology: str | None = None, pattern: str = "*", dim: int | None = None
) -> list[BlueprintSpec]:
    """Blueprints matching ``pattern`` (fnmatch on the name or ``topology:name``).

    Sorted by exact parameter count at ``dim`` (or each topology's reference dim) with
    default options, then by name; blueprints that cannot be built at ``dim`` come last.
    """
    return get_registry().list_blueprints(topology, pattern, dim)


def create_blueprint(topology: str, name: str, dim: int, **options: Any) -> nn.Module:
    """Build a blueprint's module after validating ``dim`` and ``options``."""
    return get_blueprint(topology, name).build(dim, **options)


def param_count(topology: str, name: str, dim: int, **options: Any) -> int:
    """Exact parameter count in closed form; no module is built."""
    return get_blueprint(topology, name).count_params(dim, **options)


def flop_count(
    topology: str, name: str, dim: int, input_shape: tuple[int, ...], **options: Any
) -> int | None:
    """FLOPs of one forward pass, or None when the blueprint declares no count."""
    return get_blueprint(topology, name).count_flops(dim, input_shape, **options)
