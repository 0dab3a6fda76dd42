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
    # host errors
    "HostError": "esper_core.errors",
    # lifecycle
    "SeedStage": "esper_core.stages",
    "TRANSITIONS": "esper_core.stages",
    "stage_from_value": "esper_core.stages",
    "default_successor": "esper_core.stages",
    "is_terminal": "esper_core.stages",
    "is_failure": "esper_core.stages",
    "runs_seed": "esper_core.stages",
    "has_seed_module": "esper_core.stages",
    "GateLevel": "esper_core.gates",
    "GateResult": "esper_core.gates",
    "GateEvidence": "esper_core.gates",
    "GateThresholds": "esper_core.gates",
    "QualityGates": "esper_core.gates",
    "EDGE_GATES": "esper_core.gates",
    "gate_for_edge": "esper_core.gates",
    "AlphaController": "esper_core.alpha",
    "AlphaCurve": "esper_core.alpha",
    "AlphaMode": "esper_core.alpha",
    "curve_progress": "esper_core.alpha",
    "BlendAlgorithm": "esper_core.blend",
    "blend": "esper_core.blend",
    "GateModule": "esper_core.blend",
    "INITIAL_GATE": "esper_core.blend",
    "ActivityMeter": "esper_core.activity",
    "ActivityReading": "esper_core.activity",
    "ActivityState": "esper_core.activity",
    "relative_changes": "esper_core.activity",
    "SeedMetrics": "esper_core.metrics",
    "SlotReport": "esper_core.metrics",
    "SeedEvent": "esper_core.telemetry",
    "SeedGerminated": "esper_core.telemetry",
    "GateEvaluated": "esper_core.telemetry",
    "StageChanged": "esper_core.telemetry",
    "AlphaTargetSet": "esper_core.telemetry",
    "PruneScheduled": "esper_core.telemetry",
    "SeedFossilized": "esper_core.telemetry",
    "SeedPruned": "esper_core.telemetry",
    "SeedWarning": "esper_core.telemetry",
    "TelemetrySinkWarning": "esper_core.telemetry",
    "SeedSlot": "esper_core.slot",
    # checkpoints
    "encode_slot": "esper_core.state",
    "restore_slot": "esper_core.state",
    "slot_text": "esper_core.state",
    "load_checkpoint": "esper_core.state",
    "plan_restore": "esper_core.state",
    "RestorePlan": "esper_core.state",
    "find_slots": "esper_core.state",
    "install_load_hooks": "esper_core.state",
    "ENVELOPE_VERSION": "esper_core.envelope",
    "SlotEnvelope": "esper_core.envelope",
    "decode_envelope": "esper_core.envelope",
    "encode_envelope": "esper_core.envelope",
    "envelope_text": "esper_core.envelope",
    "parse_envelope": "esper_core.envelope",
    # multi-process
    "DistributedLifecycle": "esper_core.distributed",
    "LifecycleCommand": "esper_core.distributed",
    "CommandOp": "esper_core.distributed",
    "DDPRewrapper": "esper_core.distributed",
    "encode_command": "esper_core.distributed",
    "decode_command": "esper_core.distributed",
    "pack_command": "esper_core.distributed",
    # hosts and models
    "HostProtocol": "esper_core.hosts",
    "InjectionPoint": "esper_core.hosts",
    "SegmentedHost": "esper_core.hosts",
    "CNNHost": "esper_core.hosts",
    "TransformerHost": "esper_core.hosts",
    "cnn_host_param_count": "esper_core.hosts",
    "transformer_host_param_count": "esper_core.hosts",
    "MorphogeneticModel": "esper_core.model",
    "Evaluation": "esper_core.model",
    "inject_slots": "esper_core.inject",
    "remove_slots": "esper_core.inject",
    "InjectionTarget": "esper_core.inject",
    "evaluate_injected": "esper_core.inject",
    "alpha_overrides": "esper_core.inject",
    "OptimizerBinding": "esper_core.optim",
    "HeuristicController": "esper_core.control",
    "ControllerConfig": "esper_core.control",
    "Decision": "esper_core.control",
    "Governor": "esper_core.governor",
    "Verdict": "esper_core.governor",
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
