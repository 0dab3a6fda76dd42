"""Esper: grow neural networks while they train.

The public API is importable from this package. Names are resolved lazily (PEP 562) so
that ``import esper_core`` stays cheap: the CLI's cold start and a pack's import only pay
for the modules they actually use.
"""

from __future__ import annotations

import importlib
from typing import Any

from esper_core.hookspecs import hookimpl

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "EsperError": "esper_core.errors",
    "RegistryError": "esper_core.errors",
    "UnknownTopologyError": "esper_core.errors",
    "UnknownBlueprintError": "esper_core.errors",
    "OptionError": "esper_core.errors",
    "ConflictError": "esper_core.errors",
    "PluginLoadError": "esper_core.errors",
    "LifecycleError": "esper_core.errors",
    "MissingGateError": "esper_core.errors",
    "CheckpointError": "esper_core.errors",
    "DistributedError": "esper_core.errors",
    # plugin contract and registry
    "Option": "esper_core.options",
    "BlueprintSpec": "esper_core.spec",
    "Topology": "esper_core.topology",
    "PluginInfo": "esper_core.plugins",
    "list_blueprints": "esper_core.registry",
    "get_blueprint": "esper_core.registry",
    "create_blueprint": "esper_core.registry",
    "param_count": "esper_core.registry",
    "flop_count": "esper_core.registry",
    "get_topology": "esper_core.registry",
    "list_topologies": "esper_core.registry",
    "registry_version": "esper_core.registry",
    "plugin_report": "esper_core.registry",
    "get_plugin_manager": "esper_core.registry",
    "temporary_blueprints": "esper_core.registry",
}

__all__ = ["hookimpl", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'esper_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
