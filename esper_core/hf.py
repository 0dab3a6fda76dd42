"""Hugging Face ``transformers`` models that keep their lifecycle through ``save_pretrained``.

A ``transformers`` model with injected slots saves and loads with its library's own calls,
but those know nothing of slots: ``model.save_pretrained`` writes the seeds' tensors among
the host's and drops every slot's lifecycle envelope (a string, not a tensor), and
``Model.from_pretrained`` returns the plain class, discarding the seed tensors as unexpected
keys. The two calls here are the pair that keeps everything:

* :func:`save_pretrained` writes the host with ``model.save_pretrained`` (without the slots:
  the directory loads as a plain model anywhere, with ``from_pretrained`` alone) and the
  slots as a seed-only checkpoint (:mod:`esper_core.seed_checkpoint`) named
  :data:`SEEDS_FILENAME` beside it;
* :func:`from_pretrained` loads the host with ``model_class.from_pretrained`` and puts the
  slots back on it, lifecycle and all.

To share only the seeds (PEFT's adapter workflow), use
:func:`~esper_core.seed_checkpoint.save_seeds` and
:func:`~esper_core.seed_checkpoint.load_seeds` directly. ``transformers`` is imported by the
caller, never here; ``docs/shipping.md`` has the whole recipe (targets that return tuples
or ``ModelOutput``, the ``labels=`` loss, ``generate()`` and cached decoding, fold, export).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from esper_core._injection import attached
from esper_core._names import class_name
from esper_core._wrappers import unwrap
from esper_core.errors import CheckpointError, HostError
from esper_core.inject import SLOTS_ATTRIBUTE, get_injection
from esper_core.seed_checkpoint import load_seeds, save_seeds

__all__ = ["SEEDS_FILENAME", "from_pretrained", "save_pretrained"]

#: The seed-only checkpoint :func:`save_pretrained` writes next to the host's files.
SEEDS_FILENAME = "esper_seeds.pt"


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike[str], **kwargs: Any) -> None:
    """Save a ``transformers`` model with injected slots: the host with ``model.save_pretrained``
    (``kwargs`` go to it; the slots' tensors are left out) and the slots as :data:`SEEDS_FILENAME`.

    A ``torch.compile``/DDP/``DataParallel`` wrapper is seen through: the wrapped model is
    saved (its keys carry no ``_orig_mod.``/``module.`` prefix, so the directory loads into
    the plain class). Raises :class:`HostError` when ``model`` has no injected slots, a target
    was replaced after ``inject_slots``, or it has no ``save_pretrained``.
    """
    if not isinstance(model, nn.Module):
        raise HostError(
            f"save_pretrained needs a transformers model with injected slots, got {class_name(model)}"
        )
    seen = unwrap(model)
    model = seen.module
    if get_injection(model) is None:
        raise HostError(f"{seen.describe()} has no injected slots; use its own save_pretrained")
    attached(model, "save_pretrained")
    saver = getattr(model, "save_pretrained", None)
    if not callable(saver):
        raise HostError(f"{class_name(model)} has no save_pretrained: it is not a transformers model")
    if "state_dict" in kwargs:
        raise HostError(
            "save_pretrained(state_dict=...) is not supported: the host's state comes from the model"
        )
    prefix = SLOTS_ATTRIBUTE + "."
    host_state = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    saver(save_directory, state_dict=host_state, **kwargs)
    save_seeds(model, Path(save_directory) / SEEDS_FILENAME)


def from_pretrained(
    model_class: Any,
    directory: str | os.PathLike[str],
    *,
    slot_options: Mapping[str, Any] | None = None,
    check_host_weights: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Load what :func:`save_pretrained` wrote: ``model_class.from_pretrained(directory, **kwargs)``
    with the saved slots injected and restored (``slot_options`` go to every slot, as for
    ``inject_slots``; ``check_host_weights`` as for :func:`~esper_core.seed_checkpoint.load_seeds`).

    Raises :class:`CheckpointError` when the directory has no :data:`SEEDS_FILENAME` or the
    seeds do not fit the loaded host (the host is then returned to nobody: nothing is kept).
    """
    seeds = Path(directory) / SEEDS_FILENAME
    if not seeds.is_file():
        raise CheckpointError(
            f"{str(directory)!r} has no {SEEDS_FILENAME}: it was not written by esper_core.hf.save_pretrained "
            f"(load it with {getattr(model_class, '__name__', model_class)}.from_pretrained alone)"
        )
    host = model_class.from_pretrained(directory, **kwargs)
    return load_seeds(host, seeds, check_host_weights=check_host_weights, **dict(slot_options or {}))
