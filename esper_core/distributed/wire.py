"""The fixed-size binary encoding of a :class:`~esper_core.distributed.command.LifecycleCommand`.

Under a process group, rank 0 decides every lifecycle mutation and the other ranks apply
exactly what rank 0 decided. The decision travels as a command packed
into a fixed-size ``uint8`` tensor (:data:`WIRE_SIZE` bytes) with a ``struct`` layout:
numbers are stored as exact integers or IEEE float64, enums as small integer codes,
short strings as length-prefixed UTF-8 in fixed-length fields, and the blueprint as its
index in the registry's sorted list guarded by the registry version and a CRC of its key.

Why not pickle (``broadcast_object_list``): unpickling a peer's bytes is code execution,
it needs a size exchange before the payload (two collectives instead of one) and it is an
order of magnitude slower for a handful of numbers. A fixed layout is also versionable:
a peer running another wire version is rejected by :func:`decode_command` instead of
being misread.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import attrs
import torch

from esper_core.alpha import AlphaCurve
from esper_core.blend import BlendAlgorithm
from esper_core.distributed.command import MAX_OPTIONS, TEXT_LIMITS, CommandOp, LifecycleCommand
from esper_core.errors import DistributedError, LifecycleError, RegistryError
from esper_core.registry import get_blueprint, list_blueprints, registry_version
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage, stage_from_value

__all__ = ["WIRE_SIZE", "WIRE_VERSION", "Decoded", "decode_command", "encode_command", "pack_command"]

#: Bumped whenever the byte layout below changes; peers on different versions are rejected.
WIRE_VERSION = 1
_MAGIC = 0xE59E
_NONE_LEN = 255  # length byte meaning "the text is None" (distinct from the empty string)
_MAX_EXACT_INT = 2**53  # integers beyond this do not survive a float64 option slot

# Field order of the wire record. '<' = little endian, no padding, so the size is fixed.
_LAYOUT = struct.Struct(
    "<"
    "H"  # magic
    "B"  # wire version
    "B"  # op
    "B"  # status: 0 command, 1 abort (rank 0 rejected the call)
    "B"  # error class code (abort only)
    "q"  # sequence number of the call on rank 0
    "h"  # slot index, -1 for none
    "q"  # registry version (germinate only)
    "h"  # blueprint index in list_blueprints(), -1 for none
    "I"  # crc32 of "topology:name"
    "b"  # target stage value, -1 for none
    "b"  # passed: -1 none, 0 false, 1 true
    "b"  # blend algorithm code, -1 none
    "b"  # alpha curve code, -1 none
    "i"  # tempo
    "i"  # steps
    "d"  # alpha target
    "B"  # number of option values
    f"{MAX_OPTIONS}d"  # option values in declared order
    f"B{TEXT_LIMITS['seed_id']}s"
    f"B{TEXT_LIMITS['reason']}s"
    f"B{TEXT_LIMITS['initiator']}s"
)
#: Size in bytes of an encoded command (the tensor broadcast per decision).
WIRE_SIZE = _LAYOUT.size

_ALGORITHMS: tuple[BlendAlgorithm, ...] = tuple(BlendAlgorithm)
_CURVES: tuple[AlphaCurve, ...] = tuple(AlphaCurve)


# --------------------------------------------------------------------------- encoding


def _text_field(name: str, value: str | None, *, truncate: bool = False) -> tuple[int, bytes]:
    if value is None:
        return _NONE_LEN, b""
    if value == "":
        return 0, b""
    if not isinstance(value, str):
        raise LifecycleError(f"command field {name!r} must be a str, got {value!r} ({type(value).__name__})")
    raw = value.encode("utf-8")
    limit = TEXT_LIMITS[name]
    if len(raw) > limit:
        if not truncate:
            raise LifecycleError(
                f"command field {name!r} is {len(raw)} UTF-8 bytes ({value!r}); "
                f"a distributed command carries at most {limit} bytes"
            )
        raw = raw[:limit].decode("utf-8", errors="ignore").encode("utf-8")
    return len(raw), raw


@attrs.frozen
class _Table:
    """The registry's sorted blueprint list at one registry version, with lookups by key."""

    version: int
    specs: list[BlueprintSpec]
    refs: dict[str, tuple[int, int]]  # key -> (index in specs, crc32 of the key)


