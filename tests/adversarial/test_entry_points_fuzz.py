"""Fuzz every public entry point of the slot, model, injection, gates and controller with bad values.

Each trial takes a valid call, replaces one or two arguments with a bad value of any kind
(huge ints, bools, strings, NaN/inf, numpy scalars and arrays, tensors of wrong shapes,
dtypes, devices and layouts, None, objects whose repr raises...) and requires either the
library's own error with the target unchanged, or an accepted call that leaves a working,
consistent target (see ``fuzzing.py``). Seeded and bounded; the counts are printed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
import torch
from torch import nn

from esper_core.alpha import AlphaCurve, BlendAlgorithm
from esper_core.checkpoint import find_slots
from esper_core.codec import decode_envelope, state_checksum
from esper_core.commands import Advance, RecordAccuracy
from esper_core.control import (
    Candidate,
    ControllerConfig,
    HeuristicController,
    Outcome,
    plateaued,
    rank_candidates,
)
from esper_core.gates import GateEvidence, GateLevel, GateThresholds, QualityGates
from esper_core.hosts import CNNHost
from esper_core.inject import InjectionTarget, alpha_overrides, evaluate_injected, inject_slots, remove_slots
from esper_core.model import Evaluation, MorphogeneticModel
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

from .conftest import DIM, STAGES, example, model_snapshot, slot_snapshot, stage_slot
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


# ---- the model -----------------------------------------------------------------------------------------

_MODELS: dict[str, MorphogeneticModel] = {}


def grown_model() -> MorphogeneticModel:
    """A small CNN model with one seed BLENDING in ``r0c1`` (built once; callers get a deep copy)."""
    if "grown" not in _MODELS:
        torch.manual_seed(3)
        model = MorphogeneticModel(CNNHost(10, n_blocks=2, base_channels=4), gates=QualityGates("permissive"))
        model.germinate("r0c1", "conv_light", ramp_epochs=2)
        slot = model.slot("r0c1")
        slot.advance()
        slot.record_accuracy(40.0)
        slot.advance()
        model.step_epoch()
        _MODELS["grown"] = model
    return copy.deepcopy(_MODELS["grown"])


def _batch(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(n)
    return [(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))]


def _score(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(dim=1) == y).float()


def working_model(model: nn.Module) -> None:
    for _prefix, slot in find_slots(model):
        decode_envelope(slot.lifecycle_text())
        slot.report()
    x = _batch()[0][0]
    with torch.no_grad():
        y = model(x)
    assert bool(torch.isfinite(y).all())


def model_check(target: Any, _result: Any, _kwargs: dict[str, Any]) -> None:
    working_model(target)


def evaluation_check(target: Any, result: Any, _kwargs: dict[str, Any]) -> None:
    working_model(target)
    assert isinstance(result, Evaluation) and math.isfinite(result.score)
    assert all(math.isfinite(v) for v in result.contributions.values())


def model_entry(name: str, call: Any, params: dict[str, Any], check: Any = model_check) -> Entry:
    return Entry(f"model.{name}", grown_model, call, params, model_snapshot, check)


def _alpha(_t: Any) -> torch.Tensor:
    return torch.full((2, 1, 1, 1), 0.5)


MODEL_ENTRIES = [
    Entry(
        "MorphogeneticModel",
        lambda: None,
        lambda _t, k: MorphogeneticModel(**k),
        {
            "host": lambda _t: CNNHost(10, n_blocks=1, base_channels=4),
            "slots": lambda _t: None,
            "gates": lambda _t: QualityGates("permissive"),
            "embargo_epochs": lambda _t: 2,
            "max_seed_params": lambda _t: 10_000,
        },
        lambda _t: None,
        lambda _t, model, _k: working_model(model),
    ),
    model_entry(
        "germinate",
        lambda m, k: m.germinate(k.pop("slot_id"), k.pop("blueprint"), **k),
        {
            "slot_id": lambda _t: "r0c0",
            "blueprint": lambda _t: "conv_light",
            "options": lambda _t: {},
            "ramp_epochs": lambda _t: 2,
            "algorithm": lambda _t: BlendAlgorithm.GATE,
        },
    ),
    model_entry("prune", lambda m, k: m.prune(**k), {"slot_id": lambda _t: "r0c1", "reason": lambda _t: "r"}),
    model_entry("slot", lambda m, k: m.slot(**k), {"slot_id": lambda _t: "r0c1"}),
    model_entry(
        "forward_with_alphas",
        lambda m, k: m.forward_with_alphas(_batch()[0][0], k["overrides"]),
        {"overrides": lambda _t: {"r0c1": _alpha(_t)}},
    ),
    model_entry(
        "forward_with_alpha",
        lambda m, k: m.forward_with_alphas(_batch()[0][0], Pairs([(k["slot_id"], k["alpha"])])),
        {"slot_id": lambda _t: "r0c1", "alpha": _alpha},
    ),
    model_entry(
        "evaluate",
        lambda m, k: m.evaluate(**k),
        {"batches": lambda _t: _batch(), "score": lambda _t: _score, "counterfactual": lambda _t: True},
        evaluation_check,
    ),
    model_entry(
        "evaluate_batch",
        lambda m, k: m.evaluate([(k["x"], k["y"])], _score),
        {"x": lambda _t: _batch()[0][0], "y": lambda _t: _batch()[0][1]},
        evaluation_check,
    ),
    model_entry(
        "evaluate_score",
        lambda m, k: m.evaluate(_batch(), lambda out, y: k["value"]),
        {"value": lambda _t: torch.ones(2)},
        evaluation_check,
    ),
    model_entry(
        "seed_param_count", lambda m, k: m.seed_param_count(**k), {"stages": lambda _t: {_S.BLENDING}}
    ),
]


# ---- injection into any nn.Module ------------------------------------------------------------------------


class Plain(nn.Module):
    """A user's own small network (Esper does not own its class)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.body = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(torch.relu(self.stem(x)))


