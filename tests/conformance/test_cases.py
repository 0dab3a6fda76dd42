"""conformance_cases: pytest parameters for registered blueprints."""

from __future__ import annotations

import pytest

from esper_core.errors import UnknownBlueprintError
from esper_core.registry import temporary_blueprints

from .kit_blueprints import GOOD

DIST = "esper-kit-tests"


@pytest.fixture
def registered():
    with temporary_blueprints(GOOD["kit_good_cnn"], GOOD["kit_good_seq"], distribution=DIST) as specs:
        yield specs


def test_cases_cover_a_distribution_with_readable_ids(registered):
    cases = conformance_cases_ids(distribution=DIST)
    assert cases == [
        ("cnn:kit_good_cnn", GOOD["kit_good_cnn"]),
        ("transformer:kit_good_seq", GOOD["kit_good_seq"]),
    ]


def test_distribution_names_are_normalised(registered):
    assert len(conformance_cases_ids(distribution="Esper_Kit.Tests")) == 2


def test_topology_and_pattern_filter(registered):
    assert [i for i, _ in conformance_cases_ids(topology="transformer", distribution=DIST)] == [
        "transformer:kit_good_seq"
    ]
    assert [i for i, _ in conformance_cases_ids(pattern="*_cnn", distribution=DIST)] == ["cnn:kit_good_cnn"]
    assert [i for i, _ in conformance_cases_ids(pattern="cnn:kit_*")] == ["cnn:kit_good_cnn"]


def test_matching_nothing_raises_instead_of_silently_skipping(registered):
    with pytest.raises(UnknownBlueprintError, match="no registered blueprint matches") as info:
        conformance_cases_ids(distribution="esper-not-installed")
    assert "cnn:kit_good_cnn" in str(info.value)


def test_cases_disappear_with_the_registration():
    with temporary_blueprints(GOOD["kit_good_cnn"], distribution=DIST):
        assert len(conformance_cases_ids(distribution=DIST)) == 1
    with pytest.raises(UnknownBlueprintError):
        conformance_cases_ids(distribution=DIST)


def conformance_cases_ids(**filters):
    from esper_core.testing import conformance_cases

    return [(case.id, case.values[0]) for case in conformance_cases(**filters)]
