"""Checks run once, at the primary dim with the base options.

Training, state_dict round trips, other dtypes and layouts, causality and compilation
cost far more than a forward pass, and their failures do not depend on the width, so
one configuration is enough to catch them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from esper_core.testing.recorder import Recorder, describe_exception, max_abs_diff
from esper_core.testing.report import Check
from esper_core.testing.subject import Subject, perturb_

__all__ = [
    "check_bf16",
    "check_causal",
    "check_channels_last",
    "check_compile",
    "check_learns",
    "check_state_dict",
]


def _tolerance(reference: torch.Tensor, scale: float) -> float:
    return scale * (1.0 + reference.detach().abs().max().item()) if reference.numel() else scale


def check_learns(rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any]) -> None:
    """Every parameter tensor must change after a few Adam steps on an MSE loss.

    Adam without weight decay moves a parameter only if its gradient is non-zero, and
    moves it by about ``lr`` however small that gradient is, so an unchanged tensor means
    its gradient was exactly zero at every step: it is dead (e.g. a zero-initialised
    layer feeding a ReLU through a norm). Several steps let a zero-initialised output
    layer become non-zero first, which is what wakes the layers before it.
    """
    with rec.guard(Check.LEARN, dim=dim, options=options, expected="a few training steps to run"):
        module = subject.build(dim, options, seed=1).train()
        params = dict(module.named_parameters())
        frozen = sorted(name for name, p in params.items() if not p.requires_grad)
        rec.expect(
            not frozen,
            Check.LEARN,
            expected="every parameter to require grad",
            actual=f"requires_grad=False: {frozen}",
            dim=dim,
            options=options,
        )
        trainable = {name: p for name, p in params.items() if p.requires_grad}
        if not trainable:
            return
        before = {name: p.detach().clone() for name, p in trainable.items()}
        optimizer = torch.optim.Adam(trainable.values(), lr=1e-2, eps=1e-12)
        # contiguous input: GroupNorm backward crashes on detached channels_last input (KNOWN-ISSUES)
        x = subject.input(dim, seed=2)
        with torch.no_grad():
            out_shape = module(x).shape  # a wrong shape is reported by the shape check, not here
        target = torch.randn(out_shape, generator=torch.Generator().manual_seed(3))
        for _ in range(subject.plan.learn_steps):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(module(x), target)
            if not torch.isfinite(loss):
                rec.fail(
                    Check.LEARN, expected="a finite loss", actual=str(loss.item()), dim=dim, options=options
                )
                return
            loss.backward()
            optimizer.step()
        dead = sorted(name for name, p in trainable.items() if torch.equal(before[name], p.detach()))
        rec.expect(
            not dead,
            Check.LEARN,
            expected=f"every parameter tensor to change within {subject.plan.learn_steps} Adam steps",
            actual=f"never changed (gradient always zero): {dead}",
            dim=dim,
            options=options,
        )


def _signature(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def check_state_dict(
    rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any]
) -> nn.Module | None:
    """Keys and shapes stable across constructions; loading reproduces the output.

    Returns the first construction with perturbed weights (a non-trivial module the
    layout, causality and compile checks compare against), or None if it did not build.
    """
    first = second = None
    with rec.guard(Check.STATE_DICT_KEYS, dim=dim, options=options, expected="two constructions to build"):
        first, second = subject.build(dim, options, seed=3), subject.build(dim, options, seed=4)
    if first is None or second is None:
        return None
    a, b = _signature(first), _signature(second)
    keys_ok = rec.expect(
        a == b,
        Check.STATE_DICT_KEYS,
        expected="the same state_dict keys and shapes from two constructions",
        actual=f"only in the first: {sorted(set(a) - set(b))}; only in the second: {sorted(set(b) - set(a))}; "
        f"shape differs: {sorted(k for k in set(a) & set(b) if a[k] != b[k])}",
        dim=dim,
        options=options,
    )
    perturb_(first)
    first.eval()
    if not keys_ok:
        return first  # a round trip between mismatched modules cannot be meaningful
    with rec.guard(
        Check.STATE_DICT_ROUND_TRIP, dim=dim, options=options, expected="load_state_dict(strict=True)"
    ):
        second.load_state_dict(first.state_dict())
        second.eval()
        x = subject.input(dim, seed=6)
        with torch.no_grad():
            y_first, y_second = first(x), second(x)
        diff = max_abs_diff(y_first, y_second)
        rec.expect(
            diff <= _tolerance(y_first, 1e-6),
            Check.STATE_DICT_ROUND_TRIP,
            expected="the loaded copy to reproduce the original output",
            actual=f"max|difference| = {diff:.3g}",
            dim=dim,
            options=options,
        )
    return first


def check_bf16(rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any]) -> None:
    with rec.guard(Check.BF16, dim=dim, options=options, expected="a bfloat16 forward pass on CPU"):
        module = subject.build(dim, options).to(torch.bfloat16).eval()
        x = subject.input(dim, dtype=torch.bfloat16)
        with torch.no_grad():
            y = module(x)
        ok = (isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16 and y.shape == x.shape) and bool(
            torch.isfinite(y).all()
        )
        rec.expect(
            ok,
            Check.BF16,
            expected=f"finite bfloat16 output of shape {tuple(x.shape)}",
            actual=f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}, "
            f"finite={bool(torch.isfinite(y).all()) if isinstance(y, torch.Tensor) else 'n/a'}",
            dim=dim,
            options=options,
        )


def check_channels_last(
    rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any], trained: nn.Module | None
) -> None:
    """For channels_last topologies: a fresh seed is the identity on channels_last input and
    keeps the layout; a non-trivial seed gives the same values for both layouts."""
    if not subject.topology.channels_last:
        return
    cl = torch.channels_last
    x = subject.input(dim, seed=7)
    x_cl = x.to(memory_format=cl)
    with rec.guard(
        Check.CHANNELS_LAST, dim=dim, options=options, expected="a forward pass on channels_last input"
    ):
        fresh = subject.build(dim, options).eval()
        with torch.no_grad():
            y = fresh(x_cl.clone())  # x_cl stays the pre-call reference
        rec.expect(
            y.is_contiguous(memory_format=cl),
            Check.MEMORY_FORMAT,
            expected="channels_last output for channels_last input",
            actual=f"strides {y.stride()} for shape {tuple(y.shape)}",
            dim=dim,
            options=options,
        )
        diff = max_abs_diff(y, x_cl)
        rec.expect(
            diff == 0.0,
            Check.CHANNELS_LAST,
            expected="max|y - x| == 0 on channels_last input at birth",
            actual=f"max|y - x| = {diff:.3g}",
            dim=dim,
            options=options,
        )
        if trained is not None:
            with torch.no_grad():
                y_cl, y_ref = trained(x_cl), trained(x)
            diff = max_abs_diff(y_cl, y_ref)
            rec.expect(
                diff <= _tolerance(y_ref, 1e-5),
                Check.CHANNELS_LAST,
                expected="the same values for channels_last and contiguous input (perturbed weights)",
                actual=f"max|difference| = {diff:.3g}",
                dim=dim,
                options=options,
            )


def check_causal(
    rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any], trained: nn.Module | None
) -> None:
    """For sequence topologies, changing position t must not change outputs before t."""
    axis = subject.topology.sequence_axis
    if axis is None or trained is None:
        return
    with rec.guard(Check.CAUSAL, dim=dim, options=options, expected="two forward passes"):
        x = subject.input(dim, seed=8)
        length = x.shape[axis]
        t = length // 2
        if t == 0:
            return
        changed = x.clone()
        changed.narrow(axis, t, length - t).add_(3.0)
        with torch.no_grad():
            y, y_changed = trained(x), trained(changed)
        diff = max_abs_diff(y.narrow(axis, 0, t), y_changed.narrow(axis, 0, t))
        rec.expect(
            diff <= _tolerance(y, 1e-6),
            Check.CAUSAL,
            expected=f"outputs at positions < {t} unchanged when positions >= {t} change",
            actual=f"they changed by up to {diff:.3g}",
            dim=dim,
            options=options,
        )


def check_compile(
    rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any], trained: nn.Module | None
) -> None:
    """torch.compile(fullgraph=True) must trace without graph breaks and match eager."""
    if trained is None:
        return
    backend = subject.plan.compile_backend
    x = subject.input(dim, seed=9)
    rec.ran(Check.COMPILE)
    torch.compiler.reset()  # a previous blueprint's graphs and guards must not leak in
    try:
        compiled = torch.compile(trained, fullgraph=True, backend=backend, dynamic=False)
        with torch.no_grad():
            y_compiled = compiled(x)
            y_eager = trained(x)
        diff = max_abs_diff(y_compiled, y_eager)
        rec.expect(
            diff <= _tolerance(y_eager, 1e-4),
            Check.COMPILE,
            expected=f"compiled ({backend}) output within 1e-4 of eager",
            actual=f"max|difference| = {diff:.3g}",
            dim=dim,
            options=options,
        )
    except Exception as exc:  # graph breaks and backend errors surface here
        rec.fail(
            Check.COMPILE,
            expected=f"torch.compile(fullgraph=True, backend={backend!r}) to run",
            actual=f"raised {describe_exception(exc)}",
            dim=dim,
            options=options,
        )
    finally:
        torch.compiler.reset()
