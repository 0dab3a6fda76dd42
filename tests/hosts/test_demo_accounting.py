"""The demo's numbers: FLOP counts that agree with FlopCounterMode, statistics over seeds,
and metric values at equal training compute."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats as scipy_stats
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from esper_core.demo.compute import SeedCosts, forward_flops, point_shapes
from esper_core.demo.report import compare, summarize_models
from esper_core.demo.stats import summarize, t_quantile, value_at
from esper_core.demo.tasks import make_task
from esper_core.demo.train import StaticGrownModel
from esper_core.gates import QualityGates
from esper_core.model import MorphogeneticModel
from esper_core.registry import create_blueprint, flop_count
from esper_core.stages import SeedStage


@pytest.mark.parametrize(
    ("topology", "blueprints"),
    [
        ("cnn", {"r0c0": "conv_light", "r1c0": "depthwise", "r0c1": "bottleneck", "r1c1": "attention"}),
        ("transformer", {"r0c0": "attention"}),
        ("transformer", {"r0c0": "mlp_small"}),
    ],
)
def test_host_plus_registry_counts_equal_flop_counter_on_the_whole_model(
    topology: str, blueprints: dict[str, str]
) -> None:
    """The grown model is charged host (FlopCounterMode) + seeds (registry closed forms); a static
    model with the same seeds, counted whole by FlopCounterMode, must cost exactly that."""
    task = make_task(topology, 0)
    host = task.make_host()
    shapes = point_shapes(host, task.example)
    dims = {p.slot_id: p.dim for p in host.injection_points()}
    modules = {s: create_blueprint(topology, b, dims[s]) for s, b in blueprints.items()}
    static = StaticGrownModel(task.make_host(), modules)
    declared = forward_flops(host, task.example) + sum(
        flop_count(topology, b, dims[s], shapes[s]) for s, b in blueprints.items()
    )
    assert forward_flops(static, task.example) == declared


def test_attention_is_counted_as_dense_products_like_the_packs() -> None:
    # Without the MATH backend, FlopCounterMode does not see CPU fused attention at all.
    task = make_task("transformer", 0)
    host = task.make_host().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fused:
        host(task.example)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as math_backend:
        host(task.example)
    t, d = task.example.shape[1], host.config["n_embd"]
    assert math_backend.get_total_flops() - fused.get_total_flops() == 4 * t * t * d  # QK^T and AV
    assert forward_flops(host, task.example) == math_backend.get_total_flops()


def test_forward_flops_are_linear_in_the_batch_and_restore_the_mode() -> None:
    task = make_task("cnn", 0)
    host = task.make_host().train()
    one = forward_flops(host, task.example)
    x, _ = next(iter(task.train_batches(1, 8)))
    assert forward_flops(host, x) == 8 * one
    assert host.training


def test_seed_costs_follow_the_stage() -> None:
    task = make_task("cnn", 0)
    model = MorphogeneticModel(task.make_host(), gates=QualityGates("permissive"))
    shapes = point_shapes(model.host, task.example)
    costs = SeedCosts(model.slots, shapes)
    assert costs.running() == 0
    slot = model.slots["r1c0"]
    slot.germinate("conv_light")
    assert slot.stage is SeedStage.GERMINATED and costs.running() == 0  # held, not run yet
    slot.advance()
    assert slot.stage is SeedStage.TRAINING
    assert costs.running() == flop_count("cnn", "conv_light", 4, shapes["r1c0"]) == 18 * 4 * 4 * 4 * 4
    slot.prune("test", "user")
    assert costs.running() == 0


# ---------------------------------------------------------------------------------- statistics


def test_t_quantiles_match_scipy() -> None:
    for df in [*range(1, 40), 60, 200, 10_000]:
        assert t_quantile(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=0.0015)
    with pytest.raises(ValueError, match="degrees of freedom must be an int >= 1, got 0"):
        t_quantile(0)


def test_summarize_mean_sample_std_and_t_interval() -> None:
    entry = summarize([1.0, 2.0, 3.0, 6.0])
    std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + 3**2) / 3)
    assert entry["n"] == 4 and entry["mean"] == 3.0 and entry["std"] == pytest.approx(std)
    half = 3.182 * std / 2
    assert entry["ci95"] == pytest.approx([3.0 - half, 3.0 + half])
    assert summarize([5.0]) == {"n": 1, "mean": 5.0, "std": None, "ci95": None, "values": [5.0]}
    with pytest.raises(ValueError, match="at least one value"):
        summarize([])
    with pytest.raises(ValueError, match="finite values"):
        summarize([1.0, float("nan")])


def test_value_at_interpolates_between_epochs() -> None:
    flops, acc = [0, 10, 30], [10.0, 50.0, 70.0]
    assert value_at(flops, acc, 0) == 10.0
    assert value_at(flops, acc, 5) == pytest.approx(30.0)
    assert value_at(flops, acc, 20) == pytest.approx(60.0)
    assert value_at(flops, acc, 30) == 70.0
    assert value_at(flops, acc, 31) is None  # that run never spent so much
    assert value_at([0, 10, 10, 20], [0.0, 1.0, 2.0, 3.0], 10) == 1.0
    with pytest.raises(ValueError, match="equally long"):
        value_at([0, 1], [1.0], 0)
    with pytest.raises(ValueError, match="before the first point"):
        value_at(flops, acc, -1)


def _record(flops: list[float], acc: list[float]) -> dict:
    history = [
        {"epoch": i, "accuracy": a, "train_flops": f} for i, (f, a) in enumerate(zip(flops, acc, strict=True))
    ]
    return {"params": 10, "train_flops": flops[-1], "final": history[-1], "history": history}


def test_equal_compute_reads_each_model_at_the_smaller_budget() -> None:
    runs = [
        {
            "seed": 0,
            "models": {
                "host_alone": _record([0, 10, 20], [50.0, 70.0, 80.0]),
                "grown:x": _record([0, 10, 40], [50.0, 70.0, 90.0]),
            },
        },
        {
            "seed": 1,
            "models": {
                "host_alone": _record([0, 10, 20], [40.0, 60.0, 70.0]),
                "grown:x": _record([0, 20, 30], [40.0, 60.0, 76.0]),
            },
        },
    ]
    c = compare(runs, "grown:x", "host_alone", "accuracy")
    assert c["equal_epochs"]["values"] == [10.0, 6.0]
    # Seed 0 at 20 FLOPs: grown 70 + (20-10)/30 * 20; seed 1 at 20: grown 60.
    assert c["equal_compute"]["values"] == pytest.approx([70 + 20 / 3 - 80, 60 - 70])
    assert c["compute_ratio"]["values"] == pytest.approx([2.0, 1.5])
    summary = summarize_models(runs, ["accuracy"])
    assert summary["equal_compute_flops"]["values"] == [20, 20]
    assert summary["models"]["grown:x"]["at_equal_compute"]["accuracy"]["values"] == pytest.approx(
        [70 + 20 / 3, 60.0]
    )
    assert summary["models"]["host_alone"]["at_equal_compute"]["accuracy"]["values"] == [80.0, 70.0]
