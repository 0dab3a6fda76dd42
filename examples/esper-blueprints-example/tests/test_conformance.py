"""The pack's whole conformance test: one function, one case per blueprint the pack registers."""

import pytest

from esper_core.testing import assert_conformant, conformance_cases


@pytest.mark.parametrize("spec", conformance_cases(distribution="esper-blueprints-example"))
def test_conformance(spec):
    assert_conformant(spec)
