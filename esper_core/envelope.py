"""The slot checkpoint envelope, version 1: its records and its strict validation.

One envelope per :class:`~esper_core.slot.SeedSlot` travels as the slot's extra state in
``state_dict()`` (key ``<slot path>._extra_state``): a plain dict of primitives, stored as
its JSON text (:func:`envelope_text`). A string is one object to pickle, so a checkpoint
loads with ``torch.load(weights_only=True)`` and the restricted unpickler, which handles
every pickled object in Python, does not pay for each of the envelope's ~60 fields (a
nested dict made loading cost 4x more; see ``bench/bench_checkpoint.py``). The seed's and
the gate's *weights* travel next to it as ordinary tensors. :func:`decode_envelope`
reads the JSON text or the same envelope as a dict.

Shape of the format (every key is always written; "not measured" is an explicit ``None``)::

    version          1
    slot_id          str               must match the slot it is loaded into
    topology         str               a registered topology, equal to the slot's
    dim              int               equal to the slot's
    stage            int               a SeedStage value (not 0, not the reserved 5)
    previous_stage   int               a SeedStage value; previous -> stage must be legal
    ticks_in_stage   int >= 0
    germinations     int >= 0
    seed             None (DORMANT) or:
        seed_id, blueprint, options{...}, algorithm, tempo, curve, germination_target,
        alpha{alpha, start, target, mode, curve, steepness, steps_total, steps_done},
        metrics{epochs_total, epochs_in_stage, initial_accuracy, ..., contribution_velocity},
        activity{ema, last, samples}, health_issues[...], warned[...],
        output_requires_grad, pending_prune None | {reason, initiator},
        history {bound, stages[...]}          (never empty: the last entry is the current stage)

This module only checks *shape and types* (:func:`decode_envelope`); the checks that need
the registry or the target slot (known blueprint, matching dim, stage consistency) are in
:mod:`esper_core.state`. Changing the format means a new version number: a reader never
guesses at a file it does not know.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from esper_core.alpha import AlphaCurve, AlphaMode
from esper_core.blend import BlendAlgorithm
from esper_core.envelope_fields import (
    BOOL,
    Float,
    Int,
    ListOf,
    Nullable,
    Record,
    ScalarMap,
    Str,
    decode_record,
    encode_record,
    entry,
    fail,
)
from esper_core.errors import CheckpointError
from esper_core.stages import RESERVED_STAGE_VALUES, SeedStage

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_HISTORY_BOUND",
    "SUPPORTED_VERSIONS",
    "ActivityRecord",
    "AlphaRecord",
    "HistoryRecord",
    "MetricsRecord",
    "PendingPruneRecord",
    "SeedRecord",
    "SlotEnvelope",
    "decode_envelope",
    "encode_envelope",
    "envelope_text",
    "parse_envelope",
]

#: The version this library writes.
ENVELOPE_VERSION = 1
#: The versions this library reads.
SUPPORTED_VERSIONS = (1,)

_STAGES = tuple(s.value for s in SeedStage if s.value not in RESERVED_STAGE_VALUES)
_SLOT_STAGES = tuple(v for v in _STAGES if v != SeedStage.UNKNOWN.value)
_NAME = r"[a-z][a-z0-9_]*"
#: Any string with a non-blank character (what the slot accepts for ids and reasons).
_TEXT = r"(?s).*\S.*"
_ACC = Nullable(Float(0.0, 100.0))
_CONTRIB = Nullable(Float(-100.0, 100.0))
#: Upper bound on a stored stage history (protects the loader against absurd files).
MAX_HISTORY_BOUND = 10_000


@attrs.frozen
class AlphaRecord:
    """The amplitude schedule (:class:`~esper_core.alpha.AlphaController`)."""

    alpha: float = entry(Float(0.0, 1.0))
    start: float = entry(Float(0.0, 1.0))
    target: float = entry(Float(0.0, 1.0))
    mode: str = entry(Str(choices=tuple(m.value for m in AlphaMode)))
    curve: str = entry(Str(choices=tuple(c.value for c in AlphaCurve)))
    steepness: float = entry(Float(0.1))
    steps_total: int = entry(Int(0))
    steps_done: int = entry(Int(0))


@attrs.frozen
class MetricsRecord:
    """:class:`~esper_core.metrics.SeedMetrics`; accuracies in percentage points."""

    epochs_total: int = entry(Int(0))
    epochs_in_stage: int = entry(Int(0))
    initial_accuracy: float | None = entry(_ACC)
    current_accuracy: float | None = entry(_ACC)
    best_accuracy: float | None = entry(_ACC)
    accuracy_at_stage_start: float | None = entry(_ACC)
    accuracy_at_blending_start: float | None = entry(_ACC)
    counterfactual: float | None = entry(_CONTRIB)
    previous_counterfactual: float | None = entry(_CONTRIB)
    contribution_velocity: float | None = entry(Nullable(Float(-200.0, 200.0)))


@attrs.frozen
class ActivityRecord:
    """:class:`~esper_core.activity.ActivityState` (relative change per interval, >= 0)."""

    ema: float | None = entry(Nullable(Float(0.0)))
    last: float | None = entry(Nullable(Float(0.0)))
    samples: int = entry(Int(0))


@attrs.frozen
class PendingPruneRecord:
    """Who scheduled the prune that completes when the down-ramp reaches 0, and why."""

    reason: str = entry(Str(pattern=_TEXT))
    initiator: str = entry(Str(pattern=_TEXT))


@attrs.frozen
class HistoryRecord:
    """The bounded stage history of the seed: stages entered, oldest first, at most ``bound``."""

    bound: int = entry(Int(1, MAX_HISTORY_BOUND))
    stages: tuple[int, ...] = entry(ListOf(Int(choices=_SLOT_STAGES), max_length=MAX_HISTORY_BOUND))


@attrs.frozen
class SeedRecord:
    """Everything about the seed of a non-DORMANT slot (its weights are in the state dict)."""

    seed_id: str = entry(Str(pattern=_TEXT))
    blueprint: str = entry(Str(pattern=_NAME))
    options: tuple[tuple[str, Any], ...] = entry(ScalarMap())
    algorithm: str = entry(Str(choices=tuple(a.value for a in BlendAlgorithm)))
    tempo: int = entry(Int(1))
    curve: str = entry(Str(choices=tuple(c.value for c in AlphaCurve)))
    germination_target: float = entry(Float(0.0, 1.0))
    alpha: AlphaRecord = entry(Record(AlphaRecord))  # noqa: RUF009 (entry() is attrs.field)
    metrics: MetricsRecord = entry(Record(MetricsRecord))  # noqa: RUF009 (entry() is attrs.field)
    activity: ActivityRecord = entry(Record(ActivityRecord))  # noqa: RUF009 (entry() is attrs.field)
    health_issues: tuple[str, ...] = entry(ListOf(Str(pattern=_NAME)))
    warned: tuple[str, ...] = entry(ListOf(Str(pattern=_NAME)))
    output_requires_grad: bool | None = entry(Nullable(BOOL))
    pending_prune: PendingPruneRecord | None = entry(Nullable(Record(PendingPruneRecord)))  # noqa: RUF009 (entry() is attrs.field)
    history: HistoryRecord = entry(Record(HistoryRecord))  # noqa: RUF009 (entry() is attrs.field)


@attrs.frozen
class SlotEnvelope:
    """The whole envelope of one slot (see the module docstring for the format)."""

    version: int = entry(Int(choices=SUPPORTED_VERSIONS))
    slot_id: str = entry(Str(pattern=_TEXT))
    topology: str = entry(Str(pattern=_NAME))
    dim: int = entry(Int(1, 1 << 24))
    stage: int = entry(Int(choices=_SLOT_STAGES))
    previous_stage: int = entry(Int(choices=_STAGES))
    ticks_in_stage: int = entry(Int(0))
    germinations: int = entry(Int(0))
    seed: SeedRecord | None = entry(Nullable(Record(SeedRecord)))  # noqa: RUF009 (entry() is attrs.field)


def decode_envelope(data: object) -> SlotEnvelope:
    """Check the shape and types of a stored envelope and return it as records.

    ``data`` is the JSON text a slot writes (:func:`envelope_text`) or the same envelope as
    a dict (:func:`encode_envelope`). The version is checked first, so a file from a newer
    release is reported as such rather than as a list of missing or unexpected keys.
    """
    data = parse_envelope(data)
    if type(data) is not dict:
        raise fail("<envelope>", data, "the JSON text or dict written by SeedSlot.get_extra_state()")
    if "version" not in data:
        raise CheckpointError(
            f"checkpoint field 'version' is missing; this library reads envelope versions {list(SUPPORTED_VERSIONS)}"
        )
    version = data["version"]
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise fail("version", version, f"an envelope version this library reads: {list(SUPPORTED_VERSIONS)}")
    return decode_record(SlotEnvelope, data, "")


def parse_envelope(data: object) -> object:
    """The stored form of an envelope as data: JSON text is parsed, anything else returned as is.

    Raises :class:`~esper_core.errors.CheckpointError` for text that is not valid JSON;
    :func:`decode_envelope` checks what the data holds.
    """
    if type(data) is not str:
        return data
    text = data
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        shown = text if len(text) <= 60 else f"{text[:57]}..."
        raise CheckpointError(
            f"checkpoint envelope {shown!r} is not valid JSON ({exc}); expected the text written "
            "by SeedSlot.get_extra_state()"
        ) from None


def encode_envelope(envelope: SlotEnvelope) -> dict[str, Any]:
    """The plain-dict form of an envelope (primitive types only)."""
    return encode_record(envelope)


def envelope_text(data: Mapping[str, Any]) -> str:
    """The JSON text of an encoded envelope: what a slot stores in ``state_dict()``.

    Compact and deterministic (field order is the record's), so two envelopes are equal,
    types included (``1``, ``1.0`` and ``true`` differ), exactly when their texts are.
    Non-finite floats are written as ``NaN``/``Infinity`` so that saving never fails;
    loading rejects them wherever a finite number is required.
    """
    return _ENCODER.encode(data)


# Built once: json.dumps with any non-default argument builds a new encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
