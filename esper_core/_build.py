"""Building and probing the modules a slot holds, touching no slot.

The slot shell calls these before it calls the lifecycle transition: everything here either
raises (and nothing has changed) or returns new modules and plain evidence values. Module
construction follows the slot's device, dtype and memory format, so a seed in a bf16 host is
a bf16 seed (and G0's probe runs in that same dtype), and a seed in a channels_last host has
channels_last weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from esper_core._checks import check_mapping
from esper_core._placement import channels_last, channels_last_strides
from esper_core.alpha import BlendAlgorithm
from esper_core.blend import BlendGate
from esper_core.commands import Germinate
from esper_core.errors import EsperError, GerminationRefusedError, LifecycleError, OptionError
from esper_core.evidence import Evidence, Probe
from esper_core.groupnorm import guard_groupnorms
from esper_core.modes import eval_mode, module_modes, restore_modes
from esper_core.slot_state import Provenance, SlotConfig, SlotState
from esper_core.stages import LIVE
from esper_core.topology import Topology

__all__ = [
    "build_gate",
    "build_seed",
    "candidate",
    "modules_for",
    "parameter_count",
    "probe_seed",
    "provenance",
    "resolve",
    "resolved",
]


def _place(module: nn.Module, anchor: Tensor) -> nn.Module:
    """``module`` on ``anchor``'s device, (for a floating anchor) dtype and memory format.

    The slot's anchor buffer carries its placement (see :mod:`esper_core._placement` for why
    the memory format matters under DDP). No walk when already in place.
    """
    tensors = [*module.parameters(), *module.buffers()]
    floating = anchor.is_floating_point()
    layout = torch.channels_last if channels_last(anchor) else None
    if all(
        t.device == anchor.device
        and (not floating or not t.is_floating_point() or t.dtype == anchor.dtype)
        and (layout is None or t.dim() != 4 or t.stride() == channels_last_strides(t.shape))
        for t in tensors
    ):
        return module
    if floating:
        return module.to(device=anchor.device, dtype=anchor.dtype, memory_format=layout)
    return module.to(device=anchor.device, memory_format=layout)


def resolved(config: SlotConfig, command: Germinate) -> Germinate:
    """``command`` with its options resolved at ``config``'s topology and dim (see :func:`resolve`)."""
    options = resolve(
        config.topology, command.blueprint, config.dim, command.options_dict, config.max_seed_params
    )
    return attrs.evolve(command, options=options)


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


def modules_for(
    state: SlotState,
    seed: nn.Module | None,
    gate: nn.Module | None,
    topology: Topology,
    dim: int,
    anchor: Tensor,
) -> tuple[nn.Module | None, nn.Module | None]:
    """The modules ``state`` needs: no seed outside live stages; a blend gate exactly for a GATE
    blend (``gate`` when given, else a fresh one on ``anchor``'s device and dtype)."""
    if state.stage not in LIVE or state.seed is None:
        return None, None
    if state.seed.algorithm is not BlendAlgorithm.GATE:
        return seed, None
    return seed, gate if gate is not None else build_gate(topology, dim, anchor)


def parameter_count(*modules: nn.Module | None) -> int:
    """Parameters of ``modules`` (``None`` counts 0), whether or not they require grad."""
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


def probe_seed(module: nn.Module, topology: Topology, dim: int, anchor: Tensor) -> Probe:
    """Run ``module`` on a private random input, in eval mode without grad and in train mode with grad.

    The input is drawn from a private generator in the slot's dtype and device. G0 then
    checks that the eval output keeps the input's shape and dtype, that it and the seed's
    parameters are finite (``Probe.nonfinite``), and that neither pass
    wrote into the input (values or version counter): the seed reads a view of the host's
    own tensor, so such a seed would change the host's features. Both modes are run because
    in-place writes often happen in one only (``nn.Dropout(inplace=True)`` writes in
    training). The probe also measures whether the eval output equals the input exactly
    (every blueprint should be the identity at birth; the slot warns when it is not).
    Nothing leaks out of the probe: every submodule gets its own mode back, the seed's buffers (BatchNorm statistics) are restored and the global RNG is not consumed.
    """
    x = topology.example_input(
        dim, batch=2, dtype=anchor.dtype, device=anchor.device, generator=torch.Generator().manual_seed(0)
    )
    before, version = x.clone(), x._version
    with eval_mode(module), torch.no_grad():
        y = module(x)
    written = x._version != version or not torch.equal(x, before)
    if not written:
        written = _writes_in_training(module, x, before)
    nonfinite = () if all(bool(torch.isfinite(p).all()) for p in module.parameters()) else ("parameters",)
    if not isinstance(y, Tensor):
        return Probe(
            shape_preserved=False, dtype_preserved=False, input_preserved=not written, nonfinite=nonfinite
        )
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        nonfinite = (*nonfinite, "output")
    shaped = tuple(y.shape) == tuple(x.shape) and y.dtype == x.dtype
    identity = shaped and torch.equal(y, before)
    error = None
    if shaped and not identity:
        diff = (y.detach().double() - before.double()).abs().max().item()
        error = diff if math.isfinite(diff) else None
    return Probe(
        shape_preserved=tuple(y.shape) == tuple(x.shape),
        dtype_preserved=y.dtype == x.dtype,
        input_preserved=not written,
        nonfinite=nonfinite,
        identity_preserved=identity,
        identity_error=error,
    )


def _writes_in_training(module: nn.Module, x: Tensor, before: Tensor) -> bool:
    """Whether a train-mode, grad-enabled forward writes into ``x`` (left as it was)."""
    buffers = [(b, b.clone()) for b in module.buffers()]
    modes = module_modes(module)
    devices = [] if x.device.type == "cpu" else [x.device]
    version = x._version
    try:
        with torch.random.fork_rng(devices=devices, device_type=x.device.type if devices else "cuda"):
            module.train()
            with torch.enable_grad():
                module(x)
    finally:
        restore_modes(modes)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    return x._version != version or not torch.equal(x, before)


def candidate(
    config: SlotConfig, topology: Topology, anchor: Tensor, cmd: Germinate
) -> tuple[Evidence, tuple[nn.Module, nn.Module | None]]:
    """Build and probe the seed (and blend gate) a prepared germination asks for: G0's evidence."""
    seed = build_seed(config.topology, cmd.blueprint, config.dim, cmd.options_dict, anchor)
    gate = build_gate(topology, config.dim, anchor) if cmd.algorithm is BlendAlgorithm.GATE else None
    try:
        probe = probe_seed(seed, topology, config.dim, anchor)
    except Exception as exc:  # the pack's forward: reported as ours, naming the blueprint
        raise GerminationRefusedError(
            f"G0 could not run {config.topology}:{cmd.blueprint} on a probe input of slot "
            f"{config.slot_id!r}: {type(exc).__name__}: {exc}",
            slot_id=config.slot_id,
            blueprint=cmd.blueprint,
            checks_failed=("probe_raised",),
        ) from exc
    evidence = Evidence(
        trainable_params=any(p.requires_grad for p in seed.parameters()),
        param_count=parameter_count(seed, gate),
        probe=probe,
        provenance=provenance(config.topology, cmd.blueprint),
    )
    return evidence, (seed, gate)
