"""The pack's whole conformance test: the kit makes (B, C, L) inputs from the pack's own
topology, and checks every blueprint with every blend algorithm."""

import pytest

from esper_core.testing import assert_conformant, conformance_cases


@pytest.mark.parametrize("spec", conformance_cases(distribution="esper-blueprints-seq1d"))
def test_conformance(spec):
    assert_conformant(spec)
