"""Building and probing the modules a slot holds, touching no slot.

The slot shell calls these before it calls the lifecycle transition: everything here either
raises (and nothing has changed) or returns new modules and plain evidence values. Module
construction follows the slot's device and dtype, so a seed in a bf16 host is a bf16 seed,
and G0's probe runs in that same dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from esper_core._checks import check_mapping
from esper_core.alpha import BlendAlgorithm
from esper_core.blend import BlendGate
from esper_core.commands import Germinate
from esper_core.errors import EsperError, LifecycleError, OptionError
from esper_core.evidence import Evidence, Probe
from esper_core.groupnorm import guard_groupnorms
from esper_core.slot_state import Provenance, SlotConfig
from esper_core.topology import Topology

__all__ = ["build_gate", "build_seed", "candidate", "parameter_count", "probe_seed", "provenance", "resolve"]


def _place(module: nn.Module, anchor: Tensor) -> nn.Module:
    """``module`` on ``anchor``'s device and (for a floating anchor) dtype; no walk when already there."""
    tensors = [*module.parameters(), *module.buffers()]
    floating = anchor.is_floating_point()
    if all(
        t.device == anchor.device and (not floating or not t.is_floating_point() or t.dtype == anchor.dtype)
        for t in tensors
    ):
        return module
    if floating:
        return module.to(device=anchor.device, dtype=anchor.dtype)
    return module.to(device=anchor.device)


def resolve(
    topology: str, blueprint: str, dim: int, options: Mapping[str, Any], max_params: int
) -> dict[str, Any]:
    """The blueprint's resolved options at ``dim``, after checking its exact size against ``max_params``.

    Raises the registry's errors (unknown blueprint, bad option) or :class:`LifecycleError`
    when the blueprint would have more than ``max_params`` parameters: decided from the
    closed-form count, before anything is allocated.
    """
    from esper_core.registry import get_blueprint

    spec = get_blueprint(topology, blueprint)
    resolved = spec.resolve(dim, check_mapping("options", options, error=OptionError))
    count = spec.count_params(dim, **resolved)
    if count > max_params:
        raise LifecycleError(
            f"{spec.key} at dim {dim} with options {resolved} has {count:,} parameters, more than this "
            f"slot's max_seed_params ({max_params:,}); choose smaller options or build the slot with a "
            "larger max_seed_params"
        )
    return resolved


def provenance(topology: str, blueprint: str) -> Provenance | None:
    """The distribution (and version) that registered ``topology:blueprint``, if known."""
    from esper_core.registry import provenance as registered_by

    source = registered_by(f"{topology}:{blueprint}")
    if not source.distribution.strip() or not source.version.strip():
        return None
    return Provenance(distribution=source.distribution[:128], version=source.version[:64])


def build_seed(
    topology: str, blueprint: str, dim: int, options: Mapping[str, Any], anchor: Tensor
) -> nn.Module:
    """Build ``blueprint`` on ``anchor``'s device and dtype, every GroupNorm guarded.

    The factory is the pack's code and may fail in any way: anything it raises (or a
    non-module it returns) becomes a :class:`LifecycleError` naming the blueprint.
    """
    from esper_core.registry import get_blueprint

    spec = get_blueprint(topology, blueprint)
    options = check_mapping("options", options, error=OptionError)
    try:
        module = spec.build(dim, **options)
    except EsperError:
        raise
    except Exception as exc:  # a pack's factory: report it as ours, naming it
        raise LifecycleError(
            f"building {spec.key} at dim {dim} with options {dict(options)} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(module, nn.Module):
        raise LifecycleError(
            f"the factory of {spec.key} returned {type(module).__name__}, not an nn.Module; "
            "a blueprint factory must return a module"
        )
    return guard_groupnorms(_place(module, anchor))


def build_gate(topology: Topology, dim: int, anchor: Tensor) -> BlendGate:
    """A fresh blend gate for the GATE algorithm, on ``anchor``'s device and dtype."""
    return _place(BlendGate.for_topology(topology, dim), anchor)


def parameter_count(*modules: nn.Module | None) -> int:
    """Parameters of ``modules`` (``None`` counts 0), whether or not they require grad."""
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


def probe_seed(module: nn.Module, topology: Topology, dim: int, anchor: Tensor) -> Probe:
    """Run ``module`` once, in eval mode and without grad, on a private random input.

    The input is drawn from a private generator (the global RNG is untouched) in the slot's
    dtype and device. G0 then checks that the output keeps the input's shape and dtype and
    that the seed left its input alone (a seed that writes into its input would change the
    host's own tensor, since the seed reads a view of it).
    """
    x = topology.example_input(
        dim, batch=2, dtype=anchor.dtype, device=anchor.device, generator=torch.Generator().manual_seed(0)
    )
    before = x.clone()
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            y = module(x)
    finally:
        for m, mode in modes:
            m.training = mode
    if not isinstance(y, Tensor):
        return Probe(shape_preserved=False, dtype_preserved=False, input_preserved=torch.equal(x, before))
    return Probe(
        shape_preserved=tuple(y.shape) == tuple(x.shape),
        dtype_preserved=y.dtype == x.dtype,
        input_preserved=torch.equal(x, before),
    )


def candidate(
    config: SlotConfig, topology: Topology, anchor: Tensor, cmd: Germinate
) -> tuple[Evidence, tuple[nn.Module, nn.Module | None]]:
    """Build and probe the seed (and blend gate) a prepared germination asks for: G0's evidence."""
    seed = build_seed(config.topology, cmd.blueprint, config.dim, cmd.options_dict, anchor)
    gate = build_gate(topology, config.dim, anchor) if cmd.algorithm is BlendAlgorithm.GATE else None
    try:
        probe = probe_seed(seed, topology, config.dim, anchor)
    except Exception as exc:  # the pack's forward: reported as ours, naming the blueprint
        raise LifecycleError(
            f"G0 could not run {config.topology}:{cmd.blueprint} on a probe input of slot "
            f"{config.slot_id!r}: {type(exc).__name__}: {exc}"
        ) from exc
    evidence = Evidence(
        trainable_params=any(p.requires_grad for p in seed.parameters()),
        param_count=parameter_count(seed, gate),
        probe=probe,
        provenance=provenance(config.topology, cmd.blueprint),
    )
    return evidence, (seed, gate)