def plain_model() -> nn.Module:
    torch.manual_seed(5)
    return Plain()


_INJECTED: dict[str, nn.Module] = {}


def injected_model() -> nn.Module:
    if "model" not in _INJECTED:
        model = plain_model()
        inject_slots(
            model, {"stem": "cnn"}, example_input=torch.zeros(1, 3, 4, 4), gates=QualityGates("permissive")
        )
        model.esper_slots["stem"].germinate("conv_light")
        _INJECTED["model"] = model
    return copy.deepcopy(_INJECTED["model"])


def injected_check(target: Any, _result: Any, _kwargs: dict[str, Any]) -> None:
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert bool(torch.isfinite(target(x)).all())
    for _prefix, slot in find_slots(target):
        decode_envelope(slot.lifecycle_text())


def _inject(model: nn.Module, k: dict[str, Any]) -> Any:
    return inject_slots(model, k.pop("targets"), example_input=k.pop("example_input"), **k)


def _inject_target(model: nn.Module, k: dict[str, Any]) -> Any:
    target = InjectionTarget(k["path"], k["topology"], dim=k["dim"], slot_id=k["slot_id"])
    return inject_slots(model, [target], example_input=torch.zeros(1, 3, 4, 4))


def _overridden(model: nn.Module, overrides: Any) -> torch.Tensor:
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with alpha_overrides(model, overrides), torch.no_grad():
        return model(x)


INJECTION_ENTRIES = [
    Entry(
        "inject_slots",
        plain_model,
        _inject,
        {
            "targets": lambda _t: {"stem": "cnn"},
            "example_input": lambda _t: torch.zeros(1, 3, 4, 4),
            "gates": lambda _t: QualityGates("permissive"),
            "embargo_epochs": lambda _t: 2,
        },
        model_snapshot,
        injected_check,
    ),
    Entry(
        "InjectionTarget",
        plain_model,
        _inject_target,
        {
            "path": lambda _t: "body",
            "topology": lambda _t: "cnn",
            "dim": lambda _t: 4,
            "slot_id": lambda _t: "last",
        },
        model_snapshot,
        injected_check,
    ),
    Entry(
        "remove_slots",
        injected_model,
        lambda _m, k: remove_slots(**k),
        {"model": lambda _t: 3},
        model_snapshot,
    ),
    Entry(  # the slot holds a seed: only discard_seeds=True removes it
        "remove_slots_discard_seeds",
        injected_model,
        lambda m, k: remove_slots(m, **k),
        {"discard_seeds": lambda _t: False},
        model_snapshot,
        injected_check,
    ),
    Entry(
        "alpha_overrides",
        injected_model,
        lambda m, k: _overridden(m, k["overrides"]),
        {"overrides": lambda _t: {"stem": torch.full((2, 1, 1, 1), 0.5)}},
        model_snapshot,
        injected_check,
    ),
    Entry(
        "alpha_override_value",
        injected_model,
        lambda m, k: _overridden(m, Pairs([(k["slot_id"], k["alpha"])])),
        {"slot_id": lambda _t: "stem", "alpha": lambda _t: torch.full((2, 1, 1, 1), 0.5)},
        model_snapshot,
        injected_check,
    ),
    Entry(
        "evaluate_injected",
        injected_model,
        lambda m, k: evaluate_injected(m, **k),
        {
            "batches": lambda _t: [(torch.ones(2, 3, 4, 4), torch.tensor([0, 3]))],
            "score": lambda _t: _score,
            "counterfactual": lambda _t: True,
        },
        model_snapshot,
        lambda t, r, k: (injected_check(t, r, k), evaluation_check(t, r, k)),
    ),
]


