"""The entries ``model.state_dict()`` would hold, without calling it.

``load_checkpoint`` checks every key of a checkpoint against the model before anything
changes. ``model.state_dict()`` answers that, but it also encodes every slot's lifecycle
envelope (``get_extra_state``), which the check never reads: on a resume of a six-slot
model that encoding was about a sixth of the load. This module walks the module tree as
``nn.Module.state_dict`` does (every path of a shared module, persistent buffers only,
extra state where a class defines it) and leaves out the subtrees the caller checks
itself. A model that customises how it is saved (state-dict hooks, its own
``state_dict`` or ``_save_to_state_dict``) gets ``state_dict()`` itself, so the keys are
always torch's.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["EXTRA_STATE_SUFFIX", "expected_entries", "walk"]

#: Key suffix under which ``nn.Module.state_dict`` stores a module's extra state.
EXTRA_STATE_SUFFIX = "_extra_state"

_TORCH_SAVE = nn.Module._save_to_state_dict
_TORCH_STATE_DICT = nn.Module.state_dict
_TORCH_EXTRA = nn.Module.get_extra_state


def _plain(module: nn.Module) -> bool:
    """Whether ``module`` saves exactly its parameters, persistent buffers and extra state."""
    cls = type(module)
    return (
        cls._save_to_state_dict is _TORCH_SAVE
        and cls.state_dict is _TORCH_STATE_DICT
        and not module._state_dict_hooks
        and not module._state_dict_pre_hooks
    )


def walk(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``list(model.named_modules(remove_duplicate=False))``, in the same order, without
    torch's nested generators (a load walks the tree several times; this is ~2x faster)."""
    out: list[tuple[str, nn.Module]] = []
    append = out.append

    def visit(path: str, module: nn.Module) -> None:
        append((path, module))
        for name, child in module._modules.items():
            if child is not None:
                visit(f"{path}.{name}" if path else name, child)

    visit("", model)
    return out


def expected_entries(
    model: nn.Module,
    skip: tuple[str, ...],
    skip_keys: set[str],
    modules: list[tuple[str, nn.Module]] | None = None,
) -> dict[str, Any]:
    """``model.state_dict()`` (values as tensors, not detached copies) minus every key that
    starts with one of ``skip`` or is in ``skip_keys``; the extra state of a module whose key
    is skipped is never computed. ``modules``: :func:`walk` of ``model``, when the caller
    has it already."""
    modules = walk(model) if modules is None else modules
    out: dict[str, Any] = {}
    for path, module in modules:
        if not _plain(module):  # it saves itself its own way: torch's own answer, for the whole model
            return {
                k: v for k, v in model.state_dict().items() if not k.startswith(skip) and k not in skip_keys
            }
        prefix = f"{path}." if path else ""
        if prefix.startswith(skip):
            continue
        for name, param in module._parameters.items():
            if param is not None:
                out[prefix + name] = param
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in module._non_persistent_buffers_set:
                out[prefix + name] = buffer
        key = prefix + EXTRA_STATE_SUFFIX
        if type(module).get_extra_state is not _TORCH_EXTRA and key not in skip_keys:
            out[key] = module.get_extra_state()
    # A key is skipped exactly when its module is (every ``skip`` ends with "."): no second filter.
    return out