_CACHE: dict[str, _Table] = {}


def _table() -> _Table:
    """The current registry's :class:`_Table`, rebuilt only when the registry version changes.

    Sorting the registry computes every blueprint's parameter count; doing it once per
    registry version keeps encoding and decoding a command in the microseconds.
    """
    version = registry_version()
    table = _CACHE.get("table")
    if table is None or table.version != version:
        specs = list_blueprints()
        table = _Table(version, specs, {s.key: (i, _crc(s)) for i, s in enumerate(specs)})
        _CACHE["table"] = table
    return table


def _crc(spec: BlueprintSpec) -> int:
    return zlib.crc32(spec.key.encode("utf-8"))


def _encode_option(spec: BlueprintSpec, name: str, value: Any) -> float:
    declared = spec.option(name)
    if declared.type is str:
        if declared.choices is None:
            raise LifecycleError(
                f"option {name!r} of {spec.key} is a free-form string ({value!r}); distributed "
                "commands carry string options only when the option declares choices"
            )
        return float(declared.choices.index(value))
    if declared.type is bool:
        return 1.0 if value else 0.0
    if declared.type is int and abs(value) > _MAX_EXACT_INT:
        raise LifecycleError(
            f"option {name!r}={value!r} of {spec.key} exceeds 2**53 and cannot be sent exactly"
        )
    return float(value)


def _encode_options(command: LifecycleCommand) -> tuple[int, int, int, list[float]]:
    if command.topology is None or command.blueprint is None:
        raise LifecycleError("a germinate command needs a topology and a blueprint name; got None")
    spec = get_blueprint(command.topology, command.blueprint)
    resolved = spec.resolve_options(command.options_dict())
    if len(spec.options) > MAX_OPTIONS:
        raise LifecycleError(
            f"{spec.key} declares {len(spec.options)} options; distributed commands carry at most {MAX_OPTIONS}"
        )
    values = [_encode_option(spec, opt.name, resolved[opt.name]) for opt in spec.options]
    table = _table()
    ref = table.refs.get(spec.key)
    if ref is None:  # pragma: no cover - get_blueprint found it, so the sorted list has it
        raise RegistryError(f"blueprint {spec.key} is not in the sorted registry list")
    return table.version, *ref, values


def _code(members: tuple[Any, ...], value: Any, what: str) -> int:
    if value is None:
        return -1
    if value not in members:
        raise LifecycleError(f"{what} must be one of {[m.name for m in members]} or None, got {value!r}")
    return members.index(value)


_INT_BOUNDS = {bits: (-(1 << (bits - 1)), 1 << (bits - 1)) for bits in (16, 32, 64)}


def _int(name: str, value: object, bits: int) -> int:
    low, high = _INT_BOUNDS[bits]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
        raise LifecycleError(f"command field {name!r} must be a {bits}-bit int, got {value!r}")
    return value


