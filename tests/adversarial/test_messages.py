"""Reporting a bad value can never fail in its turn, and never floods the screen.

Found by the entry-point fuzzer: ``repr()`` of an int with more than 4300 digits raises
``ValueError`` (Python's integer string conversion limit), an object's own ``__repr__`` may
raise anything, and a 100,000-character string was echoed whole. Every message goes through
``esper_core._checks.shown``.
"""

from __future__ import annotations

import pytest

from esper_core._checks import shown
from esper_core.errors import EsperError, LifecycleError, UnknownBlueprintError, UnknownTopologyError
from esper_core.registry import get_blueprint, get_topology
from esper_core.stages import stage_from_value

from .conftest import stage_slot


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


HOSTILE = [10**5000, -(10**5000), 10**400, Unprintable(), "x" * 100_000, b"y" * 100_000]


@pytest.mark.parametrize(
    "value", HOSTILE, ids=["10**5000", "-10**5000", "10**400", "unprintable", "str", "bytes"]
)
def test_shown_never_raises_and_is_bounded(value) -> None:
    text = shown(value)
    assert isinstance(text, str) and len(text) <= 80


def test_shown_names_a_huge_int_by_its_leading_digits_and_size() -> None:
    assert shown(10**400) == "100000000000... (an int of 401 digits)"
    assert shown(10**5000) == "an int of about 5001 digits"
    assert shown(12345) == "12345"


CALLS = [
    (lambda v: stage_from_value(v), LifecycleError),
    (lambda v: get_topology(v), UnknownTopologyError),
    (lambda v: get_blueprint("cnn", v), UnknownBlueprintError),
    (lambda v: stage_slot("training").advance(v), LifecycleError),
    (lambda v: stage_slot("training").apply(v), LifecycleError),
    (lambda v: stage_slot("training").add_observer(v), LifecycleError),
    (lambda v: stage_slot("training").remove_observer(v), LifecycleError),
    (lambda v: stage_slot("blending").set_alpha_target(0.5, 1, v), LifecycleError),
]


@pytest.mark.parametrize("value", HOSTILE[:5], ids=["10**5000", "-10**5000", "10**400", "unprintable", "str"])
@pytest.mark.parametrize("call", [c[0] for c in CALLS], ids=[str(i) for i in range(len(CALLS))])
def test_a_hostile_value_gets_the_library_error_with_a_short_message(call, value) -> None:
    with pytest.raises(EsperError) as info:
        call(value)
    assert len(str(info.value)) < 1000
