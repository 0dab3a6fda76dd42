"""Model inputs as users hold them: one tensor, positional arguments or keyword arguments.

A model the library did not write may take one tensor (``model(x)``), several positional
arguments (``model(ids, mask)``) or keyword arguments (``model(**tokenizer(...))``, a Hugging
Face ``BatchEncoding`` is a mapping). The probe forward of
:func:`~esper_core.inject.inject_slots` and the fused evaluation pass
(:func:`~esper_core.model.evaluate_slots`) read such a value with :func:`read_inputs`:

* a ``Tensor``: the one positional argument;
* a ``tuple`` or ``list``: the positional arguments, in order (a model that takes a list as
  its one argument gets ``([a, b],)``);
* a mapping with ``str`` keys: the keyword arguments.

Anything else is refused with :class:`HostError` (wrap it in a 1-tuple to pass it as the one
argument). Messages describe inputs by type and shape (:func:`described`), never by their
contents: a tensor's values would flood the message and may be private data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import Tensor

from esper_core._checks import shown
from esper_core._outputs import describe_output
from esper_core.errors import HostError

__all__ = ["INPUTS_ACCEPTED", "Inputs", "described", "read_batch", "read_inputs"]

#: What :func:`read_inputs` accepts, for messages.
INPUTS_ACCEPTED = (
    "a Tensor (called as model(x)), a tuple or list of arguments (model(*x)) or a mapping of "
    "str names to arguments (model(**x))"
)


def described(value: object) -> str:
    """``value`` for a message: a tensor by shape, dtype and (when not dense) layout, a
    container by type and shape, anything else as :func:`~esper_core._checks.shown` cuts its
    ``repr``."""
    if isinstance(value, Tensor):
        layout = "" if value.layout is torch.strided else f" {str(value.layout).removeprefix('torch.')}"
        return f"{describe_output(value)} {value.dtype}{layout}"
    if isinstance(value, tuple | list | Mapping):
        text = describe_output(value)
        return text if len(text) <= 200 else f"{text[:197]}..."
    return shown(value)


@attrs.frozen
class Inputs:
    """The arguments of one forward call: ``model(*args, **kwargs)``."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    def call(self, fn: Callable[..., Any]) -> Any:
        return fn(*self.args, **self.kwargs)

    def named(self) -> list[tuple[str, Any]]:
        """Every argument with its name for messages (``args[0]``, ``kwargs['input_ids']``)."""
        named = [(f"args[{i}]", v) for i, v in enumerate(self.args)]
        return named + [(f"kwargs[{k!r}]", v) for k, v in self.kwargs.items()]

    def repeated(self, k: int) -> Inputs:
        """Every tensor argument repeated ``k`` times along dim 0; other arguments as they are."""

        def rep(v: Any) -> Any:
            return v.repeat(k, *([1] * (v.ndim - 1))) if isinstance(v, Tensor) else v

        return Inputs(tuple(rep(v) for v in self.args), {n: rep(v) for n, v in self.kwargs.items()})


def read_inputs(value: object, *, what: str) -> Inputs:
    """``value`` as forward arguments (module doc); :class:`HostError` naming ``what`` otherwise."""
    if isinstance(value, Tensor):
        return Inputs((value,), {})
    if isinstance(value, tuple | list):
        return Inputs(tuple(value), {})
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return Inputs((), dict(value))
    raise HostError(
        f"{what} must be {INPUTS_ACCEPTED}; got {described(value)} (wrap one argument of another "
        "kind in a 1-tuple)"
    )


def _nested_tensor_argument(value: object, depth: int = 0) -> bool:
    """Whether a non-tensor argument holds tensors (they could not be repeated with the batch)."""
    if isinstance(value, Tensor):
        return depth > 0
    if depth >= 3:
        return False
    if isinstance(value, tuple | list):
        return any(_nested_tensor_argument(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return any(_nested_tensor_argument(v, depth + 1) for v in value.values())
    return False


def read_batch(batch: object, *, single_tensor: bool = False) -> tuple[Inputs, Tensor, int]:
    """``batch``, a pair ``(inputs, targets)``, as ``(inputs, targets, batch size)``.

    ``targets`` is a dense tensor with the batch on dim 0; every tensor among the inputs must
    be dense with the same non-zero batch size on dim 0 (the evaluation repeats them along
    it); other arguments (flags, ``None``) are passed unchanged. With ``single_tensor`` the
    inputs must be one tensor (a host's ``forward(x)``). Raises :class:`HostError` naming
    the argument, its type and shape, and what is accepted.
    """
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        raise HostError(f"each batch must be a pair (inputs, targets); got {described(batch)}")
    x, y = batch
    if single_tensor and not isinstance(x, Tensor):
        raise HostError(
            f"a batch's inputs must be one Tensor here (the host's forward(x)); got {described(x)}"
        )
    inputs = read_inputs(x, what="a batch's inputs")
    if not (isinstance(y, Tensor) and y.layout is torch.strided and y.dim() > 0 and y.shape[0] > 0):
        raise HostError(
            f"a batch's targets must be a dense Tensor with a non-zero batch size on dim 0; got {described(y)}"
        )
    size = int(y.shape[0])
    for name, value in inputs.named():
        if _nested_tensor_argument(value):
            raise HostError(
                f"a batch's input {name} is {described(value)}: tensors inside a container cannot be "
                "repeated with the batch; pass each tensor as its own argument"
            )
        if isinstance(value, Tensor) and (
            value.layout is not torch.strided or value.dim() == 0 or value.shape[0] != size
        ):
            raise HostError(
                f"a batch's input {name} is {described(value)}; every input tensor must "
                f"be dense with the targets' batch size {size} on dim 0"
            )
    return inputs, y, size
