"""The core's conformance kit over every blueprint this pack registers."""

from __future__ import annotations

import pytest

from esper_core import BlueprintSpec
from esper_core.testing import assert_conformant, conformance_cases


@pytest.mark.parametrize("spec", conformance_cases("cnn", distribution="esper-blueprints-cnn"))
def test_conformance(spec: BlueprintSpec) -> None:
    assert_conformant(spec)
