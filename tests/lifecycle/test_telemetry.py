"""Typed events and fault-tolerant delivery through the esper_seed_event hook."""

from __future__ import annotations

import attrs
import pytest

from esper_core import hookimpl
from esper_core.registry import get_plugin_manager
from esper_core.stages import SeedStage
from esper_core.telemetry import (
    GateEvaluated,
    SeedEvent,
    SeedGerminated,
    StageChanged,
    TelemetrySinkWarning,
    emit,
    reset_reported_failures,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[SeedEvent] = []

    @hookimpl
    def esper_seed_event(self, event: SeedEvent) -> None:
        self.events.append(event)


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def esper_seed_event(self, event: SeedEvent) -> None:
        self.calls += 1
        raise RuntimeError("sink is down")


@pytest.fixture
def sinks():  # type: ignore[no-untyped-def]
    manager = get_plugin_manager()
    recorder, broken = Recorder(), Broken()
    manager.register(recorder, name="lc-recorder")
    manager.register(broken, name="lc-broken")
    reset_reported_failures()
    yield recorder, broken
    manager.unregister(name="lc-recorder")
    manager.unregister(name="lc-broken")
    reset_reported_failures()


def test_events_reach_sinks_and_a_broken_sink_is_reported_once(lc, sinks, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("ESPER_STRICT_PLUGINS", raising=False)
    recorder, broken = sinks
    slot = lc.make_slot()
    with pytest.warns(TelemetrySinkWarning, match="lc-broken") as record:
        lc.drive(slot, SeedStage.HOLDING)
    assert len([w for w in record if issubclass(w.category, TelemetrySinkWarning)]) == 1
    assert slot.stage is SeedStage.HOLDING  # the lifecycle was not broken
    assert broken.calls == len(recorder.events) > 3
    kinds = {type(e) for e in recorder.events}
    assert {GateEvaluated, SeedGerminated, StageChanged} <= kinds
    assert all(e.slot_id == "r0c0" and e.seed_id == slot.seed_id for e in recorder.events)


def test_strict_plugins_make_sink_errors_propagate(lc, sinks, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ESPER_STRICT_PLUGINS", "1")
    slot = lc.make_slot()
    with pytest.raises(RuntimeError, match="sink is down"):
        slot.germinate("lc_conv")
    # events are emitted after commit: the germination itself happened
    assert slot.stage is SeedStage.GERMINATED


def test_events_are_frozen_and_typed() -> None:
    event = StageChanged(
        slot_id="s", seed_id=None, from_stage=SeedStage.PRUNED, to_stage=SeedStage.EMBARGOED,
        alpha=0.0, epochs_in_stage=1,
    )  # fmt: skip
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.to_stage = SeedStage.DORMANT  # type: ignore[misc]
    assert isinstance(event, SeedEvent)
    emit(event)  # with no sinks registered this is a no-op


def test_gate_event_carries_tuples(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot(policy="strict")
    seen: list = []
    slot.add_observer(seen.append)
    lc.drive(slot, SeedStage.GERMINATED)
    slot.advance()
    slot.record_accuracy(10.0)
    result = slot.advance()
    gate_event = seen[-1]
    assert isinstance(gate_event, GateEvaluated) and not gate_event.passed
    assert gate_event.checks_failed == result.checks_failed and isinstance(gate_event.checks_failed, tuple)
