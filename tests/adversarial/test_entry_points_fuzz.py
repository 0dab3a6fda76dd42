"""Fuzz every public entry point of the slot, model, injection, gates and controller with bad values.

Each trial takes a valid call, replaces one or two arguments with a bad value of any kind
(huge ints, bools, strings, NaN/inf, numpy scalars and arrays, tensors of wrong shapes,
dtypes, devices and layouts, None, objects whose repr raises...) and requires either the
library's own error with the target unchanged, or an accepted call that leaves a working,
consistent target (see ``fuzzing.py``). Seeded and bounded; the counts are printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from esper_core.alpha import AlphaCurve, BlendAlgorithm
from esper_core.codec import decode_envelope, state_checksum
from esper_core.commands import Advance, RecordAccuracy
from esper_core.gates import GateLevel, QualityGates
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

from .conftest import DIM, STAGES, example, slot_snapshot, stage_slot
from .fuzzing import Entry, run

_S = SeedStage


# ---- post-conditions of an accepted call ------------------------------------------------------------


def working_slot(slot: SeedSlot) -> None:
    """A consistent slot: its envelope reads back as its state, checksum and report work, forward runs."""
    envelope = decode_envelope(slot.lifecycle_text())
    assert envelope.state == slot.state and envelope.dim == slot.dim
    state_checksum(slot.state)
    slot.state_checksum()
    slot.report()
    x = example(slot, 3)
    y = slot(x)
    assert y.shape == x.shape and y.dtype == x.dtype and bool(torch.isfinite(y).all())
    config = slot.config
    assert type(config.isolate_blending) is bool and type(config.activity_decay) is float
    assert type(config.embargo_epochs) is int and type(config.dim) is int
    assert all(isinstance(g, GateLevel) for g in config.auto_advance)


def slot_check(target: Any, _result: Any, _kwargs: dict[str, Any]) -> None:
    working_slot(target)


def slot_entry(name: str, stage: str, call: Any, params: dict[str, Any]) -> Entry:
    return Entry(f"{stage}.{name}", lambda: stage_slot(stage), call, params, slot_snapshot, slot_check)


def _observer(_event: object) -> None:
    pass


class Pairs(Mapping):
    """A mapping whose keys may be anything, even unhashable (what a careless user might pass)."""

    def __init__(self, items: list[tuple[Any, Any]]) -> None:
        self._items = items

    def __getitem__(self, key: Any) -> Any:
        for k, v in self._items:
            if k is key or (type(k) is type(key) and k == key):
                return v
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter([k for k, _ in self._items])

    def __len__(self) -> int:
        return len(self._items)


def slot_entries(stage: str) -> list[Entry]:
    text = lambda _t: "reason"  # noqa: E731
    return [
        slot_entry(
            "germinate",
            stage,
            lambda s, k: s.germinate(**k),
            {
                "blueprint": lambda _t: "conv_light",
                "options": lambda _t: {},
                "seed_id": lambda _t: None,
                "algorithm": lambda _t: BlendAlgorithm.ADD,
                "ramp_epochs": lambda _t: 2,
                "curve": lambda _t: AlphaCurve.LINEAR,
                "alpha_target": lambda _t: 1.0,
            },
        ),
        slot_entry(
            "germinate_option",
            stage,
            lambda s, k: s.germinate("conv_light", options=Pairs([(k["name"], k["value"])])),
            {"name": lambda _t: "kernel_size", "value": lambda _t: 3},
        ),
        slot_entry("advance", stage, lambda s, k: s.advance(**k), {"target": lambda _t: None}),
        slot_entry("evaluate", stage, lambda s, k: s.evaluate(**k), {"target": lambda _t: None}),
        slot_entry("prune", stage, lambda s, k: s.prune(**k), {"reason": text, "initiator": text}),
        slot_entry(
            "schedule_prune",
            stage,
            lambda s, k: s.schedule_prune(**k),
            {
                "epochs": lambda _t: 2,
                "curve": lambda _t: AlphaCurve.LINEAR,
                "reason": text,
                "initiator": text,
            },
        ),
        slot_entry(
            "set_alpha_target",
            stage,
            lambda s, k: s.set_alpha_target(**k),
            {
                "target": lambda _t: 0.5,
                "epochs": lambda _t: 1,
                "curve": lambda _t: AlphaCurve.LINEAR,
                "algorithm": lambda _t: None,
            },
        ),
        slot_entry(
            "record_accuracy", stage, lambda s, k: s.record_accuracy(**k), {"accuracy": lambda _t: 50.0}
        ),
        slot_entry(
            "record_counterfactual",
            stage,
            lambda s, k: s.record_counterfactual(**k),
            {"contribution": lambda _t: 1.0},
        ),
        slot_entry(
            "forward",
            stage,
            lambda s, k: s(example(s), **k),
            {"alpha_override": lambda _t: torch.full((2, 1, 1, 1), 0.5)},
        ),
        slot_entry(
            "reconfigure_unknown",
            stage,
            lambda s, k: s.reconfigure(bogus=k["value"]),
            {"value": lambda _t: 3},
        ),
        slot_entry(
            "reconfigure_identity", stage, lambda s, k: s.reconfigure(dim=k["value"]), {"value": lambda _t: 8}
        ),
        *[
            slot_entry(
                f"reconfigure_{key}",
                stage,
                lambda s, k, key=key: s.reconfigure(**{key: k["value"]}),
                {"value": lambda _t, v=value: v},
            )
            for key, value in (
                ("gates", QualityGates("strict")),
                ("embargo_epochs", 3),
                ("auto_advance", (GateLevel.G1,)),
                ("isolate_blending", False),
                ("activity_decay", 0.25),
                ("max_seed_params", 10_000),
            )
        ],
        slot_entry("add_observer", stage, lambda s, k: s.add_observer(**k), {"fn": lambda _t: _observer}),
        slot_entry(
            "remove_observer", stage, lambda s, k: s.remove_observer(**k), {"fn": lambda _t: _observer}
        ),
        slot_entry(
            "build_seed",
            stage,
            lambda s, k: s.build_seed(**k),
            {"blueprint": lambda _t: "conv_light", "options": lambda _t: {}},
        ),
        slot_entry(
            "apply", stage, lambda s, k: s.apply(**k), {"command": lambda _t: RecordAccuracy(accuracy=50.0)}
        ),
        slot_entry("apply_advance", stage, lambda s, k: s.apply(Advance(**k)), {"target": lambda _t: None}),
        slot_entry(
            "restore_state",
            stage,
            lambda s, k: s.restore_state(**k),
            {"state": lambda t: t.state, "seed": lambda t: t.seed, "gate": lambda t: t.blend_gate},
        ),
        slot_entry(
            "load_state_dict",
            stage,
            lambda s, k: s.load_state_dict(**k),
            {"state_dict": lambda t: t.state_dict()},
        ),
    ]


def _construct(_target: Any, kwargs: dict[str, Any]) -> SeedSlot:
    return SeedSlot(**kwargs)


def _constructed(_target: Any, slot: SeedSlot, kwargs: dict[str, Any]) -> None:
    working_slot(slot)
    for key in ("slot_id", "topology", "dim", "embargo_epochs", "isolate_blending", "activity_decay"):
        assert getattr(slot, key) == kwargs[key], key  # nothing silently defaulted or converted


CONSTRUCTOR = Entry(
    "SeedSlot",
    lambda: None,
    _construct,
    {
        "slot_id": lambda _t: "s1",
        "topology": lambda _t: "cnn",
        "dim": lambda _t: DIM,
        "gates": lambda _t: QualityGates("permissive"),
        "embargo_epochs": lambda _t: 2,
        "auto_advance": lambda _t: (),
        "isolate_blending": lambda _t: True,
        "activity_decay": lambda _t: 0.5,
        "max_seed_params": lambda _t: 10_000,
    },
    lambda _t: None,
    _constructed,
)


def test_slot_entry_points_reject_bad_values_cleanly() -> None:
    entries = [CONSTRUCTOR] + [e for stage in STAGES for e in slot_entries(stage)]
    tally = run("slot entry points", entries, seed=1601, trials=20_000, seconds=60)
    print(tally.summary())
    assert tally.failed == 0, tally.report()