def pack_command(command: LifecycleCommand, *, seq: int = 0, error: tuple[int, str] | None = None) -> bytes:
    """Pack ``command`` into :data:`WIRE_SIZE` bytes (what :func:`encode_command` wraps).

    ``seq`` is the caller's call counter (checked by the receiver). ``error`` turns the
    record into an abort: ``(error_code, message)`` tells the other ranks that rank 0
    rejected the call, so they raise instead of waiting for a command that never comes.
    Raises :class:`~esper_core.errors.LifecycleError` (or the registry's error for an
    unknown blueprint or bad option) when a field cannot be represented.
    """
    registry, bp_index, bp_crc, option_values = 0, -1, 0, []
    if command.op is CommandOp.GERMINATE and error is None:
        registry, bp_index, bp_crc, option_values = _encode_options(command)
    alpha = command.alpha_target
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise LifecycleError(f"alpha_target must be finite, got {command.alpha_target!r}")
    reason = command.reason if error is None else error[1]
    return _LAYOUT.pack(
        _MAGIC,
        WIRE_VERSION,
        int(command.op),
        0 if error is None else 1,
        0 if error is None else error[0],
        _int("seq", seq, 64),
        _int("slot", command.slot, 16),
        registry,
        bp_index,
        bp_crc,
        -1 if command.target_stage is None else int(stage_from_value(command.target_stage)),
        -1 if command.passed is None else int(bool(command.passed)),
        _code(_ALGORITHMS, command.algorithm, "algorithm"),
        _code(_CURVES, command.curve, "curve"),
        _int("tempo", command.tempo, 32),
        _int("steps", command.steps, 32),
        float(alpha),
        len(option_values),
        *option_values,
        *([0.0] * (MAX_OPTIONS - len(option_values))),
        *_text_field("seed_id", command.seed_id),
        *_text_field("reason", reason, truncate=error is not None),
        *_text_field("initiator", command.initiator),
    )


def encode_command(
    command: LifecycleCommand, *, seq: int = 0, error: tuple[int, str] | None = None
) -> torch.Tensor:
    """:func:`pack_command` as a ``uint8`` tensor of :data:`WIRE_SIZE` values (what a collective sends)."""
    return torch.frombuffer(bytearray(pack_command(command, seq=seq, error=error)), dtype=torch.uint8)


# --------------------------------------------------------------------------- decoding


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    if tensor.dtype != torch.uint8 or tensor.numel() != WIRE_SIZE:
        raise DistributedError(
            f"a command record is {WIRE_SIZE} uint8 values, got {tensor.numel()} of {tensor.dtype}"
        )
    return tensor.detach().cpu().contiguous().numpy().tobytes()


@attrs.frozen
class Decoded:
    """A decoded record: the command, rank 0's sequence number and the abort info, if any."""

    command: LifecycleCommand
    seq: int
    error: tuple[int, str] | None


def _text(name: str, length: int, raw: bytes) -> str | None:
    if length == _NONE_LEN:
        return None
    if length == 0:
        return ""
    if length > TEXT_LIMITS[name]:
        raise DistributedError(
            f"corrupt command: field {name!r} claims {length} bytes (limit {TEXT_LIMITS[name]})"
        )
    try:
        return raw[:length].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DistributedError(f"corrupt command: field {name!r} is not UTF-8 ({exc})") from None


_OPS = {op.value: op for op in CommandOp}
_STAGES = {stage.value: stage for stage in SeedStage}


def _op_and_stage(op: int, stage: int) -> tuple[CommandOp, SeedStage | None]:
    if op in _OPS and (stage == -1 or stage in _STAGES):  # the common case, without exceptions
        return _OPS[op], None if stage == -1 else _STAGES[stage]
    try:
        return CommandOp(op), stage_from_value(stage)
    except (ValueError, LifecycleError) as exc:
        raise DistributedError(f"corrupt command: {exc}") from None


def _member(members: tuple[Any, ...], code: int, what: str) -> Any:
    if code == -1:
        return None
    if not 0 <= code < len(members):
        raise DistributedError(f"corrupt command: {what} code {code}; accepted 0..{len(members) - 1} or -1")
    return members[code]


def _decode_option(spec: BlueprintSpec, declared: Any, raw: float) -> Any:
    if declared.type is float:
        if not math.isfinite(raw):
            raise DistributedError(f"corrupt command: option {declared.name!r} of {spec.key} is {raw!r}")
        return raw
    if not math.isfinite(raw) or raw != int(raw):
        raise DistributedError(
            f"corrupt command: option {declared.name!r} of {spec.key} is {raw!r}, not an integer"
        )
    value = int(raw)
    if declared.type is bool:
        return value != 0
    if declared.type is int:
        return value
    choices = declared.choices or ()
    if not 0 <= value < len(choices):
        raise DistributedError(
            f"corrupt command: option {declared.name!r} of {spec.key} has choice index {value}; "
            f"accepted 0..{len(choices) - 1}"
        )
    return choices[value]


