"""The fixed-size command codec, in one process (no process group needed)."""

from __future__ import annotations

import struct

import pytest
import torch
from dist_probe import PROBE
from hypothesis import given
from hypothesis import strategies as st

from esper_core import Option
from esper_core.alpha import AlphaCurve
from esper_core.blend import BlendAlgorithm
from esper_core.distributed import (
    TEXT_LIMITS,
    WIRE_SIZE,
    CommandOp,
    LifecycleCommand,
    decode_command,
    encode_command,
    pack_command,
)
from esper_core.errors import DistributedError, LifecycleError, OptionError, UnknownBlueprintError
from esper_core.registry import temporary_blueprints
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage


@pytest.fixture(autouse=True)
def probe_registered():
    with temporary_blueprints(PROBE):
        yield


def _text(limit: int):
    return st.text(max_size=limit).filter(lambda s: len(s.encode("utf-8")) <= limit)


_NON_GERMINATE = [op for op in CommandOp if op is not CommandOp.GERMINATE]

commands = st.builds(
    LifecycleCommand,
    op=st.sampled_from(_NON_GERMINATE),
    slot=st.integers(-1, 2**15 - 1),
    seed_id=st.none() | _text(TEXT_LIMITS["seed_id"]),
    algorithm=st.none() | st.sampled_from(BlendAlgorithm),
    curve=st.none() | st.sampled_from(AlphaCurve),
    tempo=st.integers(-(2**31), 2**31 - 1),
    steps=st.integers(-(2**31), 2**31 - 1),
    alpha_target=st.floats(allow_nan=False, allow_infinity=False),
    target_stage=st.none() | st.sampled_from(SeedStage),
    passed=st.none() | st.booleans(),
    reason=_text(TEXT_LIMITS["reason"]),
    initiator=_text(TEXT_LIMITS["initiator"]),
)


@given(commands, st.integers(0, 2**62))
def test_round_trip_is_exact_and_fixed_size(command: LifecycleCommand, seq: int) -> None:
    wire = encode_command(command, seq=seq)
    assert wire.dtype == torch.uint8 and wire.shape == (WIRE_SIZE,)
    decoded = decode_command(wire)
    assert decoded.command == command
    assert decoded.seq == seq and decoded.error is None
    assert struct.pack("<d", decoded.command.alpha_target) == struct.pack("<d", command.alpha_target)
    raw = pack_command(command, seq=seq)  # the bytes form is the same record
    assert raw == wire.numpy().tobytes()
    for form in (raw, bytearray(raw), memoryview(raw)):
        assert decode_command(form) == decoded


def test_germinate_carries_blueprint_and_every_option_type() -> None:
    command = LifecycleCommand(
        op=CommandOp.GERMINATE,
        slot=3,
        topology="cnn",
        blueprint="dist_probe",
        options={"hidden": 5, "gain": 0.1 + 0.2, "bias": False, "act": "relu"},
        seed_id="r0c0-seed-1",
        algorithm=BlendAlgorithm.MULTIPLY,
        curve=AlphaCurve.COSINE,
        tempo=9,
        alpha_target=0.625,
    )
    assert decode_command(encode_command(command)).command == command


def test_germinate_fills_in_declared_defaults() -> None:
    short = LifecycleCommand(
        op=CommandOp.GERMINATE, topology="cnn", blueprint="dist_probe", options={"hidden": 4}
    )
    decoded = decode_command(encode_command(short)).command
    assert decoded.options_dict() == {"hidden": 4, "gain": 1.0, "bias": True, "act": "tanh"}


def test_germinate_rejects_unknown_blueprint_and_bad_option() -> None:
    with pytest.raises(UnknownBlueprintError, match="nope"):
        encode_command(LifecycleCommand(op=CommandOp.GERMINATE, topology="cnn", blueprint="nope"))
    with pytest.raises(OptionError, match="hidden"):
        encode_command(
            LifecycleCommand(
                op=CommandOp.GERMINATE, topology="cnn", blueprint="dist_probe", options={"hidden": 0}
            )
        )
    with pytest.raises(LifecycleError, match="topology and a blueprint"):
        encode_command(LifecycleCommand(op=CommandOp.GERMINATE))


def test_free_form_string_option_is_rejected_by_name() -> None:
    free = BlueprintSpec(
        name="dist_free_text",
        topology="cnn",
        factory=lambda dim, label: torch.nn.Identity(),
        param_count=lambda dim, label: 0,
        description="string option without choices",
        options=(Option("label", str, "x", "free text"),),
    )
    with temporary_blueprints(free), pytest.raises(LifecycleError, match=r"'label'.*declares choices"):
        encode_command(LifecycleCommand(op=CommandOp.GERMINATE, topology="cnn", blueprint="dist_free_text"))


