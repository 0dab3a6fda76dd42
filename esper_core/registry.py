"""The blueprint registry: every topology and blueprint that loaded plugins provide.

The registry is built lazily, on first use, from the built-in plugin and the installed
packs (see :mod:`esper_core._loader` for the order and the failure rules, and
:mod:`esper_core._store` for the store itself). A pack that fails to load, and any entry of
a loaded pack that was refused (a name clash, a broken count), is reported by
:func:`plugin_report` and never takes the other packs down. Every change bumps
:func:`registry_version`, so consumers that cache an action space over the blueprints
know when to rebuild it.

**Re-entrancy.** A pack must not use the registry while packs are loading, that is at
import time or inside a registration hook: the registry is not complete yet. Such a call
raises :class:`~esper_core.errors.RegistryError` at once (it would otherwise wait for a
build that is waiting for it), and the pack is recorded as failed with that message.
Use the registry lazily instead, for example inside a factory.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pluggy
from torch import nn

from esper_core._loader import BUILTIN_PLUGIN, build_registry
from esper_core._store import Refusal, Registry, Source
from esper_core.errors import RegistryError
from esper_core.plugins import PluginInfo
from esper_core.spec import BlueprintSpec, set_origin_lookup
from esper_core.topology import Topology

__all__ = [
    "BUILTIN_PLUGIN",
    "Refusal",
    "Registry",
    "Source",
    "build_registry",
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
    "provenance",
    "registered_source",
    "registry_version",
    "reset_registry",
    "temporary_blueprints",
]

# ---- the process-wide registry -----------------------------------------------------------------

_registry: Registry | None = None
_registry_lock = threading.Lock()
_builder: int | None = None  # ident of the thread building the registry, while it does

REENTRANT_MESSAGE = (
    "the Esper registry was used while blueprint packs are still loading (from a pack's import "
    "or one of its registration hooks); it is not complete until every pack has registered. "
    "Do not call get_topology/get_blueprint/list_blueprints (or any registry function) at import "
    "time or inside esper_register_topologies/esper_register_blueprints: import the Topology "
    "objects you need (esper_core.topology.CNN, TRANSFORMER) or call the registry lazily, "
    "inside a factory"
)


def _built() -> Registry:
    """The process-wide registry, built on first use; never applies strict mode."""
    global _registry, _builder
    registry = _registry
    if registry is not None:
        return registry
    if _builder == threading.get_ident():  # only this thread can have set its own ident
        raise RegistryError(REENTRANT_MESSAGE)
    with _registry_lock:
        if _registry is None:
            _builder = threading.get_ident()
            try:
                _registry = build_registry()
            finally:
                _builder = None
        return _registry


def get_registry() -> Registry:
    """The process-wide registry, built from plugins on first use.

    Raises :class:`~esper_core.errors.PluginLoadError` listing every problem when
    ``ESPER_STRICT_PLUGINS`` was set when the registry was built and a pack failed to load
    or an entry was refused; :class:`~esper_core.errors.RegistryError` when called while
    packs are loading (see the module docstring).
    """
    registry = _built()
    if registry.strict:
        registry.raise_if_problems()
    return registry


def reset_registry() -> None:
    """Forget the loaded registry; the next use reloads plugins (and re-reads the env vars)."""
    global _registry
    if _builder == threading.get_ident():
        raise RegistryError(REENTRANT_MESSAGE)
    with _registry_lock:
        _registry = None


def get_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager holding every successfully loaded plugin."""
    return get_registry().manager


def plugin_report() -> list[PluginInfo]:
    """One entry per plugin seen: loaded ones with what they provided (and any entry that was
    refused, in ``refused``), failed ones with the error. Never raises for a pack's fault,
    strict mode included: it is the report."""
    return _built().report()


def registered_source(spec: BlueprintSpec) -> Source | None:
    """The source that registered ``spec`` itself, or None; never loads plugins."""
    registry = _registry
    if registry is None or not registry.holds(spec):
        return None
    return registry.source(spec)


def _origin_of(spec: BlueprintSpec) -> tuple[str, str] | None:
    source = registered_source(spec)
    return None if source is None else (source.distribution, source.version)


set_origin_lookup(_origin_of)


def provenance(key: str) -> Source:
    """Which distribution (and version, and plugin) registered ``key``.

    ``key`` is ``"topology:name"`` for a blueprint (``"cnn:conv_light"``) or a topology's
    name (``"cnn"``). Returns a :class:`Source` with ``distribution``, ``version`` and
    ``plugin``. Raises :class:`~esper_core.errors.UnknownBlueprintError` or
    :class:`~esper_core.errors.UnknownTopologyError` when nothing of that name is
    registered, and :class:`~esper_core.errors.RegistryError` for a key that is not a str.
    """
    if not isinstance(key, str) or not key:
        raise RegistryError(f"provenance() needs 'topology:name' or a topology name, got {key!r}")
    registry = get_registry()
    if ":" in key:
        topology, _, name = key.partition(":")
        return registry.source(registry.get_blueprint(topology, name))
    return registry.topology_source(key)


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


def get_blueprint(
    topology: str, name: str, *, distribution: str | None = None, version: str | None = None
) -> BlueprintSpec:
    """The registered blueprint ``topology:name``.

    Raises :class:`~esper_core.errors.UnknownBlueprintError` listing the blueprints that
    exist. ``distribution`` and ``version``, when the caller knows where the blueprint came
    from (a checkpoint records it), make that error say what to install, and whether the
    distribution is installed but failed to load or had the entry refused.
    """
    return get_registry().get_blueprint(topology, name, distribution=distribution, version=version)


def list_blueprints(
    topology: str | None = None, pattern: str = "*", dim: int | None = None
) -> list[BlueprintSpec]:
    """Blueprints matching ``pattern`` (fnmatch on the name or ``topology:name``).

    Sorted by exact parameter count at ``dim`` (or each topology's reference dim) with
    default options, then by name; blueprints that cannot be built at ``dim`` come last. A
    blueprint whose count at ``dim`` is broken (raises, or is not a non-negative int) is
    left out and reported with its distribution (a
    :class:`~esper_core.errors.PluginLoadWarning`); under ``ESPER_STRICT_PLUGINS`` its
    :class:`~esper_core.errors.BlueprintError` is raised instead.
    """
    return get_registry().list_blueprints(topology, pattern, dim)


def create_blueprint(topology: str, name: str, dim: int, **options: Any) -> nn.Module:
    """Build a blueprint's module after validating ``dim`` and ``options``.

    Raises :class:`~esper_core.errors.OptionError` for rejected options and
    :class:`~esper_core.errors.BlueprintError` (naming the blueprint, dim, options and
    distribution) when the pack's factory raises or returns something that is not a module.
    """
    return get_blueprint(topology, name).build(dim, **options)


def param_count(topology: str, name: str, dim: int, **options: Any) -> int:
    """Exact parameter count in closed form; no module is built.

    Raises :class:`~esper_core.errors.OptionError` for rejected options and
    :class:`~esper_core.errors.BlueprintError` when the pack's count is broken.
    """
    return get_blueprint(topology, name).count_params(dim, **options)


def flop_count(
    topology: str, name: str, dim: int, input_shape: tuple[int, ...], **options: Any
) -> int | None:
    """FLOPs of one forward pass, or None when the blueprint declares no count."""
    return get_blueprint(topology, name).count_flops(dim, input_shape, **options)
