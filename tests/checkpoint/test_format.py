"""The envelope format: what the decoder accepts, and that it covers the slot's state."""

from __future__ import annotations

import io
import json
import re

import attrs
import pytest
import torch

import esper_core.slot as slot_module
from esper_core.activity import ActivityState
from esper_core.alpha import AlphaController
from esper_core.envelope import (
    ENVELOPE_VERSION,
    ActivityRecord,
    AlphaRecord,
    MetricsRecord,
    SeedRecord,
    SlotEnvelope,
    decode_envelope,
    encode_envelope,
    envelope_text,
)
from esper_core.envelope_fields import field_names
from esper_core.errors import CheckpointError
from esper_core.metrics import SeedMetrics
from esper_core.state import _clocks_text, encode_slot, slot_text

#: Slot attributes and the envelope field that carries each.
CARRIED = {
    "_stage": "stage",
    "_previous_stage": "previous_stage",
    "_ticks_in_stage": "ticks_in_stage",
    "_germinations": "germinations",
    "_seed_id": "seed.seed_id",
    "_blueprint": "seed.blueprint",
    "_options": "seed.options",
    "_algorithm": "seed.algorithm",
    "_tempo": "seed.tempo",
    "_curve": "seed.curve",
    "_germination_target": "seed.germination_target",
    "_alpha": "seed.alpha",
    "_metrics": "seed.metrics",
    "_activity": "seed.activity",
    "_health_issues": "seed.health_issues",
    "_pending_prune": "seed.pending_prune",
    "_warned": "seed.warned",
    "_output_requires_grad": "seed.output_requires_grad",
    "_stage_history": "seed.history",
    "seed": "(state_dict tensors, rebuilt from seed.blueprint + seed.options)",
    "gate_module": "(state_dict tensors, rebuilt when seed.algorithm is 'gate')",
}


def test_every_documented_slot_attribute_is_carried():
    # slot.py documents the attributes a checkpoint must carry; a new one there must get
    # a field here (and a new envelope version), or resume would silently lose it.
    lines = slot_module.__doc__.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("====")]
    rows = "\n".join(lines[rules[0] + 1 : rules[-1]])
    documented = set(re.findall(r"^``(\w+)``", rows, flags=re.MULTILINE))
    documented |= set(re.findall(r"^``\w+``, ``(\w+)``", rows, flags=re.MULTILINE))
    assert len(documented) >= 15, documented  # the table was found and parsed
    assert documented <= CARRIED.keys(), sorted(documented - CARRIED.keys())


@pytest.mark.parametrize(
    ("record", "source"),
    [
        (MetricsRecord, [a.name for a in attrs.fields(SeedMetrics)]),
        (AlphaRecord, list(AlphaController().to_dict())),
        (ActivityRecord, list(ActivityState().to_dict())),
    ],
)
def test_records_mirror_the_lifecycle_types(record, source):
    assert sorted(field_names(record)) == sorted(source)


def test_written_version_is_read(scenario):
    envelope = encode_slot(scenario("holding"))
    assert envelope["version"] == ENVELOPE_VERSION
    assert encode_envelope(decode_envelope(envelope)) == envelope


def test_state_dict_stores_the_envelope_as_its_json_text(scenario):
    slot = scenario("pending_prune")
    stored = slot.state_dict()["_extra_state"]
    assert type(stored) is str and stored == envelope_text(encode_slot(slot))
    assert json.loads(stored) == encode_slot(slot)
    assert decode_envelope(stored) == decode_envelope(encode_slot(slot))
    buffer = io.BytesIO()
    torch.save(slot.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["_extra_state"] == stored


def test_slot_writes_exactly_the_record_layout(scenario, scenario_name):
    # encode_slot builds the dict directly; decoding it into the records and encoding those
    # again must give the same text: same keys, same order, same types.
    slot = scenario(scenario_name)
    written = slot_text(slot)
    assert envelope_text(encode_envelope(decode_envelope(written))) == written
    # The cheap pre-check of a reload is part of that text (else every reload rebuilds).
    assert _clocks_text(slot) in written


def test_reloading_the_own_text_keeps_seed_gate_and_meter(scenario):
    slot = scenario("blending_gate")
    seed, gate = slot.seed, slot.gate_module
    reference = slot._meter._reference
    slot.load_state_dict(slot.state_dict())
    assert slot.seed is seed and slot.gate_module is gate
    # The weights may have changed with the tensors, so the meter's reference is taken again.
    assert slot._meter._reference is not reference and slot._meter.started


def test_envelope_text_keeps_number_types_apart():
    assert envelope_text({"a": 1, "b": 1.0, "c": True, "d": None}) == '{"a":1,"b":1.0,"c":true,"d":null}'
    assert json.loads(envelope_text({"x": 0.1 + 0.2}))["x"] == 0.1 + 0.2  # floats round-trip exactly


@pytest.mark.parametrize("text", ["", "{", '{"version": 1,}', "not json", "[1, 2"])
def test_text_that_is_not_json_is_a_checkpoint_error(text):
    with pytest.raises(CheckpointError, match=r"is not valid JSON .*SeedSlot\.get_extra_state"):
        decode_envelope(text)


@pytest.mark.parametrize("data", ["[1, 2]", "3", "null", 3, [1], None])
def test_json_or_data_that_is_not_an_object_is_a_checkpoint_error(data):
    with pytest.raises(CheckpointError, match=r"<envelope>.*JSON text or dict written by"):
        decode_envelope(data)


def test_decoded_envelope_is_made_of_frozen_records(scenario):
    decoded = decode_envelope(encode_slot(scenario("pending_prune")))
    assert isinstance(decoded, SlotEnvelope) and isinstance(decoded.seed, SeedRecord)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        decoded.stage = 1  # type: ignore[misc]


def test_version_is_checked_before_the_keys():
    # A file from a newer release is reported as such, not as a list of key differences.
    with pytest.raises(CheckpointError, match=r"'version'.*accepted: an envelope version"):
        decode_envelope({"version": 99, "whatever": 1})


def test_missing_and_extra_keys_are_listed_with_what_is_accepted(scenario):
    envelope = encode_slot(scenario("dormant"))
    del envelope["germinations"]
    with pytest.raises(CheckpointError) as info:
        decode_envelope(envelope)
    assert "'germinations' is missing" in str(info.value)
    assert "ticks_in_stage" in str(info.value)  # the accepted keys are listed
