"""Shared fixtures for the conformance-kit tests."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from esper_core.testing import ConformanceReport, conformance_report

from .kit_blueprints import SPECS


@functools.cache
def _report(name: str) -> ConformanceReport:
    return conformance_report(SPECS[name])


@pytest.fixture(scope="session")
def report_for() -> Callable[[str], ConformanceReport]:
    """The kit's report for a named fixture blueprint (see kit_blueprints.py), computed once."""
    return _report
