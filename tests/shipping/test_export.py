"""A folded model exports with torch.export and runs where Esper is not installed."""

from __future__ import annotations

from pathlib import Path

import torch

from esper_core.alpha import BlendAlgorithm
from esper_core.folding import fold
from esper_core.hosts import CNNHost
from esper_core.inject import inject_slots
from esper_core.model import MorphogeneticModel

from .conftest import grow, run_without_esper
from .test_fold import TinyNet

LOAD_AND_COMPARE = """
import torch
program = torch.export.load("model.pt2")
x = torch.load("input.pt", weights_only=True)
expected = torch.load("expected.pt", weights_only=True)
got = program.module()(x)
assert torch.equal(got, expected), (got - expected).abs().max()
print("equal", tuple(got.shape))
"""


def _export_and_check(model: torch.nn.Module, x: torch.Tensor, where: Path) -> None:
    model.eval()
    with torch.no_grad():
        expected = model(x)
    program = torch.export.export(model, (x,))
    torch.export.save(program, where / "model.pt2")
    torch.save(x, where / "input.pt")
    torch.save(expected, where / "expected.pt")
    done = run_without_esper(LOAD_AND_COMPARE, where)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "equal" in done.stdout


def test_folded_morphogenetic_cnn_exports_and_runs_without_esper(permissive, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(num_classes=5, n_blocks=2, base_channels=8), gates=permissive)
    grow(model.slot("r0c0"), "ship_noisy_conv", seed=1)
    grow(model.slot("r1c1"), "ship_affine_conv", algorithm=BlendAlgorithm.GATE, seed=2)
    _export_and_check(fold(model), torch.randn(2, 3, 12, 12), tmp_path)


def test_folded_injected_cnn_exports_and_runs_without_esper(permissive, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyNet()
    slots = inject_slots(
        net, {"stem": "cnn", "body.0": "cnn"}, example_input=torch.randn(1, 3, 8, 8), gates=permissive
    )
    grow(slots["stem"], "ship_affine_conv", seed=3)
    grow(slots["body_0"], "ship_noisy_conv", algorithm=BlendAlgorithm.MULTIPLY, seed=4)
    _export_and_check(fold(net, merge="auto"), torch.randn(2, 3, 8, 8), tmp_path)


def test_the_child_process_really_cannot_import_esper(tmp_path: Path) -> None:
    done = run_without_esper("import esper_core\n", tmp_path)
    assert done.returncode != 0 and "is importable" not in done.stderr
    assert "ModuleNotFoundError: No module named 'esper_core'" in done.stderr