# ---- gates ---------------------------------------------------------------------------------------------

_THRESHOLDS = [a.name for a in attrs.fields(GateThresholds)]
_EVIDENCE = {
    "stage": lambda _t: _S.TRAINING,
    "seed_id": lambda _t: "s",
    "blueprint": lambda _t: "conv_light",
    "evaluations_in_stage": lambda _t: 3,
    "improvement": lambda _t: 1.0,
    "activity": lambda _t: 0.1,
    "trainable": lambda _t: True,
    "alpha": lambda _t: 0.0,
    "alpha_target": lambda _t: 0.0,
    "counterfactual": lambda _t: None,
    "nonfinite": lambda _t: (),
}


def _gate_result_check(_t: Any, result: Any, _k: dict[str, Any]) -> None:
    assert result.passed in (True, False) and 0.0 <= result.score <= 1.0 and isinstance(result.message, str)


def _thresholds_check(_t: Any, gates: Any, _k: dict[str, Any]) -> None:
    for name in _THRESHOLDS:
        assert type(getattr(gates.thresholds, name)) in (int, float), name
    hash(gates)


GATE_ENTRIES = [
    *[
        Entry(
            f"QualityGates.{name}",
            lambda: None,
            lambda _t, k, name=name: QualityGates(k["policy"], k["thresholds"], **{name: k["value"]}),
            {"policy": lambda _t: "strict", "thresholds": lambda _t: None, "value": lambda _t: 1},
            lambda _t: None,
            _thresholds_check,
        )
        for name in _THRESHOLDS
    ],
    *[
        Entry(
            f"GateThresholds.{name}",
            lambda: None,
            lambda _t, k, name=name: QualityGates(thresholds=GateThresholds(**{name: k["value"]})),
            {"value": lambda _t: 1},
            lambda _t: None,
            _thresholds_check,
        )
        for name in _THRESHOLDS
    ],
    Entry(
        "QualityGates.evaluate",
        lambda: QualityGates("strict"),
        lambda g, k: g.evaluate(k["edge"], GateEvidence(**{n: k[n] for n in _EVIDENCE})),
        {"edge": lambda _t: (_S.TRAINING, _S.BLENDING), **_EVIDENCE},
        lambda _t: None,
        _gate_result_check,
    ),
]


# ---- the controller ------------------------------------------------------------------------------------

_CONFIG = {
    "param_budget": lambda _t: 100_000,
    "plateau_window": lambda _t: 2,
    "plateau_min_delta": lambda _t: 0.5,
    "warmup_epochs": lambda _t: 1,
    "max_concurrent": lambda _t: 1,
    "prune_below": lambda _t: 0.0,
    "prune_patience": lambda _t: 2,
    "max_stage_epochs": lambda _t: 12,
    "exclude": lambda _t: ("noop",),
    "include": lambda _t: None,
    "ramp_epochs": lambda _t: 3,
    "algorithm": lambda _t: BlendAlgorithm.ADD,
    "strategy": lambda _t: "cheapest",
}


def controlled() -> HeuristicController:
    model = grown_model()
    controller = HeuristicController(dict(model.slots.items()), ControllerConfig(param_budget=100_000))
    for epoch, score in enumerate((40.0, 41.0)):
        controller.step(Evaluation(score, {"r0c1": 0.5}), epoch)
    return controller


