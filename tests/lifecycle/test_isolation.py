"""Gradient isolation, the straight-through incubator and the GroupNorm workaround."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from esper_core.groupnorm import GROUPNORM_REPRODUCTION
from esper_core.isolation import seed_input, straight_through
from esper_core.stages import SeedStage
from esper_core.telemetry import SeedWarning

S = SeedStage
REPO = Path(__file__).resolve().parents[2]


def _net(slot, topology: str) -> tuple[nn.Module, nn.Module]:  # type: ignore[no-untyped-def]
    torch.manual_seed(3)
    if topology == "cnn":
        return nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
    return nn.Linear(8, 8), nn.Linear(8, 4)


def _run(pre: nn.Module, post: nn.Module, slot, x: torch.Tensor):  # type: ignore[no-untyped-def]
    pre.zero_grad()
    out = post(slot(pre(x))) if slot is not None else post(pre(x))
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() for p in pre.parameters()]


STE_CASES = [
    ("cnn", "lc_conv", False),
    ("cnn", "lc_conv", True),
    ("cnn", "lc_norm", False),
    ("cnn", "lc_norm", True),
    ("transformer", "lc_mlp", False),
]


@pytest.mark.parametrize(("topology", "blueprint", "channels_last"), STE_CASES)
def test_ste_is_bit_identical_to_no_seed(lc, topology: str, blueprint: str, channels_last: bool) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(topology), S.TRAINING, blueprint)
    for p in slot.seed.parameters():  # a seed that is far from the identity
        nn.init.normal_(p, std=0.3)
    pre, post = _net(slot, topology)
    x = slot._topology.example_input(8, batch=3)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        pre, post = pre.to(memory_format=torch.channels_last), post.to(memory_format=torch.channels_last)
    bare_out, bare_grads = _run(pre, post, None, x)
    slot.seed.zero_grad()
    out, grads = _run(pre, post, slot, x)
    assert torch.equal(out, bare_out)
    assert all(torch.equal(a, b) for a, b in zip(grads, bare_grads, strict=True))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in slot.seed.parameters())


def test_straight_through_protects_host_from_nonfinite_seed() -> None:
    h = torch.randn(2, 3, requires_grad=True)
    s = torch.full((2, 3), float("inf"), requires_grad=True)
    out = straight_through(h, s)
    assert torch.equal(out, h.detach())
    out.sum().backward()
    assert torch.equal(h.grad, torch.ones(2, 3)) and torch.equal(s.grad, torch.ones(2, 3))
    out2 = straight_through(h, s)
    out2.relu_()  # a copy: the host may modify it in place


def test_straight_through_casts_gradient_to_seed_dtype() -> None:
    h = torch.randn(2, 3, requires_grad=True)
    s = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    straight_through(h, s).sum().backward()
    assert s.grad.dtype == torch.float64


def test_ste_compiles_fullgraph() -> None:
    h = torch.randn(2, 3, requires_grad=True)
    s = torch.randn(2, 3, requires_grad=True)
    out = torch.compile(straight_through, fullgraph=True, backend="eager")(h, s)
    out.sum().backward()
    assert torch.equal(out, h.detach()) and torch.equal(s.grad, torch.ones(2, 3))


def test_blending_cnn_is_isolated(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.BLENDING)
    slot.step_epoch()
    for p in slot.seed.parameters():
        nn.init.normal_(p, std=0.3)
    h = torch.randn(2, 8, 3, 3, requires_grad=True)
    slot(h).sum().backward()
    assert slot.isolated
    torch.testing.assert_close(h.grad, torch.full_like(h, 1 - slot.alpha))


def test_blending_transformer_co_adapts(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot("transformer"), S.BLENDING, "lc_mlp")
    slot.step_epoch()
    for p in slot.seed.parameters():
        nn.init.normal_(p, std=0.3)
    h = torch.randn(2, 6, 8, requires_grad=True)
    slot(h).sum().backward()
    assert not slot.isolated
    assert not torch.allclose(h.grad, torch.full_like(h, 1 - slot.alpha))


@pytest.mark.parametrize("stage", [S.HOLDING, S.FOSSILIZED])
def test_full_amplitude_cnn_seed_passes_gradient_upstream(lc, stage: SeedStage) -> None:  # type: ignore[no-untyped-def]
    """Decision: isolation ends at HOLDING, so layers before the slot keep learning."""
    slot = lc.drive(lc.make_slot(), stage)
    for p in slot.seed.parameters():
        nn.init.normal_(p, std=0.3)
    h = torch.randn(2, 8, 3, 3, requires_grad=True)
    slot(h).sum().backward()
    reference = h.detach().clone().requires_grad_(True)
    slot.seed(reference).sum().backward()
    assert not slot.isolated
    assert h.grad.abs().sum() > 0
    torch.testing.assert_close(h.grad, reference.grad)


def test_groupnorm_guard_gives_a_view_that_requires_grad_and_no_copy() -> None:
    from esper_core.groupnorm import _groupnorm_pre_hook

    norm = nn.GroupNorm(2, 8)
    frozen = torch.randn(2, 8, 3, 3).to(memory_format=torch.channels_last)
    (x,) = _groupnorm_pre_hook(norm, (frozen,))
    assert x.data_ptr() == frozen.data_ptr() and x.requires_grad  # a view, no copy
    # Inputs that cannot crash are left alone: the guard costs nothing for them.
    assert _groupnorm_pre_hook(norm, (frozen.requires_grad_(True),)) is None
    assert _groupnorm_pre_hook(norm, (torch.randn(2, 8, 3, 3),)) is None  # contiguous
    with torch.no_grad():
        assert _groupnorm_pre_hook(norm, (frozen.detach(),)) is None
    assert seed_input(frozen, isolate=False) is frozen
    assert not seed_input(frozen, isolate=True).requires_grad


def _child(code: str) -> subprocess.CompletedProcess[str]:
    # No packs in the child: it only needs the core, and loading packs costs seconds.
    env = {**os.environ, "ESPER_LOAD_PLUGINS": ""}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_groupnorm_reproduction_still_crashes_in_a_child_process() -> None:
    """Canary: when this fails, torch fixed the crash and the workaround in isolation.py can go."""
    result = _child(GROUPNORM_REPRODUCTION)
    assert result.returncode != 0, "the GroupNorm channels_last crash is fixed: remove the workaround"


WORKAROUND_CHILD = textwrap.dedent(
    """
    import torch
    from torch import nn
    from esper_core.gates import QualityGates
    from esper_core.groupnorm import guard_groupnorms
    from esper_core.registry import temporary_blueprints
    from esper_core.slot import SeedSlot
    from esper_core.spec import BlueprintSpec

    class Norm(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.norm = nn.GroupNorm(4, dim)
            self.scale = nn.Parameter(torch.zeros(1))
        def forward(self, x):
            return x + self.scale * (self.norm(x) - x)

    spec = BlueprintSpec(name="child_norm", topology="cnn", factory=Norm,
                         param_count=lambda dim: 2 * dim + 1, description="child")
    with temporary_blueprints(spec):
        for dtype in (torch.float32, torch.bfloat16):
            for host_grad in (True, False):  # False: a frozen host, in every stage
                slot = SeedSlot("s", topology="cnn", dim=16, gates=QualityGates("permissive")).to(dtype)
                slot.germinate("child_norm", ramp_epochs=1)
                slot.advance()
                for stage in ("TRAINING", "BLENDING", "HOLDING", "FOSSILIZED"):
                    assert slot.stage.name == stage, slot.stage
                    h = torch.randn(2, 16, 5, 7, dtype=dtype).to(memory_format=torch.channels_last)
                    h.requires_grad_(host_grad)
                    out = slot(h)
                    assert out.is_contiguous(memory_format=torch.channels_last)
                    out.float().square().sum().backward()
                    assert slot.seed.scale.grad is not None
                    slot.record_accuracy(50.0)
                    if stage != "TRAINING":  # a contribution is measured once the seed is blended in
                        slot.record_counterfactual(1.0)
                    if stage != "FOSSILIZED":
                        assert slot.advance().passed
                        slot.step_epoch()
        # A seed module used on its own, outside any slot, guarded the same way.
        module = guard_groupnorms(Norm(16))
        module(torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last)).sum().backward()
    print("survived")
    """
)


def test_groupnorm_seed_on_channels_last_survives_in_a_child_process() -> None:
    result = _child(WORKAROUND_CHILD)
    assert result.returncode == 0, f"child died with {result.returncode}: {result.stderr[-2000:]}"
    assert "survived" in result.stdout


@pytest.mark.parametrize("policy", ["strict", "permissive"])
def test_frozen_seed_warns_once_and_fails_g2(lc, policy: str) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot(policy=policy)
    seen: list = []
    slot.add_observer(seen.append)
    slot.germinate("lc_frozen")
    slot.advance()
    h = torch.randn(2, 8, 3, 3, requires_grad=True)
    for epoch in range(4):
        slot(h).sum().backward()
        slot.record_accuracy(50.0 + epoch)
    result = slot.advance()
    assert not result.passed and "seed_not_trainable" in result.checks_failed
    warnings = [e.code for e in seen if isinstance(e, SeedWarning)]
    assert warnings.count("seed_not_trainable") == 1
    assert warnings.count("seed_output_not_trainable") == 1
    assert not slot.report().trainable


@pytest.mark.parametrize("policy", ["strict", "permissive"])
def test_parameterless_seed_fails_g2(lc, policy: str) -> None:  # type: ignore[no-untyped-def]
    slot = lc.make_slot("transformer", policy=policy)
    seen: list = []
    slot.add_observer(seen.append)
    slot.germinate("lc_noop")
    slot.advance()
    for _ in range(3):
        slot(torch.randn(2, 6, 8, requires_grad=True))
        slot.record_accuracy(60.0)
    assert not slot.advance().passed
    assert [e.code for e in seen if isinstance(e, SeedWarning)] == [
        "seed_not_trainable",
        "seed_output_not_trainable",
    ]


def test_output_check_needs_grad_mode(lc) -> None:  # type: ignore[no-untyped-def]
    slot = lc.drive(lc.make_slot(), S.TRAINING)
    with torch.no_grad():
        slot(torch.randn(2, 8, 3, 3))
    assert slot.report().trainable  # evaluation under no_grad says nothing about trainability


def test_germination_does_not_touch_the_global_rng(lc) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    lc.drive(lc.make_slot(), S.GERMINATED, "lc_norm")
    # building the module uses the RNG for its init; the probes must not add draws
    slot = lc.make_slot()
    torch.manual_seed(5)
    module = slot.build_seed("lc_norm", {})
    after_build = torch.rand(3)
    torch.manual_seed(5)
    slot.germinate("lc_norm")
    assert torch.equal(torch.rand(3), after_build)
    assert module is not None and expected.shape == (3,)


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_blend_out_freezes_the_seed_without_touching_requires_grad(lc, topology: str) -> None:  # type: ignore[no-untyped-def]
    blueprint = "lc_conv" if topology == "cnn" else "lc_mlp"
    slot = lc.drive(lc.make_slot(topology), S.HOLDING, blueprint)
    for p in slot.seed.parameters():
        nn.init.normal_(p, std=0.3)
    slot.schedule_prune(4, reason="r", initiator="policy")
    slot.step_epoch()
    assert slot.schedule.mode.name == "DOWN" and 0 < slot.alpha < 1
    h = slot._topology.example_input(8, batch=2).requires_grad_(True)
    out = slot(h)
    with torch.no_grad():
        s = slot.seed(h)
    torch.testing.assert_close(out, h + slot.alpha * (s - h))
    out.sum().backward()
    assert all(p.grad is None for p in slot.seed.parameters())
    # Frozen for the ramp (so DDP does not wait for gradients that cannot come); the parameters
    # still count as rent and keep their optimizer state.
    assert not any(p.requires_grad for p in slot.seed.parameters())
    assert slot.report().seed_param_count == sum(p.numel() for p in slot.seed.parameters())
    torch.testing.assert_close(h.grad, torch.full_like(h, 1 - slot.alpha))
