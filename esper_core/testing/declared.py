"""Checks of what a blueprint declares about itself for shipping a grown model.

* ``position_wise=True`` (:class:`~esper_core.spec.BlueprintSpec`): cached decoding runs such
  a seed on the new tokens alone, so its output at a position must not change when any other
  position changes (:mod:`esper_core._decoding`). A false declaration would silently change
  what ``generate()`` returns.
* ``affine_form()`` on the module: ``fold(merge=...)`` replaces the seed by the affine map it
  returns (:mod:`esper_core._merge`), so the map must be what ``forward`` computes.

Both run on the trained (perturbed) module, where the seed is far from the identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from esper_core.testing.recorder import Recorder, max_abs_diff
from esper_core.testing.report import Check
from esper_core.testing.subject import Subject

__all__ = ["check_affine_form", "check_position_wise"]


def _tolerance(reference: torch.Tensor, scale: float) -> float:
    return scale * (1.0 + reference.detach().abs().max().item()) if reference.numel() else scale


def check_position_wise(
    rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any], trained: nn.Module | None
) -> None:
    """A blueprint declared ``position_wise=True`` gives each position the output it gives that position alone."""
    axis = subject.topology.sequence_axis
    if axis is None or subject.spec.position_wise is not True or trained is None:
        return
    with rec.guard(Check.POSITION_WISE, dim=dim, options=options, expected="forward passes to run"):
        x = subject.input(dim, seed=10)
        length = x.shape[axis]
        with torch.no_grad():
            whole = trained(x)
            worst = max(
                max_abs_diff(trained(x.narrow(axis, t, 1)), whole.narrow(axis, t, 1)) for t in range(length)
            )
        rec.expect(
            worst <= _tolerance(whole, 1e-5),
            Check.POSITION_WISE,
            expected="declared position_wise=True: each position's output equals the output for that position alone",
            actual=f"they differ by up to {worst:.3g}: the seed mixes positions (declare position_wise=False)",
            dim=dim,
            options=options,
        )


def check_affine_form(
    rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any], trained: nn.Module | None
) -> None:
    """A module with ``affine_form()`` computes exactly ``x Aᵀ + c`` along the feature axis."""
    form = getattr(trained, "affine_form", None)
    if trained is None or not callable(form):
        return
    with rec.guard(Check.AFFINE_FORM, dim=dim, options=options, expected="affine_form() and forward to run"):
        from esper_core._merge import seed_affine

        affine = seed_affine(trained, dim)
        assert not isinstance(affine, str)
        weight, bias = affine
        x = subject.input(dim, seed=11)
        features = x.movedim(subject.topology.feature_axis, -1).to(torch.float64)
        expected = features @ weight.to(torch.float64).T
        if bias is not None:
            expected = expected + bias.to(torch.float64)
        with torch.no_grad():
            got = trained(x).movedim(subject.topology.feature_axis, -1).to(torch.float64)
        diff = max_abs_diff(got, expected)
        rec.expect(
            diff <= _tolerance(got, 1e-5),
            Check.AFFINE_FORM,
            expected="forward(x) == x @ A.T + c along the feature axis, (A, c) = affine_form()",
            actual=f"they differ by up to {diff:.3g}",
            dim=dim,
            options=options,
        )