def controller_snapshot(c: HeuristicController) -> dict[str, Any]:
    return {
        "history": list(c.history),
        "decisions": list(c.decisions),
        "outcomes": list(c.outcomes),
        "slots": {s: slot_snapshot(slot) for s, slot in c.slots.items()},
        "candidates": c.candidates(),
    }


def _config_check(_t: Any, config: ControllerConfig, _k: dict[str, Any]) -> None:
    HeuristicController({}, config)
    for name in ("param_budget", "plateau_window", "warmup_epochs", "max_concurrent", "ramp_epochs"):
        assert type(getattr(config, name)) is int, name
    assert all(type(n) is str for n in config.exclude) and isinstance(config.algorithm, BlendAlgorithm)
    assert config.include is None or all(type(n) is str for n in config.include)
    assert math.isfinite(config.prune_below) and math.isfinite(config.plateau_min_delta)


def _controller_check(c: HeuristicController, _r: Any, _k: dict[str, Any]) -> None:
    assert all(math.isfinite(h) for h in c.history)
    for slot in c.slots.values():
        working_slot(slot) if slot.dim == 8 else slot.report()


CONTROLLER_ENTRIES = [
    Entry(
        "ControllerConfig",
        lambda: None,
        lambda _t, k: ControllerConfig(**k),
        _CONFIG,
        lambda _t: None,
        _config_check,
    ),
    Entry(
        "HeuristicController",
        grown_model,
        lambda m, k: HeuristicController(k["slots"], k["config"]),
        {"slots": lambda m: dict(m.slots.items()), "config": lambda _t: ControllerConfig(param_budget=1000)},
        model_snapshot,
        lambda _m, c, _k: c.candidates(),
    ),
    Entry(
        "controller.step",
        controlled,
        lambda c, k: c.step(k["evaluation"], k["epoch"], tick=k["tick"]),
        {
            "evaluation": lambda _t: Evaluation(42.0, {"r0c1": 0.5}),
            "epoch": lambda _t: 2,
            "tick": lambda _t: True,
        },
        controller_snapshot,
        _controller_check,
    ),
    Entry(
        "controller.step_evaluation",
        controlled,
        lambda c, k: c.step(Evaluation(k["score"], k["contributions"], k["samples"]), 2),
        {"score": lambda _t: 42.0, "contributions": lambda _t: {"r0c1": 0.5}, "samples": lambda _t: 10},
        controller_snapshot,
        _controller_check,
    ),
    Entry(
        "controller.step_contribution",
        controlled,
        lambda c, k: c.step(Evaluation(42.0, Pairs([(k["slot_id"], k["value"])])), 2),
        {"slot_id": lambda _t: "r0c1", "value": lambda _t: 0.5},
        controller_snapshot,
        _controller_check,
    ),
    Entry(
        "rank_candidates",
        lambda: None,
        lambda _t, k: rank_candidates(**k),
        {
            "candidates": lambda _t: [
                Candidate(10, 0, "r0c0", "conv_light"),
                Candidate(5, 1, "r0c1", "norm"),
            ],
            "strategy": lambda _t: "gain_per_param",
            "outcomes": lambda _t: [Outcome("r0c0", "norm", 5, 1.0, "pruned", 3)],
        },
        lambda _t: None,
    ),
    Entry(
        "plateaued",
        lambda: None,
        lambda _t, k: plateaued(**k),
        {"history": lambda _t: [40.0, 41.0, 41.1], "window": lambda _t: 2, "min_delta": lambda _t: 0.5},
        lambda _t: None,
        lambda _t, r, _k: r in (True, False) or (_ for _ in ()).throw(AssertionError(r)),
    ),
]


@pytest.mark.parametrize(
    ("name", "entries", "seed"),
    [
        ("model entry points", MODEL_ENTRIES, 1602),
        ("injection entry points", INJECTION_ENTRIES, 1603),
        ("gates entry points", GATE_ENTRIES, 1604),
        ("controller entry points", CONTROLLER_ENTRIES, 1605),
    ],
    ids=["model", "injection", "gates", "controller"],
)
def test_entry_points_reject_bad_values_cleanly(name, entries, seed) -> None:
    tally = run(name, entries, seed=seed, trials=2_000, seconds=60)
    print(tally.summary())
    assert tally.failed == 0, tally.report()
