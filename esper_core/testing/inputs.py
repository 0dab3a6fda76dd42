"""The check that a seed never writes into its input.

A slot hands its seed the host's own features (``h``, or ``h.detach()``, which shares
``h``'s storage), so a seed that modifies its input in place - ``relu_(x)``, ``x += ...``,
an ``inplace=True`` activation on ``x`` - changes the host's tensor: the host's output moves
even while the seed is supposed to be invisible, and autograd may fail later because a
tensor it saved was overwritten. The other checks compare outputs with a copy of the input
taken before the call, so such a seed also fails them; this check says what happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from esper_core.testing.recorder import Recorder, describe_exception, max_abs_diff
from esper_core.testing.report import Check
from esper_core.testing.subject import Subject, perturb_

__all__ = ["check_input_untouched"]

#: (mode, grad mode on, input requires grad): eval inference, a training step on a detached
#: host tensor (an isolated seed), a training step on a host tensor in the graph.
_CASES = (("eval", False, False), ("train", True, False), ("train", True, True))


def _describe(mode: str, grad: bool, requires_grad: bool) -> str:
    if not grad:
        return f"{mode} mode under no_grad"
    return f"{mode} mode, input {'requiring' if requires_grad else 'not requiring'} grad"


def check_input_untouched(rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any]) -> None:
    """Forward must leave its input's values and version counter unchanged.

    Runs a seed with perturbed weights in eval mode under ``no_grad`` and in train mode
    with the input not requiring and requiring grad (a non-leaf, like a host activation),
    each time on a fresh copy of one input, and compares the copy with the original
    afterwards. The version counter (``Tensor._version``, bumped by every in-place write)
    also catches writes that happen to leave the values as they were. Reports the first
    case that writes; an exception raised because of the write (autograd refuses some) is
    reported the same way.
    """
    rec.ran(Check.INPUT_UNCHANGED)
    module = None
    with rec.guard(Check.INPUT_UNCHANGED, dim=dim, options=options, expected="the seed to build"):
        module = perturb_(subject.build(dim, options, seed=15))
    if module is None:
        return
    x = subject.input(dim, seed=16)
    for mode, grad, requires_grad in _CASES:
        where = _describe(mode, grad, requires_grad)
        module.train(mode == "train")
        source = x.clone().requires_grad_(requires_grad)
        inp = source * 1.0 if requires_grad else source  # a non-leaf, like a host activation
        version = inp._version
        try:
            with torch.set_grad_enabled(grad):
                module(inp)
        except Exception as exc:
            rec.fail(
                Check.INPUT_UNCHANGED,
                expected=f"forward in {where} to run without writing into its input",
                actual=f"raised {describe_exception(exc)}",
                dim=dim,
                options=options,
            )
            return
        diff = max_abs_diff(inp.detach(), x)
        if diff != 0.0 or inp._version != version:
            detail = f"max|x_after - x_before| = {diff:.3g}" if diff else "same values"
            rec.fail(
                Check.INPUT_UNCHANGED,
                expected="forward to leave its input tensor unchanged (no in-place writes into x)",
                actual=f"it wrote into the input in {where} ({detail}, version counter "
                f"{version} -> {inp._version})",
                dim=dim,
                options=options,
            )
            return
