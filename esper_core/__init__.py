"""Esper: grow neural networks while they train.

The names a user growing a model or a pack author reaches for first are importable from this
package (``__all__``); the conformance kit for pack authors is ``esper_core.testing``. Every
other public name lives in the module that defines it (``esper_core.errors``,
``esper_core.registry``, ``esper_core.folding``, ...). Names are resolved lazily (PEP 562) so
that ``import esper_core`` stays cheap: the CLI's cold start and a pack's import only pay
for the modules they actually use.
"""

from __future__ import annotations

import importlib
from typing import Any

from esper_core.hookspecs import hookimpl

# name -> module that defines it. The public surface: what a user growing a model or a pack
# author needs. Everything else stays importable from its own module (``esper_core.codec``,
# ``esper_core.commands``, ``esper_core.transition``, ...) but is not re-exported here.
_EXPORTS: dict[str, str] = {
    # errors: the bases; every other error class is in esper_core.errors and derives from one
    "EsperError": "esper_core.errors",
    "RegistryError": "esper_core.errors",
    "LifecycleError": "esper_core.errors",
    "CheckpointError": "esper_core.errors",
    # the plugin contract and the registry
    "BlueprintSpec": "esper_core.spec",
    "Option": "esper_core.options",
    "Topology": "esper_core.topology",
    "list_blueprints": "esper_core.registry",
    "get_blueprint": "esper_core.registry",
    "create_blueprint": "esper_core.registry",
    "get_topology": "esper_core.registry",
    # the lifecycle
    "SeedSlot": "esper_core.slot",
    "SeedStage": "esper_core.stages",
    "QualityGates": "esper_core.gates",
    "GateLevel": "esper_core.gates",
    "BlendAlgorithm": "esper_core.alpha",
    "AlphaCurve": "esper_core.alpha",
    # hosts, models and injection into any nn.Module
    "MorphogeneticModel": "esper_core.model",
    "CNNHost": "esper_core.hosts",
    "TransformerHost": "esper_core.hosts",
    "inject_slots": "esper_core.inject",
    "remove_slots": "esper_core.inject",
    "InjectionTarget": "esper_core.inject",
    "evaluate_injected": "esper_core.inject",
    # training
    "OptimizerBinding": "esper_core.optim",
    "HeuristicController": "esper_core.control",
    "ControllerConfig": "esper_core.control",
    "Governor": "esper_core.governor",
    # shipping a grown model: fold it into a plain module, seed-only checkpoints
    "fold": "esper_core.folding",
    "save_seeds": "esper_core.seed_checkpoint",
    "load_seeds": "esper_core.seed_checkpoint",
    # checkpoints and multi-process training
    "load_checkpoint": "esper_core.checkpoint",
    "DistributedLifecycle": "esper_core.distributed",
    "DDPRewrapper": "esper_core.distributed",
}

# name -> module, for names this package once re-exported and no longer does. Reaching for one
# here says where it lives instead of a bare "no attribute": code written against an older
# release gets the fix in the error message.
_ELSEWHERE: dict[str, str] = {
    "OptionError": "esper_core.errors",
    "HostError": "esper_core.errors",
    "FoldError": "esper_core.errors",
    "param_count": "esper_core.registry",
    "flop_count": "esper_core.registry",
    "list_topologies": "esper_core.registry",
    "plugin_report": "esper_core.registry",
    "plan_fold": "esper_core.folding",
}

__all__ = ["hookimpl", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name on first use; raise ``AttributeError`` for any other name.

    The error for a name in ``_ELSEWHERE`` names the module to import it from.
    """
    module_name = _EXPORTS.get(name)
    if module_name is None:
        home = _ELSEWHERE.get(name)
        if home is not None:
            raise AttributeError(f"esper_core.{name} is not re-exported; import it from {home}", name=name)
        raise AttributeError(f"module 'esper_core' has no attribute {name!r}", name=name)
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
