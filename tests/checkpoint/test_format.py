"""The envelope format: the codec of the slot's state value, what the decoder accepts."""

from __future__ import annotations

import io
import json

import attrs
import pytest
import torch

from esper_core._fields import field_names
from esper_core.checkpoint import slot_envelope
from esper_core.codec import ENVELOPE_VERSION, Envelope, decode_envelope, encode_envelope, from_data, to_data
from esper_core.errors import CheckpointError
from esper_core.metrics import SeedMetrics
from esper_core.slot_state import SeedState, SlotState


@pytest.mark.parametrize("cls", [SlotState, SeedState, SeedMetrics])
def test_the_format_is_the_state_value_itself(cls):
    # The envelope is written from the state value's own field declarations: there is no
    # second list of fields that could fall behind (what two sync tests used to guard).
    assert field_names(cls) == [a.name for a in attrs.fields(cls)]


def test_every_state_round_trips_exactly(scenario, scenario_name):
    slot = scenario(scenario_name)
    envelope = slot_envelope(slot)
    decoded = decode_envelope(envelope)
    assert decoded.state == slot.state
    assert (decoded.slot_id, decoded.topology, decoded.dim) == (slot.slot_id, slot.topology, slot.dim)
    assert encode_envelope(slot.config, decoded.state) == envelope


def test_written_version_is_read(scenario):
    envelope = slot_envelope(scenario("holding"))
    assert envelope["version"] == ENVELOPE_VERSION == 2
    assert decode_envelope(envelope).state == scenario("holding").state


def test_state_dict_stores_the_envelope_as_its_json_text(scenario):
    slot = scenario("pending_prune")
    stored = slot.state_dict()["_extra_state"]
    assert type(stored) is str and stored == slot.lifecycle_text()
    assert json.loads(stored) == slot_envelope(slot)
    assert decode_envelope(stored) == decode_envelope(slot_envelope(slot))
    buffer = io.BytesIO()
    torch.save(slot.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["_extra_state"] == stored


def test_reloading_the_own_text_keeps_seed_gate_and_meter(scenario):
    slot = scenario("blending_gate")
    seed, gate = slot.seed, slot.blend_gate
    reference = slot._meter._reference
    slot.load_state_dict(slot.state_dict())
    assert slot.seed is seed and slot.blend_gate is gate
    # The weights may have changed with the tensors, so the meter's reference is taken again.
    assert slot._meter._reference is not reference and slot._meter.started


def test_number_types_stay_apart_and_floats_round_trip_exactly():
    metrics = SeedMetrics().record_accuracy(0.1 + 0.2)
    data = to_data(metrics)
    assert type(data["evaluations_total"]) is int and type(data["current_accuracy"]) is float
    assert from_data(SeedMetrics, json.loads(json.dumps(data))) == metrics
    with pytest.raises(CheckpointError, match="evaluations_total"):
        from_data(SeedMetrics, {**data, "evaluations_total": 1.0})
    with pytest.raises(CheckpointError, match="evaluations_total"):
        from_data(SeedMetrics, {**data, "evaluations_total": True})


@pytest.mark.parametrize("text", ["", "{", '{"version": 1,}', "not json", "[1, 2"])
def test_text_that_is_not_json_is_a_checkpoint_error(text):
    with pytest.raises(CheckpointError, match=r"is not valid JSON .*SeedSlot\.get_extra_state"):
        decode_envelope(text)


@pytest.mark.parametrize("data", ["[1, 2]", "3", "null", 3, [1], None])
def test_json_or_data_that_is_not_an_object_is_a_checkpoint_error(data):
    with pytest.raises(CheckpointError, match=r"<envelope>.*JSON text or dict written by"):
        decode_envelope(data)


def test_decoded_envelope_is_made_of_frozen_values(scenario):
    decoded = decode_envelope(slot_envelope(scenario("pending_prune")))
    assert isinstance(decoded, Envelope) and isinstance(decoded.state.seed, SeedState)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        decoded.state.stage = 1  # type: ignore[misc]


def test_version_is_checked_before_the_keys():
    # A file from a newer release is reported as such, not as a list of key differences.
    with pytest.raises(CheckpointError, match=r"'version'.*accepted: an envelope version"):
        decode_envelope({"version": 99, "whatever": 1})


def test_missing_and_extra_keys_are_listed_with_what_is_accepted(scenario):
    envelope = slot_envelope(scenario("dormant"))
    del envelope["state"]["germinations"]
    with pytest.raises(CheckpointError) as info:
        decode_envelope(envelope)
    assert "'state.germinations' is missing" in str(info.value)
    assert "epochs_in_stage" in str(info.value)  # the accepted keys are listed
    envelope = slot_envelope(scenario("dormant"))
    envelope["state"]["extra"] = 1
    with pytest.raises(CheckpointError, match=r"'state\.extra' is an unexpected key"):
        decode_envelope(envelope)
