"""The conformance kit for blueprint authors.

A pack proves its blueprints keep Esper's promises with one parametrized test::

    import pytest
    from esper_core.testing import assert_conformant, conformance_cases

    @pytest.mark.parametrize("spec", conformance_cases(distribution="my-pack"))
    def test_conformance(spec):
        assert_conformant(spec)

See ``docs/writing-a-blueprint-pack.md``. ``ESPER_CONFORMANCE_FULL=1`` runs the heavy sweep.
"""

from __future__ import annotations

from esper_core.testing.cases import conformance_cases
from esper_core.testing.kit import assert_conformant, conformance_report
from esper_core.testing.plan import DEFAULT_DIMS, FULL_DIMS, FULL_ENV, REAL_DIM_LIMIT
from esper_core.testing.report import Check, ConformanceReport, Failure

__all__ = [
    "DEFAULT_DIMS",
    "FULL_DIMS",
    "FULL_ENV",
    "REAL_DIM_LIMIT",
    "Check",
    "ConformanceReport",
    "Failure",
    "assert_conformant",
    "conformance_cases",
    "conformance_report",
]