def _decode_blueprint(
    version: int, index: int, crc: int, values: tuple[float, ...]
) -> tuple[BlueprintSpec, dict]:
    table = _table()
    if version != table.version:
        raise DistributedError(
            f"rank 0 encoded the blueprint with registry version {version}, this rank has version "
            f"{table.version}: every rank must load the same blueprint packs in the same order"
        )
    specs = table.specs
    if not 0 <= index < len(specs) or table.refs[specs[index].key][1] != crc:
        raise DistributedError(
            f"blueprint index {index} (crc {crc:#010x}) does not name the same blueprint on this rank; "
            f"this rank has {len(specs)} blueprints"
        )
    spec = specs[index]
    if len(values) != len(spec.options):
        raise DistributedError(
            f"rank 0 sent {len(values)} option values for {spec.key}, which declares {len(spec.options)} here"
        )
    options = {
        declared.name: _decode_option(spec, declared, raw)
        for declared, raw in zip(spec.options, values, strict=True)
    }
    return spec, options


def decode_command(record: torch.Tensor | bytes | bytearray | memoryview) -> Decoded:
    """Unpack a record made by :func:`encode_command` or :func:`pack_command`.

    ``record`` is the ``uint8`` tensor or its bytes. A malformed record raises
    :class:`~esper_core.errors.DistributedError`, never anything else.
    """
    if isinstance(record, torch.Tensor):
        record = _tensor_bytes(record)
    elif not isinstance(record, (bytes, bytearray, memoryview)):
        raise DistributedError(f"a command record is a uint8 tensor or bytes, got {type(record).__name__}")
    if len(record) != WIRE_SIZE:
        raise DistributedError(f"a command record is {WIRE_SIZE} bytes, got {len(record)}")
    fields = _LAYOUT.unpack(record)
    (magic, version, op, status, err_code, seq, slot, reg, bp_index, bp_crc, stage, passed, alg, curve,
     tempo, steps, alpha, n_opts) = fields[:18]  # fmt: skip
    option_values = fields[18 : 18 + MAX_OPTIONS]
    seed_len, seed_raw, reason_len, reason_raw, init_len, init_raw = fields[18 + MAX_OPTIONS :]
    if magic != _MAGIC or version != WIRE_VERSION:
        raise DistributedError(
            f"command record has magic {magic:#06x} version {version}; this rank speaks "
            f"magic {_MAGIC:#06x} version {WIRE_VERSION}"
        )
    op, target_stage = _op_and_stage(op, stage)
    if status not in (0, 1):
        raise DistributedError(f"corrupt command: status {status}; accepted 0 (command) or 1 (abort)")
    reason = _text("reason", reason_len, reason_raw)
    if status == 1:
        return Decoded(LifecycleCommand(op=op, slot=slot), seq, (err_code, reason or ""))
    if n_opts > MAX_OPTIONS:
        raise DistributedError(f"corrupt command: {n_opts} options (limit {MAX_OPTIONS})")
    topology = blueprint = None
    options: dict[str, Any] | tuple = ()
    if op is CommandOp.GERMINATE:
        spec, options = _decode_blueprint(reg, bp_index, bp_crc, option_values[:n_opts])
        topology, blueprint = spec.topology, spec.name
    command = LifecycleCommand(
        op=op,
        slot=slot,
        topology=topology,
        blueprint=blueprint,
        options=options,
        seed_id=_text("seed_id", seed_len, seed_raw),
        algorithm=_member(_ALGORITHMS, alg, "algorithm"),
        curve=_member(_CURVES, curve, "curve"),
        tempo=tempo,
        steps=steps,
        alpha_target=alpha,
        target_stage=target_stage,
        passed=None if passed == -1 else bool(passed),
        reason=reason or "",
        initiator=_text("initiator", init_len, init_raw) or "",
    )
    return Decoded(command, seq, None)
