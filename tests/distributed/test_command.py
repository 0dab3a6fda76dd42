"""The command codec the distributed channel sends, in one process (no process group needed).

The channel sends exactly what :func:`esper_core.codec.encode_command` writes for the same
command values a slot applies locally, so whatever works in one process works under
``torch.distributed``: these tests check the codec round-trips every command exactly and
rejects anything else with a ``DistributedError``.
"""

from __future__ import annotations

import json

import pytest
from dist_probe import PROBE
from hypothesis import given
from hypothesis import strategies as st

from esper_core.alpha import AlphaCurve, BlendAlgorithm
from esper_core.codec import COMMAND_CODEC_VERSION, decode_command, encode_command
from esper_core.commands import (
    COMMANDS,
    Advance,
    Germinate,
    Prune,
    RecordAccuracy,
    SchedulePrune,
    SetAlphaTarget,
    StepEpoch,
)
from esper_core.errors import DistributedError, LifecycleError
from esper_core.gates import QualityGates
from esper_core.options import Option
from esper_core.registry import temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage


@pytest.fixture(autouse=True)
def probe_registered():
    with temporary_blueprints(PROBE):
        yield


_TEXT = st.text(min_size=1, max_size=256).filter(lambda s: s.strip())
_OPTION = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=256),
)

commands = st.one_of(
    st.builds(
        Germinate,
        blueprint=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
        options=st.dictionaries(st.text(max_size=30), _OPTION, max_size=20),
        seed_id=st.none() | _TEXT,
        algorithm=st.sampled_from(BlendAlgorithm),
        ramp_epochs=st.integers(1, 2**31 - 1),
        curve=st.sampled_from(AlphaCurve),
        alpha_target=st.floats(min_value=1e-9, max_value=1.0),
    ),
    st.builds(Advance, target=st.none() | st.sampled_from([s for s in SeedStage])),
    st.builds(Prune, reason=_TEXT, initiator=_TEXT),
    st.builds(
        SchedulePrune,
        epochs=st.integers(0, 2**31 - 1),
        curve=st.sampled_from(AlphaCurve),
        reason=_TEXT,
        initiator=_TEXT,
    ),
    st.builds(
        SetAlphaTarget,
        target=st.floats(min_value=1e-9, max_value=1.0),
        epochs=st.integers(0, 2**31 - 1),
        curve=st.sampled_from(AlphaCurve),
        algorithm=st.none() | st.sampled_from(BlendAlgorithm),
    ),
    st.just(StepEpoch()),
    st.builds(RecordAccuracy, accuracy=st.floats(0.0, 100.0)),
)


@given(commands)
def test_every_command_round_trips_exactly(command) -> None:
    raw = encode_command(command)
    assert isinstance(raw, bytes)
    assert decode_command(raw) == command
    assert decode_command(raw.decode("utf-8")) == command  # text and data forms too
    assert decode_command(json.loads(raw)) == command


def test_every_command_class_has_a_codec_name() -> None:
    assert set(COMMANDS.values()) >= {Germinate, Advance, Prune, SchedulePrune, SetAlphaTarget, StepEpoch}
    for name, cls in COMMANDS.items():
        assert json.loads(encode_command(cls(**_minimal(cls))))["command"] == name


def _minimal(cls: type) -> dict:
    return {
        Germinate: {"blueprint": "x"},
        Prune: {"reason": "r", "initiator": "i"},
        SchedulePrune: {"epochs": 1, "reason": "r", "initiator": "i"},
        SetAlphaTarget: {"target": 0.5, "epochs": 1},
        RecordAccuracy: {"accuracy": 1.0},
    }.get(cls, {"contribution": 1.0} if cls.__name__ == "RecordCounterfactual" else
          {"requires_grad": True} if cls.__name__ == "ObserveOutput" else {})  # fmt: skip


def test_what_works_locally_works_on_the_wire() -> None:
    """The limits of the old fixed-size record are gone: free-form strings, many options, long text."""
    spec = BlueprintSpec(
        name="wide",
        topology="cnn",
        factory=lambda dim, **o: PROBE.factory(dim, hidden=1, gain=1.0, bias=True, act="tanh"),
        param_count=lambda dim, **o: 2 * dim + 1 + dim,
        description="many options, one free-form string",
        options=(
            *(Option(f"o{i}", int, i, "an option") for i in range(12)),
            Option("label", str, "a free-form label", "free text"),
        ),
    )
    with temporary_blueprints(spec):
        slot = SeedSlot("s", topology="cnn", dim=4, gates=QualityGates("permissive"))
        local = slot.prepare(
            Germinate(
                blueprint="wide", options={"label": "ünïcode label " * 10, "o11": 99}, seed_id="s" * 200
            )
        )
        assert decode_command(encode_command(local)) == local
        slot.apply(decode_command(encode_command(local)))
        assert slot.state.seed.options_dict["label"] == "ünïcode label " * 10


@pytest.mark.parametrize(
    "data",
    [
        {"codec": COMMAND_CODEC_VERSION, "command": "germinate", "args": {"blueprint": "x"}},  # keys missing
        {"codec": COMMAND_CODEC_VERSION, "command": "explode", "args": {}},
        {"codec": 99, "command": "step_epoch", "args": {}},
        {"codec": True, "command": "step_epoch", "args": {}},
        {"codec": COMMAND_CODEC_VERSION, "command": "advance", "args": {"target": 5}},  # reserved stage
        {"codec": COMMAND_CODEC_VERSION, "command": "prune", "args": {"reason": " ", "initiator": "i"}},
        {"codec": COMMAND_CODEC_VERSION, "command": "set_alpha_target",
         "args": {"target": float("nan"), "epochs": 1, "curve": "linear", "algorithm": None}},
        {"codec": COMMAND_CODEC_VERSION, "command": "schedule_prune",
         "args": {"epochs": 2**40, "curve": "linear", "reason": "r", "initiator": "i"}},
        [1, 2],
        "not json",
        b"\xff\xfe",
    ],
)  # fmt: skip
def test_bad_records_raise_distributed_error(data) -> None:
    with pytest.raises(DistributedError):
        decode_command(data)


def test_commands_check_their_arguments_on_construction() -> None:
    with pytest.raises(LifecycleError, match="epochs"):
        SchedulePrune(epochs=-1, reason="r", initiator="i")
    with pytest.raises(LifecycleError, match="alpha_target"):
        Germinate(blueprint="x", alpha_target=10**400)
    with pytest.raises(LifecycleError, match="ramp_epochs"):
        Germinate(blueprint="x", ramp_epochs=2**31)


@given(st.data())
def test_any_corruption_decodes_or_raises_distributed_error(data: st.DataObject) -> None:
    raw = bytearray(
        encode_command(Germinate(blueprint="dist_probe", options={"act": "relu"}, seed_id="s", ramp_epochs=3))
    )
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_command(bytes(raw))
    except DistributedError:
        return
    assert type(decoded) in COMMANDS.values()
