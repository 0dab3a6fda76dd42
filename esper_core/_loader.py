"""Building a registry from the core's own plugin and the installed packs.

Order (install-order independent, see ``docs/plugins.md``): the core first, then the packs
that ship with Esper (:data:`SHIPPED`), then every other pack by normalised distribution
name and entry-point name. Earlier registrations keep their names, so a third-party pack
can never displace the core's topologies or a shipped blueprint, and between two
third-party packs the one that sorts second is blamed for a clash.

Nothing a pack does ends the host: any exception (``SystemExit`` included; only
``KeyboardInterrupt`` propagates) raised by its import or its registration hooks is
recorded as that pack's failure. Strict mode does not change loading; it makes
:func:`esper_core.registry.get_registry` raise afterwards, so ``esper plugins`` can still
print the whole report.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

import attrs

from esper_core import _builtin
from esper_core._store import Registry, Source
from esper_core.errors import RegistryError
from esper_core.plugins import (
    PluginInfo,
    describe_exception,
    discover_entry_points,
    implemented_hooks,
    is_strict,
    load_entry_points,
    normalize_distribution,
    report_failure,
    report_refusal,
    unmatched_allow_list,
)
from esper_core.spec import BlueprintSpec
from esper_core.topology import Topology

__all__ = ["BUILTIN_PLUGIN", "SHIPPED", "build_registry", "registration_order"]

BUILTIN_PLUGIN = "esper-core:builtin"

SHIPPED = frozenset({"esper-core", "esper-blueprints-cnn", "esper-blueprints-transformer"})
"""Distributions that ship with Esper; they register before any other pack."""


def core_version() -> str:
    try:
        return importlib.metadata.version("esper-core")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def registration_order(info: PluginInfo) -> tuple[int, str]:
    """Sort key: the core, then shipped packs, then the rest, each by plugin name."""
    if info.name == BUILTIN_PLUGIN:
        return (0, info.name)
    return (1 if normalize_distribution(info.distribution) in SHIPPED else 2, info.name)


def build_registry() -> Registry:
    """Load the built-in plugin and every allowed pack into a new registry.

    Never raises for a pack's fault; read :meth:`Registry.problems` (strict mode is applied
    by :func:`esper_core.registry.get_registry`).
    """
    registry = Registry(strict=is_strict())
    registry.manager.register(_builtin, name=BUILTIN_PLUGIN)
    builtin = PluginInfo(
        name=BUILTIN_PLUGIN,
        distribution="esper-core",
        version=core_version(),
        module=_builtin.__name__,
        hooks=tuple(implemented_hooks(registry.manager, _builtin)),
    )
    entry_points = discover_entry_points()
    infos = [builtin, *load_entry_points(registry.manager, entry_points), *unmatched_allow_list(entry_points)]
    for info in infos:
        if info.error is not None and not registry.strict:
            report_failure(info)
    loaded = {info.name: info for info in infos if info.loaded}
    failed = [info for info in infos if not info.loaded]
    for hook in ("esper_register_topologies", "esper_register_blueprints"):
        loaded = _run_registration(registry, loaded, hook, failed)
    registry.plugins = sorted([*loaded.values(), *failed], key=lambda i: i.name)
    return registry


def _run_registration(
    registry: Registry, loaded: dict[str, PluginInfo], hook_name: str, failed: list[PluginInfo]
) -> dict[str, PluginInfo]:
    """Call one registration hook plugin by plugin, so each pack succeeds or fails alone."""
    caller = getattr(registry.manager.hook, hook_name)
    impls = {impl.plugin_name: impl for impl in caller.get_hookimpls()}
    result = dict(loaded)
    for info in sorted(loaded.values(), key=registration_order):
        impl = impls.get(info.name)
        if impl is None:
            continue
        source = Source(info.distribution, info.version, info.name)
        try:
            topologies, specs = _collect(impl.function, impl.argnames)
            refused = registry.admit(topologies, specs, source)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit included: a pack must never end the host
            broken = attrs.evolve(info, error=f"{hook_name} failed: {describe_exception(exc)}")
            registry.manager.unregister(name=info.name)
            del result[info.name]
            failed.append(broken)
            if not registry.strict:
                report_failure(broken)
            continue
        if not registry.strict:
            for refusal in refused:
                report_refusal(source.distribution, source.version, refusal.describe())
        lost = {r.key for r in refused}
        if hook_name == "esper_register_topologies":
            names = tuple(t.name for t in topologies if t.name not in lost)
            result[info.name] = attrs.evolve(info, topologies=names)
        else:
            result[info.name] = attrs.evolve(
                info, blueprints=tuple(s.key for s in specs if s.key not in lost)
            )
    return result


def _collect(
    function: Callable[..., Any], argnames: tuple[str, ...]
) -> tuple[list[Topology], list[BlueprintSpec]]:
    """Run a registration hook, staging what it registers instead of applying it."""
    topologies: list[Topology] = []
    specs: list[BlueprintSpec] = []
    open_ = [True]

    def register(item: object) -> None:
        if not open_[0]:
            raise RegistryError(
                "register() was called after the registration hook returned; call it inside the hook"
            )
        if isinstance(item, Topology):
            topologies.append(item)
        else:
            specs.append(item)  # type: ignore[arg-type]  # checked by Registry.admit

    try:
        function(**{name: register for name in argnames if name == "register"})
    finally:
        open_[0] = False
    return topologies, specs
