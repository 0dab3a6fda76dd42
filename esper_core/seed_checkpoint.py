"""Seed-only checkpoints: save what growth added to a host, load it onto a fresh copy of the host.

PEFT users know the workflow: a small adapter file beside a large base model that is
shared, downloaded or rebuilt separately. :func:`save_seeds` writes only the slots: every
seed's and blend gate's weights and every slot's lifecycle envelope (the same JSON text as
in a full checkpoint, :mod:`esper_core.checkpoint`), plus where the slots sit and a
fingerprint of the host. :func:`load_seeds` puts them back on a host built afresh: it
injects the same targets (or builds the same :class:`~esper_core.model.MorphogeneticModel`)
and restores every slot all-or-nothing, so the lifecycle continues where it stopped.

**The host must be the one the seeds grew on.** From HOLDING on the host is trained through
its seeds (:mod:`esper_core.isolation`), so seeds alone reproduce the grown model only on
the host weights they were saved with. The file records a SHA-256 of the host's state
(names, dtypes, shapes and bytes) and :func:`load_seeds` refuses another host unless told
``check_host_weights=False`` (a host cast to another dtype, or fine-tuned on purpose). The
host's class and the names and shapes of its state are always checked.

The file (``torch.save`` of plain data and tensors, read with ``torch.load(weights_only=True)``)
is described field by field in ``docs/checkpoints.md``; :data:`SEEDS_FORMAT` and
:data:`SEEDS_VERSION` identify it. The slots' configuration (``gates``, ``embargo_epochs``,
``auto_advance``, ...) is code, as for a full checkpoint: pass it to :func:`load_seeds` as
you passed it to ``inject_slots``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import torch
from torch import Tensor, nn

from esper_core._checks import shown
from esper_core._injection import attached
from esper_core._names import class_name
from esper_core._wrappers import refuse_parallel, unwrap
from esper_core.checkpoint import load_checkpoint
from esper_core.errors import CheckpointError, EsperError, HostError
from esper_core.inject import (
    SLOTS_ATTRIBUTE,
    InjectionTarget,
    get_injection,
    inject_slots,
    remove_slots,
)
from esper_core.model import MorphogeneticModel

__all__ = [
    "SEEDS_FORMAT",
    "SEEDS_VERSION",
    "HostFingerprint",
    "SeedsFile",
    "load_seeds",
    "read_seeds",
    "save_seeds",
]

#: The ``format`` field of a seed-only checkpoint.
SEEDS_FORMAT = "esper-seeds"
#: The version this library writes and reads.
SEEDS_VERSION = 1
_KINDS = ("injected", "morphogenetic")

PathOrFile = str | os.PathLike[str] | IO[bytes]


@attrs.frozen
class HostFingerprint:
    """Which host a seed file belongs to: its class, parameter count and two SHA-256 digests
    (``shapes``: state names and shapes; ``weights``: names, dtypes, shapes and bytes)."""

    cls: str
    parameters: int
    shapes: str
    weights: str


@attrs.frozen
class SeedsFile:
    """A seed-only checkpoint as read by :func:`read_seeds`.

    ``kind`` is ``"injected"`` (``targets`` are the :class:`InjectionTarget` values) or
    ``"morphogenetic"`` (``targets`` name the slots of a :class:`MorphogeneticModel`, ``path``
    ``None``); ``state_dict`` maps ``<slot_id>.<key>`` to the tensors and envelopes of the
    slots, as ``load_checkpoint`` takes them.
    """

    kind: str
    host: HostFingerprint
    targets: tuple[InjectionTarget, ...]
    state_dict: Mapping[str, Any]


def _host_state(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    model = unwrap(model).module
    if isinstance(model, MorphogeneticModel):
        return model.host, model.host.state_dict()
    prefix = SLOTS_ATTRIBUTE + "."
    return model, {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}


def _tensor_bytes(t: Tensor) -> bytes:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    try:
        return flat.view(torch.uint8).numpy().tobytes()
    except (RuntimeError, TypeError):  # layouts without a byte view: hash the values
        return flat.to(torch.float64).numpy().tobytes()


def fingerprint(model: nn.Module) -> HostFingerprint:
    """The :class:`HostFingerprint` of ``model``'s host (a grown model's slots left out; wrappers seen through)."""
    host, state = _host_state(model)
    shapes, weights = hashlib.sha256(), hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        shapes.update(f"{key}|{shape};".encode())
        if isinstance(value, Tensor):
            weights.update(f"{key}|{value.dtype}|{shape};".encode())
            weights.update(_tensor_bytes(value))
    slots = SLOTS_ATTRIBUTE + "."
    own = {id(p): p for name, p in host.named_parameters() if not name.startswith(slots)}
    count = sum(p.numel() for p in own.values())
    cls = type(host)
    return HostFingerprint(
        f"{cls.__module__}.{cls.__qualname__}", count, shapes.hexdigest(), weights.hexdigest()
    )


def _slots_container(model: nn.Module) -> tuple[str, nn.ModuleDict, tuple[InjectionTarget, ...]]:
    seen = unwrap(model)
    model = seen.module
    if isinstance(model, MorphogeneticModel):
        targets = tuple(
            InjectionTarget("", model.slot(s).topology, model.slot(s).dim, s) for s in model.slot_ids
        )
        return "morphogenetic", model.slots, targets
    if get_injection(model) is None:
        raise HostError(
            f"{seen.describe()} has no seed slots: save_seeds needs a MorphogeneticModel or a model "
            "with inject_slots()"
        )
    _, injection = attached(model, "save_seeds")
    targets = tuple(
        attrs.evolve(t, dim=injection.slots[t.resolved_id].dim, slot_id=t.resolved_id)
        for t in injection.targets
    )
    return "injected", injection.slots, targets


def save_seeds(model: nn.Module, file: PathOrFile) -> None:
    """Write ``model``'s slots (seed weights, lifecycle state, targets) and its host's fingerprint to ``file``.

    ``model`` is a :class:`MorphogeneticModel` or a model with injected slots, or either
    inside ``torch.compile``/DDP/``DataParallel`` (seen through: the file is the wrapped
    module's). Tensors are saved on the CPU; a path is written atomically (a temporary file,
    then a rename). Raises :class:`HostError` for a model without slots or with a target
    replaced after ``inject_slots``.
    """
    kind, slots, targets = _slots_container(model)
    host = fingerprint(model)
    data = {
        "format": SEEDS_FORMAT,
        "version": SEEDS_VERSION,
        "kind": kind,
        "host": attrs.asdict(host),
        "slots": [
            {
                "slot_id": t.slot_id,
                "path": t.path if kind == "injected" else None,
                "topology": t.topology,
                "dim": t.dim,
                "output": t.output,
            }
            for t in targets
        ],
        "state_dict": {
            k: v.detach().to("cpu") if isinstance(v, Tensor) else v for k, v in slots.state_dict().items()
        },
    }
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(data, tmp)
        os.replace(tmp, path)
    else:
        torch.save(data, file)


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if name not in data:
        raise CheckpointError(f"seed file field {where + name!r} is missing")
    value = data[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise CheckpointError(
            f"seed file field {where + name!r}: got {value!r}; accepted: {getattr(kind, '__name__', kind)}"
        )
    return value


def read_seeds(file: PathOrFile) -> SeedsFile:
    """Read and check a seed-only checkpoint (``torch.load(weights_only=True)``); changes nothing.

    Raises :class:`CheckpointError` naming the first missing or malformed field.
    """
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, EsperError):
        raise
    except Exception as exc:  # not a torch file, or objects the safe loader refuses
        # torch's own message advises weights_only=False, which would run arbitrary code from
        # an untrusted file: it is not repeated; the cause stays attached for debugging.
        raise CheckpointError(
            f"{shown(file)} is not a seed-only checkpoint torch can read safely ({type(exc).__name__}: "
            "not a torch file, or objects the weights_only loader refuses); expected a file written "
            f"by esper_core.save_seeds (format {SEEDS_FORMAT!r})"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != SEEDS_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"seed file field 'format': got {found!r}; accepted: {SEEDS_FORMAT!r}")
    version = _field(data, "version", int)
    if version != SEEDS_VERSION:
        raise CheckpointError(f"seed file field 'version': got {version}; accepted: {SEEDS_VERSION}")
    kind = _field(data, "kind", str)
    if kind not in _KINDS:
        raise CheckpointError(f"seed file field 'kind': got {kind!r}; accepted: {list(_KINDS)}")
    host = _field(data, "host", dict)
    fp = HostFingerprint(
        _field(host, "cls", str, "host."),
        _field(host, "parameters", int, "host."),
        _field(host, "shapes", str, "host."),
        _field(host, "weights", str, "host."),
    )
    targets = []
    for i, entry in enumerate(_field(data, "slots", list)):
        where = f"slots[{i}]."
        if not isinstance(entry, dict):
            raise CheckpointError(f"seed file field 'slots[{i}]': got {type(entry).__name__}; accepted: dict")
        path = entry.get("path")
        if kind == "injected" and not isinstance(path, str):
            raise CheckpointError(f"seed file field {where + 'path'!r}: got {path!r}; accepted: str")
        output = entry.get("output")
        if output is not None and (isinstance(output, bool) or not isinstance(output, int | str)):
            raise CheckpointError(
                f"seed file field {where + 'output'!r}: got {output!r}; accepted: None, int, str"
            )
        targets.append(
            InjectionTarget(
                path if isinstance(path, str) else "",
                _field(entry, "topology", str, where),
                _field(entry, "dim", int, where),
                _field(entry, "slot_id", str, where),
                output,
            )
        )
    state = _field(data, "state_dict", dict)
    return SeedsFile(kind, fp, tuple(targets), state)


def _check_host(saved: HostFingerprint, model: nn.Module, check_weights: bool) -> None:
    here = fingerprint(model)
    if here.cls != saved.cls:
        raise CheckpointError(f"the seeds were saved from a {saved.cls}; this host is a {here.cls}")
    if here.parameters != saved.parameters or here.shapes != saved.shapes:
        raise CheckpointError(
            f"this {here.cls} is not the host the seeds were saved from: {here.parameters:,} parameters "
            f"against {saved.parameters:,}, state names and shapes {'equal' if here.shapes == saved.shapes else 'differ'}"
        )
    if check_weights and here.weights != saved.weights:
        raise CheckpointError(
            "the host's weights are not the ones the seeds were saved with (SHA-256 of its state "
            f"{here.weights[:12]}... against {saved.weights[:12]}...): seeds reproduce the grown model "
            "only on its own host. Load the host the seeds grew on, or pass check_host_weights=False "
            "if the difference is intended (a host cast to another dtype, or fine-tuned)"
        )


def load_seeds(
    host: nn.Module, file: PathOrFile | SeedsFile, *, check_host_weights: bool = True, **slot_options: Any
) -> nn.Module:
    """Put the slots saved in ``file`` on ``host``, a fresh copy of the host they grew on.

    For a file of a model with injected slots, injects the saved targets into ``host`` and
    returns ``host``; for a :class:`MorphogeneticModel`'s file, returns a new
    ``MorphogeneticModel(host, slots=...)``. ``slot_options`` go to every slot, as for
    ``inject_slots``. Everything is checked first (the file, the host's class, shapes and,
    unless ``check_host_weights=False``, weights, then every envelope and tensor); a failure
    raises :class:`CheckpointError` (or :class:`HostError` for a host that already has
    slots) and leaves ``host`` as it was.

    ``host`` may be a ``torch.compile`` handle: for injected slots they go on the compiled
    module and ``host`` (the handle) is returned, as with ``inject_slots``; a
    ``MorphogeneticModel`` is built around the compiled module (compile the result). Inside
    ``DistributedDataParallel``/``DataParallel`` it raises :class:`HostError`: load the
    seeds, then wrap.
    """
    if not isinstance(host, nn.Module):
        raise HostError(f"load_seeds needs the host nn.Module, got {class_name(host)}")
    seeds = file if isinstance(file, SeedsFile) else read_seeds(file)
    seen = refuse_parallel(host, caller="load_seeds", change="adding slots")
    inner = seen.module
    if isinstance(inner, MorphogeneticModel) or get_injection(inner) is not None:
        raise HostError(f"load_seeds needs a host without slots; got a {seen.describe()} that has them")
    _check_host(seeds.host, inner, check_host_weights)
    if seeds.kind == "morphogenetic":
        model = MorphogeneticModel(inner, slots=[t.resolved_id for t in seeds.targets], **slot_options)
        load_checkpoint(model.slots, seeds.state_dict)
        return model
    slots = inject_slots(inner, seeds.targets, **slot_options)
    try:
        load_checkpoint(slots, seeds.state_dict)
    except BaseException:
        remove_slots(inner, discard_seeds=True)  # undo this call's injection: the host as it was given
        raise
    return host
