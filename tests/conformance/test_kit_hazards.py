"""The kit's checks for seeds that write into their input and for backward passes that crash.

Kinds: (1) any in-place write into the seed's input (values changed, or only the version
counter) is reported, and the identity checks compare with a copy taken before the call;
(2) a backward pass on an input that does not require grad runs in a child process, so a
segfault, a hang or an exception is reported against the blueprint and the run goes on.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from torch import nn

from esper_core.registry import get_topology
from esper_core.spec import BlueprintSpec
from esper_core.testing import Check, conformance_report
from esper_core.testing import backward as backward_check
from esper_core.testing.backward import check_backward_in_child
from esper_core.testing.plan import make_plan
from esper_core.testing.recorder import Recorder
from esper_core.testing.subject import Subject


def _spec(name: str, factory: Any, topology: str = "cnn", param_count: Any = None) -> BlueprintSpec:
    return BlueprintSpec(
        name=name,
        topology=topology,
        factory=factory,
        param_count=param_count or (lambda dim: dim * dim + dim),
        description="kit hazard test blueprint",
    )


class ReluInPlaceConv(nn.Module):
    """The issue's blueprint exactly: ``x + conv0(relu_(x))``, conv0 a zero-initialised 1x1 conv."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.conv0.weight)
        nn.init.zeros_(self.conv0.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv0(torch.relu_(x))


class InplaceActivationOnInput(nn.Module):
    """``nn.ReLU(inplace=True)`` applied to the input of a transformer seed."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.act = nn.ReLU(inplace=True)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.act(x))


class SameValuesWrite(nn.Module):
    """Writes into its input without changing a value (``x.mul_(1)``): only the version moves."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(1.0) + self.proj(x)


def test_issue_instance_relu_inplace_blueprint_fails_the_kit() -> None:
    """Issue 15 item 9: this blueprint passed conformance_report with 0 failures."""
    report = conformance_report(_spec("hazard_relu_inplace", ReluInPlaceConv), dims=[8])
    assert not report.passed
    assert {Check.INPUT_UNCHANGED, Check.IDENTITY} <= report.failed_checks, report.format()
    (failure,) = [f for f in report.failures if f.check is Check.INPUT_UNCHANGED]
    assert "wrote into the input in eval mode under no_grad (max|x_after - x_before| = " in failure.actual
    identity = [f for f in report.failures if f.check is Check.IDENTITY]
    assert identity and all("max|y - x| = " in f.actual for f in identity)


@pytest.mark.parametrize(
    ("factory", "topology", "shown"),
    [
        (InplaceActivationOnInput, "transformer", "max|x_after - x_before| = "),
        (SameValuesWrite, "transformer", "same values, version counter"),
    ],
)
def test_every_kind_of_write_into_the_input_is_reported(factory: Any, topology: str, shown: str) -> None:
    report = conformance_report(_spec(f"hazard_{factory.__name__.lower()}", factory, topology), dims=[8])
    failures = [f for f in report.failures if f.check is Check.INPUT_UNCHANGED]
    assert len(failures) == 1 and shown in failures[0].actual, report.format()


class OutOfPlaceRelu(ReluInPlaceConv):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv0(torch.relu(x))


def test_a_seed_that_leaves_its_input_alone_passes_the_input_check() -> None:
    report = conformance_report(_spec("hazard_clean", OutOfPlaceRelu), dims=[8])
    assert Check.INPUT_UNCHANGED in report.checks_run and Check.BACKWARD_NO_GRAD_INPUT in report.checks_run
    assert report.passed, report.format()


# ---- backward in a child process ---------------------------------------------------------------------


class _SlowBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        time.sleep(30)
        return grad


class _FailingBackward(_SlowBackward):
    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("backward exploded")


class _Wraps(ReluInPlaceConv):
    function: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.function.apply(self.conv0(x))


class SlowBackward(_Wraps):
    function = _SlowBackward


class FailingBackward(_Wraps):
    function = _FailingBackward


def _run_backward_check(factory: Any) -> Recorder:
    spec = _spec(f"hazard_{factory.__name__.lower()}", factory)
    subject = Subject(spec=spec, topology=get_topology("cnn"), plan=make_plan((), [8]))
    rec = Recorder(spec.key)
    check_backward_in_child(rec, subject, 8, {})
    return rec


def test_a_segfault_in_backward_is_a_failure_naming_the_blueprint_and_the_run_goes_on(report_for) -> None:  # type: ignore[no-untyped-def]
    report = report_for("kit_groupnorm_backward_crash")
    (failure,) = [f for f in report.failures if f.check is Check.BACKWARD_NO_GRAD_INPUT]
    assert failure.blueprint == "cnn:kit_groupnorm_backward_crash"
    assert "the process died with SIGSEGV" in failure.actual
    assert "use esper_core.groupnorm.GroupNorm" in failure.actual
    assert Check.COMPILE in report.checks_run  # checks after it still ran


def test_an_exception_in_backward_is_reported() -> None:
    rec = _run_backward_check(FailingBackward)
    (failure,) = rec.failures
    assert failure.check is Check.BACKWARD_NO_GRAD_INPUT
    assert failure.actual == "backward raised RuntimeError: backward exploded"


def test_a_hanging_backward_is_a_failure_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backward_check, "CHILD_TIMEOUT_S", 2.0)
    start = time.monotonic()
    rec = _run_backward_check(SlowBackward)
    assert time.monotonic() - start < 20
    (failure,) = rec.failures
    assert failure.actual == "the child did not finish within 2 s"


def test_the_groupnorm_helper_makes_the_same_seed_pass() -> None:
    from esper_core.groupnorm import GroupNorm

    class HelperGroupNormOnInput(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.norm = GroupNorm(1, dim)
            self.scale = nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.scale * (self.norm(x) - x)

    rec = _run_backward_check(HelperGroupNormOnInput)
    assert not rec.failures and Check.BACKWARD_NO_GRAD_INPUT in rec.checks_run
