"""Exact weight merges: a fossilized seed that is affine in the host's features, folded into the
layer whose output it sees, so the folded model keeps the host's original architecture.

A seed is **affine along the feature axis** when ``seed(h) = A h + c`` for a ``(D, D)`` matrix
``A`` and a ``(D,)`` vector ``c`` acting on the features of each position (or pixel): the
LoRA blueprints (``A = I + up·down``, ``c = 0``) and the identity seeds. A blueprint module
says so by defining ``affine_form() -> (A, c or None)`` (``nn.Identity`` needs nothing). With
the ADD blend at amplitude ``a`` the slot outputs ``lerp(h, A h + c, a) = M h + a c`` with
``M = (1 - a) I + a A``; when ``h`` is the output of a layer that is linear in its weights
along the same axis, ``h = W x + b``, the slot's output is the layer with weight ``M W`` and
bias ``M b + a c``. That is exact in real arithmetic; the products are computed in float64
and rounded once to the parameter's dtype (PEFT's ``merge_and_unload`` makes the same
rounding).

Layers that merge (:func:`layer_problem` says why another does not): ``nn.Linear`` (output
features last), ``nn.Conv1d/2d/3d`` with ``groups=1`` (output channels on axis 1) and the
``Conv1D`` of Hugging Face ``transformers`` (GPT-2's projections, weight ``(in, out)``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esper_core._names import class_name
from esper_core.errors import FoldError
from esper_core.topology import Topology

__all__ = ["blended_affine", "layer_problem", "merge_into", "seed_affine", "shared_parameters"]

_CONVS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def seed_affine(seed: nn.Module, dim: int) -> tuple[Tensor, Tensor | None] | str:
    """``(A, c)`` with ``seed(h) = A h + c`` along the feature axis, or the reason the seed is not affine.

    ``A`` is ``(dim, dim)``, ``c`` is ``(dim,)`` or ``None``, both detached. Raises
    :class:`FoldError` when a module's ``affine_form()`` returns something else (a bug in its pack).
    """
    if isinstance(seed, nn.Identity):
        return torch.eye(dim), None
    form = getattr(seed, "affine_form", None)
    if not callable(form):
        return f"its seed ({class_name(seed)}) is not affine: its blueprint defines no affine_form()"
    result = form()
    ok = isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Tensor)
    if ok:
        weight, bias = result
        ok = tuple(weight.shape) == (dim, dim) and (
            bias is None or (isinstance(bias, Tensor) and tuple(bias.shape) == (dim,))
        )
    if not ok:
        raise FoldError(
            f"{class_name(seed)}.affine_form() must return (weight of shape ({dim}, {dim}), bias of "
            f"shape ({dim},) or None); got {_shapes(result)}"
        )
    return weight.detach(), None if bias is None else bias.detach()


def _shapes(value: object) -> str:
    if isinstance(value, Tensor):
        return f"Tensor{tuple(value.shape)}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_shapes(v) for v in value) + ")"
    return type(value).__name__


def blended_affine(weight: Tensor, bias: Tensor | None, alpha: float) -> tuple[Tensor, Tensor | None]:
    """``(M, d)`` in float64 with ``lerp(h, A h + c, alpha) = M h + d``: ``M = (1-alpha) I + alpha A``, ``d = alpha c``."""
    a = float(alpha)
    eye = torch.eye(weight.shape[0], dtype=torch.float64, device=weight.device)
    matrix = (1.0 - a) * eye + a * weight.to(torch.float64)
    return matrix, None if bias is None else a * bias.to(torch.float64)


def _is_hf_conv1d(module: nn.Module) -> bool:
    # transformers.pytorch_utils.Conv1D, recognised without importing transformers: a linear
    # layer whose weight is stored transposed, (in_features, nf).
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(getattr(module, "nf", None), int)
        and isinstance(weight, Tensor)
        and weight.dim() == 2
        and weight.shape[1] == module.nf
    )


def layer_problem(module: nn.Module, topology: Topology, dim: int, seed_bias: bool) -> str | None:
    """Why a seed on ``module``'s output cannot be merged into its weights, or ``None`` if it can."""
    axis = topology.feature_axis % topology.ndim
    name = class_name(module)
    if isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward:
        if axis != topology.ndim - 1:
            return f"{name} outputs features on the last axis, but topology {topology.name!r} has them on axis {axis}"
        out_features = module.out_features
    elif _is_hf_conv1d(module):
        if axis != topology.ndim - 1:
            return f"{name} outputs features on the last axis, but topology {topology.name!r} has them on axis {axis}"
        out_features = module.nf
    elif (
        isinstance(module, _CONVS)
        and type(module).forward is next(c for c in _CONVS if isinstance(module, c)).forward
    ):
        conv = module
        assert isinstance(conv, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        if conv.groups != 1:
            return f"{name} has groups={conv.groups}; mixing its output channels needs groups=1"
        if axis != 1 or topology.ndim != conv.weight.dim():
            return f"{name} outputs channels on axis 1 of {conv.weight.dim()}-d maps; topology {topology.name!r} is {topology.layout}"
        out_features = conv.out_channels
    else:
        return (
            f"the layer there ({name}) is not one that merges: torch.nn.Linear, torch.nn.Conv1d/2d/3d or "
            "transformers' Conv1D, each with its class's own forward"
        )
    if out_features != dim:
        return f"{name} has {out_features} output features, the slot {dim}"
    if seed_bias and getattr(module, "bias", None) is None:
        return f"the seed adds a bias but {name} has none (merging would change the architecture)"
    return None


def shared_parameters(model: nn.Module, module: nn.Module) -> list[str]:
    """Paths of parameters of other modules in ``model`` that are ``module``'s own (tied weights)."""
    own = {id(p) for p in module.parameters(recurse=False)}
    shared = []
    for path, other in model.named_modules(remove_duplicate=False):
        if other is module:
            continue
        for name, p in other.named_parameters(recurse=False):
            if id(p) in own:
                shared.append(f"{path}.{name}" if path else name)
    return shared


@torch.no_grad()
def merge_into(module: nn.Module, matrix: Tensor, shift: Tensor | None) -> None:
    """Replace ``module``'s weight ``W`` by ``M W`` and bias ``b`` by ``M b + d``, in place.

    ``module`` is one :func:`layer_problem` accepts; ``matrix`` is ``M`` (float64), ``shift``
    is ``d`` or ``None``. The parameters stay the same objects (an optimizer holding them
    stays valid); values are computed in float64 and rounded once to their dtype.
    """
    weight: Tensor = module.weight  # type: ignore[assignment]
    bias: Tensor | None = getattr(module, "bias", None)
    m = matrix.to(device=weight.device)
    w = weight.to(torch.float64)
    # transformers' Conv1D stores its weight (in, out): y = x W + b, so M acts from the right.
    merged = w @ m.T if _is_hf_conv1d(module) else torch.tensordot(m, w, dims=([1], [0]))
    weight.copy_(merged.to(weight.dtype))
    if bias is not None:
        new_bias = m @ bias.to(torch.float64)
        if shift is not None:
            new_bias = new_bias + shift.to(device=new_bias.device)
        bias.copy_(new_bias.to(bias.dtype))
