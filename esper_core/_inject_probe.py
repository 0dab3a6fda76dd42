"""Finding injection targets in a model: a submodule by path, and the probe forward.

:func:`~esper_core.inject.inject_slots` looks every target path up with :func:`submodule`
and, when given an ``example_input``, runs :func:`probe` once to record each target's
output, from which :func:`probed_dim` reads (or checks) the target's feature width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from esper_core._batches import described, read_inputs
from esper_core._outputs import OutputKey, describe_output, select_output
from esper_core.errors import EsperError
from esper_core.hosts.base import HostError
from esper_core.modes import eval_mode
from esper_core.registry import get_topology

__all__ = ["check_declared_dim", "declared_width", "probe", "probed_dim", "submodule"]

# Layers whose constructor fixes the width of their output: the attribute that holds it and
# its axis, "channels" (axis 1, channels first) or "last" (the last axis). Subclasses
# (LazyConv2d, NonDynamicallyQuantizableLinear, the library's GroupNorm) count as their base.
_DECLARED: tuple[tuple[tuple[type[nn.Module], ...], str, str], ...] = (
    (
        (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
        "out_channels",
        "channels",
    ),
    (
        (
            nn.BatchNorm1d,
            nn.BatchNorm2d,
            nn.BatchNorm3d,
            nn.SyncBatchNorm,
            nn.InstanceNorm1d,
            nn.InstanceNorm2d,
            nn.InstanceNorm3d,
        ),
        "num_features",
        "channels",
    ),
    ((nn.GroupNorm,), "num_channels", "channels"),
    ((nn.Linear, nn.Bilinear), "out_features", "last"),
    ((nn.Embedding,), "embedding_dim", "last"),
)


def submodule(model: nn.Module, path: str) -> nn.Module:
    """``model``'s submodule at ``path``; :class:`HostError` listing the paths that exist."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        listed = names if len(names) <= 30 else [*names[:30], f"... {len(names) - 30} more"]
        raise HostError(
            f"target path {path!r} does not exist in {type(model).__name__}; submodules: {listed}"
        ) from None


def declared_width(module: nn.Module) -> tuple[str, int, str] | None:
    """The output width ``module``'s structure declares, or ``None`` when it declares none.

    Returns ``(attribute, width, axis)``: the attribute it was read from (``out_channels``),
    the width, and ``"channels"`` (axis 1) or ``"last"`` (the last axis). Known: Conv and
    ConvTranspose (1-3d), Linear, Bilinear, BatchNorm, SyncBatchNorm, InstanceNorm, GroupNorm,
    LayerNorm, RMSNorm, Embedding, and the ``Conv1D`` of Hugging Face ``transformers``
    (recognised by name and its ``nf``, so ``transformers`` is never imported here). A lazy
    layer not yet initialised (width 0) declares none.
    """
    found: tuple[str, object, str] | None = None
    for kinds, attribute, axis in _DECLARED:
        if isinstance(module, kinds):
            found = (attribute, getattr(module, attribute, None), axis)
            break
    else:
        if isinstance(module, nn.LayerNorm | nn.RMSNorm):
            shape = module.normalized_shape
            found = ("normalized_shape[-1]", shape[-1] if len(shape) else None, "last")
        elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # transformers.pytorch_utils
            found = ("nf", module.nf, "last")
    if found is None or isinstance(found[1], bool) or not isinstance(found[1], int) or found[1] < 1:
        return None
    return found[0], found[1], found[2]


