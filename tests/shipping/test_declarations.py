"""The conformance kit checks what a blueprint declares for shipping: position_wise and affine_form."""

from __future__ import annotations

import torch
from torch import nn

from esper_core.spec import BlueprintSpec
from esper_core.testing import conformance_report
from esper_core.testing.report import Check

from .conftest import AffineToken, MixToken, MLPToken


class WrongAffine(AffineToken):
    """Declares the transposed matrix: a merge would silently change the model."""

    def affine_form(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = super().affine_form()
        return weight.T, bias


class ZeroMix(MixToken):
    """A running-mean seed that is the identity at birth (as every blueprint must be)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)


def _spec(name: str, factory, position_wise: bool | None = True) -> BlueprintSpec:  # type: ignore[no-untyped-def]
    return BlueprintSpec(
        name, "transformer", factory, lambda d: d * d + d, "test", position_wise=position_wise
    )


def _failed(spec: BlueprintSpec) -> set[Check]:
    report = conformance_report(spec, dims=[8])
    return {f.check for f in report.failures}


def test_an_honest_declaration_passes() -> None:
    report = conformance_report(_spec("honest_affine", AffineToken), dims=[8])
    assert {Check.POSITION_WISE, Check.AFFINE_FORM} <= set(report.checks_run)
    assert not {Check.POSITION_WISE, Check.AFFINE_FORM} & {f.check for f in report.failures}


def test_a_seed_that_mixes_positions_cannot_declare_position_wise() -> None:
    assert Check.POSITION_WISE in _failed(_spec("lying_mix", ZeroMix))
    assert Check.POSITION_WISE not in _failed(_spec("honest_mix", ZeroMix, position_wise=False))


def test_a_wrong_affine_form_fails() -> None:
    assert Check.AFFINE_FORM in _failed(_spec("wrong_affine", WrongAffine))
    report = conformance_report(_spec("plain_mlp", MLPToken), dims=[8])
    assert Check.AFFINE_FORM not in report.checks_run  # nothing declared, nothing to check
