"""Instances the entry-point fuzzer found beyond the slot, kept as readable regression tests.

Each was a raw Python/torch error or a silent acceptance before; each is now the library's
error naming the value, with nothing changed.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from esper_core.control import ControllerConfig, HeuristicController, plateaued, rank_candidates
from esper_core.errors import HostError, LifecycleError
from esper_core.gates import GateEvidence, QualityGates
from esper_core.hosts import CNNHost
from esper_core.inject import InjectionTarget, alpha_overrides, inject_slots, remove_slots
from esper_core.model import Evaluation, MorphogeneticModel
from esper_core.stages import SeedStage

from .conftest import model_snapshot
from .fuzzing import differences, same


def grown() -> MorphogeneticModel:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(10, n_blocks=2, base_channels=4), gates=QualityGates("permissive"))
    model.germinate("r0c1", "conv_light")
    model.slot("r0c1").advance()
    model.slot("r0c1").record_accuracy(40.0)
    model.slot("r0c1").advance()
    model.step_epoch()
    return model


def batch() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, 8, 8, generator=g), torch.tensor([1, 2]))]


@pytest.mark.parametrize(
    ("score", "needle"),
    [
        (lambda out, y: 1.0, "got 1.0"),  # not a tensor
        (lambda out, y: (out.argmax(1) == y).float().sum(), "with the batch first"),  # a scalar
        (lambda out, y: out.softmax(1).max(1).values * 100, "in [0, 1]"),  # percent, not a fraction
        (lambda out, y: torch.full((out.shape[0],), math.nan), "in [0, 1]"),
        (lambda out, y: int("x"), "raised ValueError"),
    ],
    ids=["float", "scalar", "percent", "nan", "raises"],
)
def test_evaluate_checks_the_score_function(score, needle) -> None:
    model = grown()
    model.train()
    before = model_snapshot(model)
    with pytest.raises(HostError) as info:
        model.evaluate(batch(), score)
    assert needle in str(info.value)
    assert same(before, model_snapshot(model)), differences(before, model_snapshot(model))


@pytest.mark.parametrize(
    "batches",
    [3, [torch.zeros(2, 3)], [(torch.zeros(2, 3, 8, 8),)], [(torch.zeros(2, 3, 8, 8), torch.zeros(3))]],
    ids=["int", "tensor-rows", "single", "batch-mismatch"],
)
def test_evaluate_checks_the_batches(batches) -> None:
    with pytest.raises(HostError, match="batch"):
        grown().evaluate(batches, lambda out, y: (out.argmax(1) == y).float())


def test_a_bad_override_is_refused_before_the_host_runs() -> None:
    """The host's BatchNorm updates running statistics in training mode: checking the
    overrides after the first segment ran would have changed the model."""
    model = grown()
    model.train()
    before = model_snapshot(model)
    x = batch()[0][0]
    for bad in (torch.ones(2, 1), torch.ones((2, 1, 1, 1), dtype=torch.long), 0.5, torch.ones(3, 1, 1, 1)):
        with pytest.raises(HostError, match="alpha override for 'r0c1'"):
            model.forward_with_alphas(x, {"r0c1": bad})
    with pytest.raises(HostError, match="overrides must be a mapping"):
        model.forward_with_alphas(x, [("r0c1", torch.ones(2, 1, 1, 1))])  # type: ignore[arg-type]
    assert same(before, model_snapshot(model))


def test_hosts_check_their_input() -> None:
    with pytest.raises(
        HostError, match=r"CNNHost expects floating images \(B, 3, H, W\); got torch.float32 \(2, 3\)"
    ):
        grown()(torch.zeros(2, 3))


def test_model_slots_and_stages_must_be_collections_of_the_right_kind() -> None:
    with pytest.raises(HostError, match=r"slots must be a collection \(list, tuple or set\) of str"):
        MorphogeneticModel(CNNHost(10, n_blocks=1), slots="r0c0")
    with pytest.raises(HostError, match="of SeedStage members"):
        grown().seed_param_count(SeedStage.BLENDING)  # type: ignore[arg-type]


# ---- injection --------------------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


def test_injection_target_fields_are_checked() -> None:
    with pytest.raises(HostError, match="InjectionTarget slot_id"):
        InjectionTarget("stem", "cnn", slot_id=3)  # type: ignore[arg-type]
    with pytest.raises(HostError, match="InjectionTarget dim"):
        InjectionTarget("stem", "cnn", dim=4.0)  # type: ignore[arg-type]


def test_a_failing_probe_forward_is_the_library_error_and_leaves_the_model_alone() -> None:
    model = Net()
    before = model_snapshot(model)
    with pytest.raises(HostError, match="the probe forward of Net on example_input"):
        inject_slots(model, {"stem": "cnn"}, example_input=torch.zeros(1, 5, 4, 4))
    assert same(before, model_snapshot(model)) and not hasattr(model, "esper_slots")
    with pytest.raises(HostError, match="targets must be a mapping"):
        inject_slots(model, 3, example_input=torch.zeros(1, 3, 4, 4))  # type: ignore[arg-type]


def test_remove_slots_and_alpha_overrides_check_their_arguments() -> None:
    with pytest.raises(HostError, match=r"expected an nn\.Module"):
        remove_slots(3)  # type: ignore[arg-type]
    model = Net()
    inject_slots(model, {"stem": "cnn"}, example_input=torch.zeros(1, 3, 4, 4))
    with pytest.raises(HostError, match="alpha override for 'stem'"), alpha_overrides(model, {"stem": 0.5}):  # type: ignore[dict-item]
        pass
    with pytest.raises(HostError, match="overrides must be a mapping"), alpha_overrides(model, 0.5):  # type: ignore[arg-type]
        pass


# ---- gates and the controller -------------------------------------------------------------------------------


def test_gate_evidence_is_checked_on_construction() -> None:
    with pytest.raises(LifecycleError, match="gate evidence improvement"):
        GateEvidence(stage=SeedStage.TRAINING, improvement="1.0")  # type: ignore[arg-type]
    with pytest.raises(LifecycleError, match="gate evidence stage"):
        GateEvidence(stage=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        (
            "exclude",
            "noop",
            r"collection \(list, tuple or set\) of blueprint names",
        ),  # was silently ('n', 'o', 'o', 'p')
        ("include", "lora", r"collection \(list, tuple or set\) of blueprint names"),
        ("prune_below", math.nan, "prune_below"),  # was accepted: never prunes
        ("prune_below", "0", "prune_below"),
        ("algorithm", "bogus", "algorithm"),  # was a raw ValueError
        ("param_budget", 10**400, "param_budget"),
        ("plateau_min_delta", math.inf, "plateau_min_delta"),
    ],
)
def test_controller_config_fields_are_checked(field, value, needle) -> None:
    with pytest.raises(HostError, match=needle):
        ControllerConfig(**{"param_budget": 100, field: value})


def test_a_rejected_controller_step_records_nothing() -> None:
    model = grown()
    controller = HeuristicController(model.slots, ControllerConfig(param_budget=10_000))
    controller.step(Evaluation(40.0, {"r0c1": 0.5}), 0)
    history = list(controller.history)
    slot = model_snapshot(model)
    for bad in ("50", Evaluation(41.0), None):
        with pytest.raises(HostError):
            controller.step(bad, epoch="1" if bad == Evaluation(41.0) else 1)  # type: ignore[arg-type]
    assert controller.history == history and same(slot, model_snapshot(model))
    with pytest.raises(HostError, match="contributions"):
        Evaluation(41.0, {"r0c1": math.nan})
    with pytest.raises(HostError, match="score"):
        Evaluation(4100.0)


def test_pure_controller_helpers_check_their_arguments() -> None:
    with pytest.raises(HostError, match="window"):
        plateaued([1.0, 2.0], "2", 0.5)  # type: ignore[arg-type]
    with pytest.raises(HostError, match=r"history\[1\]"):
        plateaued([1.0, "2"], 1, 0.5)  # type: ignore[list-item]
    with pytest.raises(
        HostError, match=r"candidates must be a collection \(list, tuple or set\) of Candidate"
    ):
        rank_candidates([("r0c0", "lora")], "cheapest")  # type: ignore[list-item]
