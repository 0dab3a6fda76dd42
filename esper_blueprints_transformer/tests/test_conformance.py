"""The core's conformance kit over every blueprint this pack registers."""

from __future__ import annotations

import pytest
from torch.nn.attention import SDPBackend, sdpa_kernel

from esper_core.testing import assert_conformant, conformance_cases

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.mark.parametrize(
    "spec", conformance_cases("transformer", distribution="esper-blueprints-transformer")
)
def test_conformance(spec):
    # Declared FLOPs include attention's two dense batched products. FlopCounterMode sees
    # them as the math SDPA backend's matmuls or as a registered fused GPU kernel, but not
    # inside CPU's fused SDPA kernel, so the kit runs here with the math backend.
    with sdpa_kernel(SDPBackend.MATH):
        assert_conformant(spec)
