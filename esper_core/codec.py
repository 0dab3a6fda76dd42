"""The one codec: lifecycle state and commands as versioned JSON.

A slot's checkpoint envelope is the codec of its :class:`~esper_core.slot_state.SlotState`
(with the slot's identity, so a file cannot be loaded into the wrong slot); the distributed
command channel sends the codec of :mod:`command values <esper_core.commands>`; the state
checksum that detects drift between ranks is computed from the same encoding. Every field's
JSON form is declared once, on the value itself (:mod:`esper_core._fields`), so there is no
second list of fields to keep in step.

Envelope, version 2 (``state_text`` writes it compactly, keys in this order)::

    {"version": 2, "slot_id": str, "topology": str, "dim": int,
     "state": {"stage": int, "previous_stage": int, "epochs_in_stage": int, "germinations": int,
               "seed": null | {"seed_id", "blueprint", "options": {...}, "provenance": null |
                               {"distribution", "version"}, "algorithm", "ramp_epochs", "curve",
                               "germination_target", "alpha": {...}, "metrics": {...},
                               "activity": {...}, "health_issues": [...], "warned": [...],
                               "output_requires_grad", "pending_prune": null | {...},
                               "history": [int, ...]}}}

Version 1 (written until the lifecycle state became one value) is still read: it is
converted to version 2 (:mod:`esper_core._legacy`) and then checked like any other file.

Command, version 1: ``{"codec": 1, "command": "<name>", "args": {...}}`` with the names of
:data:`esper_core.commands.COMMANDS`.

Reading is strict and raises the library's error naming the dotted field
(:class:`~esper_core.errors.CheckpointError` for envelopes,
:class:`~esper_core.errors.DistributedError` for commands); writing never fails for a
valid value. Nothing here imports torch.
"""

from __future__ import annotations

import functools
import json
import json.scanner
import zlib
from typing import Any, TypeVar

import attrs

from esper_core._checks import shown
from esper_core._compiled import FAIL, reader, writer
from esper_core._fields import FieldError, Int, Str, decode_record
from esper_core.commands import COMMANDS
from esper_core.errors import CheckpointError, DistributedError, EsperError
from esper_core.metrics import ActivityState, SeedMetrics
from esper_core.slot_state import MAX_DIM, SlotConfig, SlotState

__all__ = [
    "COMMAND_CODEC_VERSION",
    "ENVELOPE_VERSION",
    "SUPPORTED_VERSIONS",
    "Envelope",
    "decode_command",
    "decode_envelope",
    "encode_command",
    "encode_envelope",
    "from_data",
    "parse_json",
    "state_checksum",
    "state_text",
    "to_data",
]

#: The envelope version this library writes.
ENVELOPE_VERSION = 2
#: The envelope versions this library reads.
SUPPORTED_VERSIONS = (1, 2)
#: The version of the command encoding.
COMMAND_CODEC_VERSION = 1

T = TypeVar("T")
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False, allow_nan=False)
_SCAN = json.scanner.make_scanner(json.JSONDecoder())
_SLOT_ID = Str(pattern=r"(?s).*\S.*", max_length=128)
_TOPOLOGY = Str(pattern=r"[a-z][a-z0-9_]*", max_length=64)
_DIM = Int(1, MAX_DIM)


def to_data(value: Any) -> dict[str, Any]:
    """Any lifecycle value (state, command, schedule, metrics, ...) as JSON data."""
    return writer(type(value))(value)


def from_data(cls: type[T], data: object, *, error: type[EsperError] = CheckpointError) -> T:
    """Read ``data`` back as a ``cls`` value; raise ``error`` naming the first bad field."""
    try:
        return _read(cls, data, "")
    except FieldError as exc:
        raise error(exc.describe("field")) from None


def _read(cls: type[T], data: object, path: str) -> T:
    """``cls`` from ``data`` by its compiled reader; data it refuses goes through the generic
    reader, which raises :class:`FieldError` naming the field (see :mod:`esper_core._compiled`)."""
    value = reader(cls)(data)
    return decode_record(cls, data, path) if value is FAIL else value


def parse_json(text: object, what: str, error: type[EsperError], expected: str = "") -> object:
    """``text`` parsed as JSON (anything but ``str``/``bytes`` is returned as it is)."""
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what} is not UTF-8 text ({exc})") from None
    if type(text) is not str:
        return text
    try:  # the scanner json.loads uses, without its whitespace trimming: a command is read on the
        # critical path of a collective. Anything it does not read whole goes to json.loads.
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError, RecursionError):
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} {shown(text, 60)} is not valid JSON ({exc}){expected}") from None


# ---- envelopes -----------------------------------------------------------------------------------


@attrs.frozen
class Envelope:
    """A decoded envelope: which slot it belongs to, and the slot's state."""

    slot_id: str
    topology: str
    dim: int
    state: SlotState


def encode_envelope(config: SlotConfig, state: SlotState) -> dict[str, Any]:
    """The envelope of ``state`` for the slot ``config`` describes, as JSON data."""
    return {
        "version": ENVELOPE_VERSION,
        "slot_id": config.slot_id,
        "topology": config.topology,
        "dim": config.dim,
        "state": writer(SlotState)(state),
    }


