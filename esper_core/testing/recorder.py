"""Collects failures while the checks run, so one broken check never hides another."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from esper_core.testing.report import Check, ConformanceReport, Failure

__all__ = ["Recorder", "describe_exception", "max_abs_diff"]


def describe_exception(exc: BaseException) -> str:
    """``TypeName: first line of the message`` (whole tracebacks drown the report)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| in float64, or inf when the shapes differ or a value is not finite."""
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    diff = (a.detach().to(torch.float64) - b.detach().to(torch.float64)).abs().max().item()
    return diff if diff == diff else float("inf")  # NaN compares unequal to itself


class Recorder:
    """Mutable accumulator for one blueprint's run (internal to the kit)."""

    def __init__(self, blueprint: str) -> None:
        self.blueprint = blueprint
        self.failures: list[Failure] = []
        self.checks_run: list[Check] = []

    def ran(self, check: Check) -> None:
        if check not in self.checks_run:
            self.checks_run.append(check)

    def fail(
        self,
        check: Check,
        *,
        expected: str,
        actual: str,
        dim: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.ran(check)
        self.failures.append(
            Failure(
                blueprint=self.blueprint,
                check=check,
                expected=expected,
                actual=actual,
                dim=dim,
                options=options,
            )
        )

    def expect(
        self,
        ok: bool,
        check: Check,
        *,
        expected: str,
        actual: str,
        dim: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record a failure unless ``ok``; return ``ok`` so callers can stop early."""
        self.ran(check)
        if not ok:
            self.fail(check, expected=expected, actual=actual, dim=dim, options=options)
        return ok

    @contextlib.contextmanager
    def guard(
        self,
        check: Check,
        *,
        dim: int | None = None,
        options: Mapping[str, Any] | None = None,
        expected: str = "no exception",
    ) -> Iterator[None]:
        """Run a block; an exception inside it becomes a failure of ``check``."""
        self.ran(check)
        try:
            yield
        except Exception as exc:  # a blueprint may fail in any way; report, keep checking
            self.fail(
                check, expected=expected, actual=f"raised {describe_exception(exc)}", dim=dim, options=options
            )

    def has_failed(self, check: Check) -> bool:
        return any(f.check is check for f in self.failures)

    def report(self) -> ConformanceReport:
        return ConformanceReport(
            blueprint=self.blueprint, failures=tuple(self.failures), checks_run=tuple(self.checks_run)
        )
