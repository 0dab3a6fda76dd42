"""The wrappers PyTorch users put around a model, seen through or refused in one place.

``torch.compile(model)`` returns an ``OptimizedModule`` that holds the model as
``_orig_mod``; ``DistributedDataParallel`` and ``DataParallel`` hold it as ``.module``.
They nest (``torch.compile(DDP(model))``). A wrapper shares the model's parameters and
submodules but not its ``__dict__`` or its class, so what :func:`~esper_core.inject.inject_slots`
records on a model and what :class:`~esper_core.model.MorphogeneticModel` is are only seen
on the wrapped module. Every public function that takes a model asks :func:`unwrap` and
then does one of two things:

* **sees through** the wrapper: lookups, evaluation, copies and files (``evaluate_injected``,
  ``alpha_overrides``, ``plan_fold``, ``fold``, ``save_seeds``, ``esper_core.hf.save_pretrained``)
  work on the innermost module;
* **changes the parameters of the innermost module only under ``torch.compile``**
  (``inject_slots``, ``remove_slots``, ``load_seeds``): the compiled handle guards on each
  module's instance ``forward`` (:mod:`esper_core.attachment`), so it recompiles with the
  slots. Under ``DistributedDataParallel`` or ``DataParallel`` :func:`refuse_parallel` raises
  :class:`HostError`: DDP recorded the parameter set it averages when it was built, and
  ``DataParallel`` copies each module's ``__dict__`` (a slot's instance ``forward`` with it)
  onto its replicas; the slots must be there before the wrapper is built, or the wrapper
  rebuilt (:class:`~esper_core.distributed.DDPRewrapper`).

``torch._dynamo`` is not imported here: when it is not loaded, no ``OptimizedModule`` exists.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import attrs
from torch import nn

from esper_core._names import class_name
from esper_core.errors import HostError

__all__ = ["Unwrapped", "refuse_parallel", "unwrap", "wrapper_key_hint"]

_COMPILE = "torch.compile OptimizedModule"
_PARALLEL = {
    nn.parallel.DistributedDataParallel: "DistributedDataParallel",
    nn.DataParallel: "DataParallel",
}
_WHY = {
    "DistributedDataParallel": "DistributedDataParallel averages the gradients of exactly the parameters it "
    "was built with (new ones would not be averaged across ranks, removed ones would be waited for)",
    "DataParallel": "DataParallel copies each module, with the slots' instance forwards, onto its devices "
    "on every call, and the wrapper must be built around the model as it will run",
}
# Deeper nesting than this is a cycle or a bug; stop rather than loop.
_MAX_DEPTH = 16


@attrs.frozen
class Unwrapped:
    """A model and the wrappers around it.

    ``module`` is the innermost module; ``wrappers`` names each wrapper, outermost first
    (empty when ``model`` is no wrapper); ``access`` is the expression that reaches
    ``module`` from the model (``"model._orig_mod"``, ``"model.module"``, ``"model"``).
    """

    module: nn.Module
    wrappers: tuple[str, ...]
    access: str

    @property
    def parallel(self) -> str | None:
        """The first data-parallel wrapper's name, or ``None``."""
        return next((w for w in self.wrappers if w in _PARALLEL.values()), None)

    def describe(self) -> str:
        """``"Sequential inside a torch.compile OptimizedModule"`` (the inner class name alone when unwrapped)."""
        name = class_name(self.module)
        if not self.wrappers:
            return name
        return f"{name} inside {' inside '.join(f'a {w}' for w in reversed(self.wrappers))}"


def _compiled_class() -> type | None:
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return None if eval_frame is None else getattr(eval_frame, "OptimizedModule", None)


def unwrap(model: nn.Module) -> Unwrapped:
    """``model`` without its ``torch.compile``, ``DistributedDataParallel`` and ``DataParallel`` wrappers."""
    compiled = _compiled_class()
    wrappers: list[str] = []
    access = "model"
    module = model
    for _ in range(_MAX_DEPTH):
        if compiled is not None and isinstance(module, compiled):
            wrappers.append(_COMPILE)
            access += "._orig_mod"
            module = module._orig_mod
            continue
        kind = next((name for cls, name in _PARALLEL.items() if isinstance(module, cls)), None)
        if kind is None:
            break
        wrappers.append(kind)
        access += ".module"
        module = module.module
    return Unwrapped(module, tuple(wrappers), access)  # type: ignore[arg-type]


def refuse_parallel(model: nn.Module, *, caller: str, change: str) -> Unwrapped:
    """``unwrap(model)``, or :class:`HostError` when a data-parallel wrapper is among its wrappers.

    ``caller`` names the public function, ``change`` what it would do to the parameters
    (``"adding slots"``). Under ``torch.compile`` alone the innermost module is returned for
    the caller to change.
    """
    seen = unwrap(model)
    kind = seen.parallel
    if kind is None:
        return seen
    raise HostError(
        f"{caller} got a {seen.describe()}: {change} under it is refused, because {_WHY[kind]}. Call "
        f"{caller} before wrapping the model, or call {caller}({seen.access}, ...) and build the wrapper "
        "again (esper_core.DDPRewrapper rebuilds it when the parameters change); nothing was changed"
    )


#: Prefixes that wrappers put in front of every key of the module they wrap.
_KEY_PREFIXES = {"_orig_mod.": "torch.compile", "module.": "DistributedDataParallel/DataParallel"}


def wrapper_key_hint(key: str, state_dict: Mapping[str, Any]) -> str:
    """Why ``key`` may be missing: the file was saved from a wrapper whose prefix it carries,
    or ``model`` is a wrapper and the file was saved from the module inside it."""
    for prefix, wrapper in _KEY_PREFIXES.items():
        inner = key[len(prefix) :]
        if key.startswith(prefix) and inner in state_dict:
            return (
                f"; the file has {inner!r}: it was saved from the module inside the {wrapper} wrapper "
                f"this model is. Load it into that module: load_checkpoint(model.{prefix[:-1]}, state_dict)"
            )
        if prefix + key in state_dict:
            return (
                f"; the file has {prefix + key!r}: it was saved from a {wrapper} wrapper. Save the wrapped "
                f"module's state_dict (model._orig_mod / model.module), or remove the prefix with "
                f"torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state_dict, {prefix!r})"
            )
    return ""
