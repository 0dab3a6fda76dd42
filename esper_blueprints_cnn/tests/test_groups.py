"""The GroupNorm group rule: its documented table and the properties it promises."""

from __future__ import annotations

import pytest

from esper_blueprints_cnn import GROUP_CANDIDATES, MIN_GROUP_SIZE, get_num_groups
from esper_core import RegistryError

# The table in docs/blueprints-cnn.md (and in the spec this pack re-implements).
DOCUMENTED = {
    1: 1,
    3: 1,
    8: 8,
    16: 1,
    31: 1,
    37: 1,
    41: 1,
    32: 2,
    48: 2,
    64: 4,
    80: 4,
    96: 4,
    112: 4,
    128: 8,
    384: 16,
    512: 32,
    768: 32,
    4096: 32,
}


@pytest.mark.parametrize(("channels", "groups"), sorted(DOCUMENTED.items()))
def test_documented_table(channels: int, groups: int) -> None:
    assert get_num_groups(channels) == groups


def test_rule_holds_for_every_width() -> None:
    for channels in range(1, 4097):
        groups = get_num_groups(channels)
        assert groups in GROUP_CANDIDATES
        assert channels % groups == 0
        qualifying = [g for g in GROUP_CANDIDATES if channels % g == 0 and channels // g >= MIN_GROUP_SIZE]
        if qualifying:
            # Rule 1: the most groups that still leave MIN_GROUP_SIZE channels per group.
            assert groups == max(qualifying), channels
        else:
            # Rule 2: the largest candidate that divides C.
            assert groups == max(g for g in GROUP_CANDIDATES if channels % g == 0), channels


def test_min_group_size_is_a_parameter() -> None:
    assert get_num_groups(64, min_group_size=2) == 32
    assert get_num_groups(64, min_group_size=64) == 1


@pytest.mark.parametrize("bad", [0, -4, True, 2.0, "64", None])
def test_rejects_bad_channel_counts(bad: object) -> None:
    with pytest.raises(RegistryError, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        get_num_groups(bad)  # type: ignore[arg-type]


def test_rejects_bad_min_group_size() -> None:
    with pytest.raises(RegistryError, match="min_group_size"):
        get_num_groups(64, min_group_size=0)