def check_declared_dim(module: nn.Module, *, path: str, topology: str, dim: int) -> None:
    """Raise :class:`HostError` if the target at ``path`` declares an output width (see
    :func:`declared_width`) on the feature axis of ``topology`` other than ``dim``.

    Only the layer itself is read (a container declares nothing), and only when its
    declared axis is the topology's feature axis: channels (axis 1) for ``cnn``, the last
    axis for ``transformer``. Nothing runs, so this holds without an ``example_input``.
    """
    declared = declared_width(module)
    if declared is None:
        return
    attribute, width, axis = declared
    spec = get_topology(topology)
    index = 1 if axis == "channels" else spec.ndim - 1
    if spec.feature_axis % spec.ndim != index or width == dim:
        return
    raise HostError(
        f"dim {dim} given for {path!r} does not match its {type(module).__name__}: {attribute} is "
        f"{width}, the width on the feature axis {spec.feature_axis} of topology {spec.name!r} "
        f"{spec.layout}; pass dim={width}, or leave dim out and pass example_input=... for a probe forward"
    )


def probe(model: nn.Module, paths: list[str], example_input: Any) -> dict[str, Any]:
    """Run one forward under ``no_grad`` in eval mode and record the outputs at ``paths``.

    ``example_input`` is a tensor (``model(x)``), a tuple or list (``model(*x)``) or a
    mapping (``model(**x)``; see :func:`esper_core._batches.read_inputs`). The global RNG is
    restored afterwards (a model may draw random numbers even in eval mode), and a forward
    that fails is reported as :class:`HostError` describing the input by type and shape.
    """
    inputs = read_inputs(example_input, what="example_input")
    seen: dict[str, Any] = {}
    handles = [
        submodule(model, p).register_forward_hook(lambda _m, _a, out, p=p: seen.setdefault(p, out))
        for p in paths
    ]
    try:
        with eval_mode(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
            inputs.call(model)
    except EsperError:
        raise
    except Exception as exc:  # the user's model, run on the user's example input
        raise HostError(
            f"the probe forward of {type(model).__name__} on example_input {described(example_input)} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    return seen


def probed_dim(output: Any, ran: bool, *, path: str, topology: str, dim: int | None, key: OutputKey) -> int:
    """The feature width of the probe ``output`` of the target at ``path`` (``ran``: it ran).

    ``topology``, ``dim`` and ``key`` are the target's (:class:`~esper_core.inject.InjectionTarget`
    fields; ``key`` is its ``output``). Raises :class:`HostError` when the target did not run,
    returned no single tensor for ``key``, has the wrong number of dims for ``topology``, a
    ragged feature axis, or a width other than a given ``dim``.
    """
    if not ran:
        raise HostError(f"target {path!r} did not run during the probe forward; cannot inject there")
    if key is None and not isinstance(output, Tensor):
        raise HostError(
            f"target {path!r} returns {describe_output(output)}; a slot needs one Tensor: pass "
            f"InjectionTarget({path!r}, {topology!r}, output=...) with the index or key of "
            "the tensor the slot should see (e.g. output=0 for the first element)"
        )
    output = select_output(output, key, where=f"target {path!r}")
    spec = get_topology(topology)
    if output.dim() != spec.ndim:
        raise HostError(
            f"target {path!r} outputs shape {_shape(output)} but topology {spec.name!r} "
            f"expects {spec.ndim}-d {spec.layout}"
        )
    try:
        probed = int(output.size(spec.feature_axis))
    except RuntimeError:  # a NestedTensor ragged along the feature axis
        raise HostError(
            f"target {path!r} outputs a NestedTensor {_shape(output)} whose feature axis "
            f"{spec.feature_axis} is ragged; a slot needs one feature width"
        ) from None
    if dim is not None and dim != probed:
        raise HostError(
            f"dim {dim} given for {path!r} does not match the probe: its output has {probed} "
            f"features on axis {spec.feature_axis} of {_shape(output)}"
        )
    return probed


def _shape(tensor: Tensor) -> str:
    """``tensor``'s shape for a message; a NestedTensor's ragged sizes show as ``*``."""
    if not tensor.is_nested:
        return str(tuple(tensor.shape))
    parts = tensor.unbind()
    if not parts:
        return "(0, ...) nested"
    sizes = [
        str(parts[0].shape[a]) if len({p.shape[a] for p in parts}) == 1 else "*"
        for a in range(tensor.dim() - 1)
    ]
    return f"({len(parts)}, {', '.join(sizes)}) nested"
