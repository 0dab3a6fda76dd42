"""Checks run at every swept (dim, options): counts, shape, dtype, layout, identity.

These are cheap (a tiny forward pass, or a meta-device build for large dims), so they
run across the whole sweep; the expensive checks run once, at the primary dim.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from esper_core.testing.recorder import Recorder, describe_exception, max_abs_diff
from esper_core.testing.report import Check
from esper_core.testing.subject import Subject

__all__ = ["SweepOutcome", "accepts", "check_forward", "run_sweep"]


def _numel(module: nn.Module) -> int:
    # parameters() yields a shared (tied) parameter once, which is what a closed form counts
    return sum(p.numel() for p in module.parameters())


def _check_count(
    rec: Recorder, subject: Subject, module: nn.Module, dim: int, options: Mapping[str, Any]
) -> None:
    with rec.guard(Check.PARAM_COUNT, dim=dim, options=options, expected="param_count() to return an int"):
        declared = subject.spec.count_params(dim, **options)
        actual = _numel(module)
        rec.expect(
            declared == actual,
            Check.PARAM_COUNT,
            expected="param_count() == sum(p.numel())",
            actual=f"param_count() = {declared}, sum(p.numel()) = {actual} (declared {declared - actual:+d})",
            dim=dim,
            options=options,
        )


def check_forward(
    rec: Recorder, module: nn.Module, x: torch.Tensor, dim: int, options: Mapping[str, Any], *, mode: str
) -> torch.Tensor | None:
    """Run one forward pass and check shape, dtype, device, layout and exact identity."""
    module.train(mode == "train")
    y = None
    expected = f"forward in {mode} mode to run"
    with rec.guard(Check.FORWARD, dim=dim, options=options, expected=expected), torch.no_grad():
        y = module(x.clone())  # x stays the pre-call reference even if the seed writes into its input
    if y is None:
        return None
    if not isinstance(y, torch.Tensor):
        rec.fail(Check.FORWARD, expected="a Tensor", actual=type(y).__name__, dim=dim, options=options)
        return None
    if not rec.expect(
        y.shape == x.shape,
        Check.SHAPE,
        expected=f"output shape {tuple(x.shape)}",
        actual=f"{tuple(y.shape)} ({mode} mode)",
        dim=dim,
        options=options,
    ):
        return None  # identity and layout are meaningless once the shape is wrong
    rec.expect(
        y.dtype == x.dtype, Check.DTYPE, expected=str(x.dtype), actual=str(y.dtype), dim=dim, options=options
    )
    rec.expect(
        y.device == x.device,
        Check.DEVICE,
        expected=str(x.device),
        actual=str(y.device),
        dim=dim,
        options=options,
    )
    rec.expect(
        y.is_contiguous() or not x.is_contiguous(),
        Check.MEMORY_FORMAT,
        expected="contiguous output for contiguous input",
        actual=f"strides {y.stride()} for shape {tuple(y.shape)}",
        dim=dim,
        options=options,
    )
    diff = max_abs_diff(y, x)
    rec.expect(
        diff == 0.0,
        Check.IDENTITY,
        expected="max|y - x| == 0 for a freshly built seed",
        actual=f"max|y - x| = {diff:.3g} in {mode} mode",
        dim=dim,
        options=options,
    )
    return y


def _check_flops(
    rec: Recorder, subject: Subject, module: nn.Module, x: torch.Tensor, dim: int, options
) -> None:
    if subject.spec.flop_count is None:
        return
    with rec.guard(Check.FLOP_COUNT, dim=dim, options=options, expected="flop_count() and a counted forward"):
        declared = subject.spec.count_flops(dim, tuple(x.shape), **options)
        module.eval()
        counter = FlopCounterMode(display=False)
        # CPU's fused attention kernel has no FLOP formula, so FlopCounterMode would miss
        # attention's products; the math backend runs the same products as visible matmuls.
        with sdpa_kernel(SDPBackend.MATH), counter, torch.no_grad():
            module(x)
        measured = counter.get_total_flops()
        rec.expect(
            declared == measured,
            Check.FLOP_COUNT,
            expected=f"flop_count(dim, {tuple(x.shape)}) == FlopCounterMode count {measured}",
            actual=f"declared {declared}",
            dim=dim,
            options=options,
        )


def _real(
    rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any], *, run_forward: bool
) -> bool:
    module = None
    with rec.guard(Check.BUILD, dim=dim, options=options, expected="the factory to build an nn.Module"):
        module = subject.build(dim, options)
    if module is None:
        return False
    _check_count(rec, subject, module, dim, options)
    if run_forward:
        x = subject.input(dim)
        for mode in ("eval", "train"):
            check_forward(rec, module, x, dim, options, mode=mode)
        _check_flops(rec, subject, module, x, dim, options)
    return True


def _meta(rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any]) -> bool:
    module = None
    expected = "the factory to build on the meta device"
    with rec.guard(Check.PARAM_COUNT, dim=dim, options=options, expected=expected), torch.device("meta"):
        module = subject.build(dim, options)
    if module is None:
        return False
    _check_count(rec, subject, module, dim, options)
    return True


def accepts(rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any]) -> bool:
    """Whether (dim, options) is declared valid; a validator that raises anything but
    OptionError is an ``options`` failure (and the combination is treated as rejected)."""
    try:
        return subject.accepts(dim, options)
    except Exception as exc:
        rec.fail(
            Check.OPTIONS,
            expected="validate() to accept the combination or raise OptionError",
            actual=f"raised {describe_exception(exc)}",
            dim=dim,
            options=options,
        )
        return False


@attrs.frozen
class SweepOutcome:
    """Dims accepted with the base options, and those of them that built for real."""

    accepted: tuple[int, ...]
    built: tuple[int, ...]


def run_sweep(rec: Recorder, subject: Subject) -> SweepOutcome:
    """Run the cheap checks over the whole sweep.

    The base options run forward passes at every real dim; each option variant is counted
    at every dim but run forward only at the first real dim that accepts it, because a
    forward pass (a fresh oneDNN kernel per shape) costs far more than a build.
    """
    accepted: list[int] = []
    built: list[int] = []
    base = dict(subject.plan.base_options)
    for options in subject.plan.option_sets():
        is_base = options == base
        ran_forward = False
        for dim in subject.plan.dims:
            if not accepts(rec, subject, dim, options):
                continue  # a declared restriction (e.g. heads must divide dim), not a fault
            if is_base:
                accepted.append(dim)
            if dim in subject.plan.real_dims:
                forward = is_base or not ran_forward
                ok = _real(rec, subject, dim, options, run_forward=forward)
                ran_forward = ran_forward or (ok and forward)
                if ok and is_base:
                    built.append(dim)
            else:
                _meta(rec, subject, dim, options)
    return SweepOutcome(accepted=tuple(accepted), built=tuple(built))