@pytest.mark.parametrize("field", ["seed_id", "reason", "initiator"])
def test_text_over_the_limit_names_field_and_limit(field: str) -> None:
    limit = TEXT_LIMITS[field]
    with pytest.raises(LifecycleError, match=rf"'{field}' is {limit + 1} UTF-8 bytes.*at most {limit}"):
        encode_command(
            LifecycleCommand(
                op=CommandOp.PRUNE, **{field: "é" * ((limit + 1) // 2) + "x" * ((limit + 1) % 2)}
            )
        )


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_alpha_is_rejected(bad: float) -> None:
    with pytest.raises(LifecycleError, match="alpha_target must be finite"):
        encode_command(LifecycleCommand(op=CommandOp.SET_ALPHA_TARGET, alpha_target=bad))


def test_out_of_range_int_field_is_rejected() -> None:
    with pytest.raises(LifecycleError, match="'steps' must be a 32-bit int"):
        encode_command(LifecycleCommand(op=CommandOp.SCHEDULE_PRUNE, steps=2**31))
    with pytest.raises(LifecycleError, match="'slot' must be a 16-bit int"):
        encode_command(LifecycleCommand(op=CommandOp.PRUNE, slot=40_000))
    with pytest.raises(LifecycleError, match="'seq' must be a 64-bit int"):
        encode_command(LifecycleCommand(op=CommandOp.PRUNE), seq=-(2**63) - 1)


def test_unknown_op_is_a_library_error() -> None:
    with pytest.raises(LifecycleError, match="unknown command op 99; accepted: 1=GERMINATE"):
        LifecycleCommand(op=99)


def test_abort_record_carries_code_and_truncated_message() -> None:
    message = "ü" * 100  # 200 bytes: cut at a character boundary
    decoded = decode_command(encode_command(LifecycleCommand(op=CommandOp.PRUNE), seq=4, error=(2, message)))
    assert decoded.seq == 4
    code, text = decoded.error
    assert code == 2 and message.startswith(text) and len(text.encode()) <= TEXT_LIMITS["reason"]


def test_decoder_rejects_wrong_size_dtype_magic_version_and_stage() -> None:
    good = encode_command(LifecycleCommand(op=CommandOp.ADVANCE, target_stage=SeedStage.TRAINING))
    with pytest.raises(DistributedError, match=f"{WIRE_SIZE} uint8"):
        decode_command(good[:-1])
    with pytest.raises(DistributedError, match=f"{WIRE_SIZE} uint8"):
        decode_command(good.to(torch.int64))
    with pytest.raises(DistributedError, match=f"a command record is {WIRE_SIZE} bytes, got {WIRE_SIZE + 1}"):
        decode_command(good.numpy().tobytes() + b"x")
    with pytest.raises(DistributedError, match="a uint8 tensor or bytes, got list"):
        decode_command(list(good.tolist()))
    for offset, value, pattern in (
        (0, 0, "magic"),
        (2, 99, "version"),
        (3, 42, "corrupt"),
        (4, 7, "status 7"),
    ):
        bad = good.clone()
        bad[offset] = value
        with pytest.raises(DistributedError, match=pattern):
            decode_command(bad)
    stage_offset = struct.calcsize("<HBBBBqhqhI")
    bad = good.clone()
    bad[stage_offset] = 5  # the reserved stage value
    with pytest.raises(DistributedError, match="reserved"):
        decode_command(bad)


def test_registry_version_mismatch_is_detected() -> None:
    wire = encode_command(LifecycleCommand(op=CommandOp.GERMINATE, topology="cnn", blueprint="dist_probe"))
    other = BlueprintSpec(
        name="dist_other",
        topology="cnn",
        factory=lambda dim: torch.nn.Identity(),
        param_count=lambda dim: 0,
        description="changes the registry version",
    )
    with temporary_blueprints(other), pytest.raises(DistributedError, match="registry version"):
        decode_command(wire)


@given(st.data())
def test_any_corruption_decodes_or_raises_distributed_error(data: st.DataObject) -> None:
    command = LifecycleCommand(
        op=CommandOp.GERMINATE,
        slot=1,
        topology="cnn",
        blueprint="dist_probe",
        options={"act": "relu"},
        reason="r",
    )
    wire = encode_command(command).clone()
    for _ in range(data.draw(st.integers(1, 6))):
        wire[data.draw(st.integers(0, WIRE_SIZE - 1))] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_command(wire)
    except DistributedError:
        return
    assert isinstance(decoded.command, LifecycleCommand)
