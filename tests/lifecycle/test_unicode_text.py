"""Text that cannot be written as UTF-8 (a lone surrogate, e.g. ``"\\ud800"`` from a JSON
escape) is refused wherever text enters the lifecycle: arguments, checkpoint envelopes,
commands from a peer, blueprint options. Accepted, it broke every sink and ``report()``
printing later, far from its source."""

from __future__ import annotations

import json

import pytest

from esper_core import CheckpointError, LifecycleError, QualityGates, SeedSlot
from esper_core.codec import decode_command, decode_envelope, encode_command
from esper_core.commands import Prune
from esper_core.errors import DistributedError

LONE = "\ud800"


def _slot() -> SeedSlot:
    slot = SeedSlot("s", topology="cnn", dim=8, gates=QualityGates("permissive"))
    slot.germinate("conv_light")
    return slot


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.prune(f"bad {LONE}", "user"),
        lambda s: s.schedule_prune(2, reason="ok", initiator=LONE + "x"),
    ],
)
def test_arguments_with_a_lone_surrogate_are_refused(call) -> None:
    slot = _slot()
    before = slot.lifecycle_text()
    with pytest.raises(LifecycleError, match="valid Unicode"):
        call(slot)
    assert slot.lifecycle_text() == before


def test_germinate_refuses_a_seed_id_with_a_lone_surrogate() -> None:
    slot = SeedSlot("s", topology="cnn", dim=8, gates=QualityGates("permissive"))
    with pytest.raises(LifecycleError, match=r"seed_id .*valid Unicode"):
        slot.germinate("conv_light", seed_id="seed" + LONE)
    assert slot.seed is None


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("state", "seed", "seed_id"), "seed" + LONE),
        (("slot_id",), "s" + LONE),
        (("state", "seed", "options"), {"k" + LONE: 1}),
        (("state", "seed", "options"), {"k": "v" + LONE}),
    ],
)
def test_an_envelope_with_a_lone_surrogate_is_refused_by_field(path: tuple[str, ...], value: object) -> None:
    data = json.loads(_slot().lifecycle_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    text = json.dumps(data)  # ensure_ascii: the surrogate travels as the escape "\ud800"
    assert "\\ud800" in text
    with pytest.raises(CheckpointError, match=rf"'{'.'.join(path)}[^']*'.*valid Unicode"):
        decode_envelope(text)


def test_a_command_with_a_lone_surrogate_is_refused_by_field() -> None:
    raw = encode_command(Prune(reason="fine", initiator="user")).replace(b'"fine"', b'"fine\\ud800"')
    with pytest.raises(DistributedError, match=r"'args\.reason'.*valid Unicode"):
        decode_command(raw)