def state_text(config: SlotConfig, state: SlotState) -> str:
    """:func:`encode_envelope` as compact JSON text: what a slot stores in ``state_dict()``."""
    return _ENCODER.encode(encode_envelope(config, state))


def decode_envelope(data: object) -> Envelope:
    """Read an envelope (JSON text or the same data as a dict) of any supported version.

    The version is checked first, so a file from a newer release is reported as such rather
    than as a list of missing or unexpected keys. Raises :class:`CheckpointError` naming the
    field (``state.seed.history[3]``), the value found and what is accepted.
    """
    data = parse_json(
        data,
        "checkpoint envelope",
        CheckpointError,
        "; expected the text written by SeedSlot.get_extra_state()",
    )
    if type(data) is not dict:
        raise CheckpointError(
            f"checkpoint field '<envelope>': got {shown(data)} ({type(data).__name__}); accepted: "
            "the JSON text or dict written by SeedSlot.get_extra_state()"
        )
    if "version" not in data:
        raise CheckpointError(
            f"checkpoint field 'version' is missing; this library reads envelope versions {list(SUPPORTED_VERSIONS)}"
        )
    version = data["version"]
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"checkpoint field 'version': got {shown(version)}; accepted: an envelope version this library "
            f"reads: {list(SUPPORTED_VERSIONS)}"
        )
    try:
        if version == 1:
            from esper_core._legacy import convert_v1

            data = convert_v1(data)
        return _decode_v2(data)
    except FieldError as exc:
        raise CheckpointError(exc.describe("checkpoint field")) from None


_ENVELOPE_KEYS = ("version", "slot_id", "topology", "dim", "state")
_ENVELOPE_KEY_SET = frozenset(_ENVELOPE_KEYS)


def _decode_v2(data: dict[str, Any]) -> Envelope:
    if data.keys() != _ENVELOPE_KEY_SET:
        expected = list(_ENVELOPE_KEYS)
        missing = [k for k in expected if k not in data]
        name = missing[0] if missing else next(k for k in data if k not in expected)
        what = "is missing" if missing else "is not part of this format"
        raise FieldError(str(name), f"{what}; the envelope has exactly the keys {expected}")
    return Envelope(
        slot_id=_SLOT_ID.decode(data["slot_id"], "slot_id"),
        topology=_TOPOLOGY.decode(data["topology"], "topology"),
        dim=_DIM.decode(data["dim"], "dim"),
        state=_read(SlotState, data["state"], "state"),
    )


# ---- commands -------------------------------------------------------------------------------------


_COMMAND_KEYS = frozenset(("codec", "command", "args"))


@functools.cache
def _command_names() -> dict[type, str]:
    return {cls: name for name, cls in COMMANDS.items()}


def encode_command(command: object) -> bytes:
    """A command value as UTF-8 JSON bytes (what the distributed channel sends)."""
    name = _command_names().get(type(command))
    if name is None:
        raise DistributedError(f"not a lifecycle command: {shown(command)}; accepted: {sorted(COMMANDS)}")
    data = {"codec": COMMAND_CODEC_VERSION, "command": name, "args": writer(type(command))(command)}
    return _ENCODER.encode(data).encode("utf-8")


def decode_command(raw: object) -> Any:
    """Read a command from :func:`encode_command`'s bytes (or text, or data).

    Raises :class:`DistributedError` naming the bad field; the command's own argument
    checks run too, so a decoded command is exactly as valid as one built locally.
    """
    data = parse_json(raw, "command", DistributedError)
    if type(data) is not dict or data.keys() != _COMMAND_KEYS:
        raise DistributedError(
            f"a command must be an object with the keys ['codec', 'command', 'args'], got {shown(data)}"
        )
    if data["codec"] != COMMAND_CODEC_VERSION or type(data["codec"]) is not int:
        raise DistributedError(
            f"command codec version {shown(data['codec'])} is not {COMMAND_CODEC_VERSION}; every rank must run "
            "the same esper-core version"
        )
    cls = COMMANDS.get(data["command"]) if type(data["command"]) is str else None
    if cls is None:
        raise DistributedError(f"unknown command {shown(data['command'])}; accepted: {sorted(COMMANDS)}")
    command = reader(cls)(data["args"])
    if command is not FAIL:
        return command
    try:  # the generic reader names the bad field
        return decode_record(cls, data["args"], "args")
    except FieldError as exc:
        raise DistributedError(exc.describe(f"command {data['command']!r} field")) from None


# ---- the drift checksum ------------------------------------------------------------------------------


def state_checksum(state: SlotState) -> int:
    """A CRC-32 of what replicas must agree on: the encoded state without per-rank measurements.

    Metrics, activity, health findings and warnings legitimately differ between ranks (each
    evaluates its own data shard), so they are blanked before encoding; everything else
    (stage, clocks, blueprint and options, algorithm, alpha schedule, pending prune,
    history) is covered.
    """
    seed = state.seed
    if seed is not None:
        seed = attrs.evolve(
            seed,
            metrics=_NO_METRICS,
            activity=_NO_ACTIVITY,
            health_issues=(),
            warned=(),
            output_requires_grad=None,
        )
        state = attrs.evolve(state, seed=seed)
    return zlib.crc32(_ENCODER.encode(writer(SlotState)(state)).encode("utf-8"))


_NO_METRICS = SeedMetrics()
_NO_ACTIVITY = ActivityState()
