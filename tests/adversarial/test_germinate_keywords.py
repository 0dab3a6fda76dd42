"""Issue 17 item 8 (slot part): a blueprint option passed as a keyword points to ``options={...}``.

``germinate(..., dilation=2)`` used to surface as Python's ``TypeError`` about a signature
(naming an internal class). Through every germinate there is (the slot, the model, the
distributed lifecycle) it is the library's :class:`LifecycleError`, it says where options
go, and nothing changes.
"""

from __future__ import annotations

import pytest
import torch

from esper_core.distributed import DistributedLifecycle
from esper_core.errors import EsperError, LifecycleError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.model import MorphogeneticModel
from esper_core.stages import SeedStage

from .conftest import model_snapshot
from .fuzzing import same


def model() -> MorphogeneticModel:
    torch.manual_seed(0)
    return MorphogeneticModel(CNNHost(10, n_blocks=1, base_channels=4), gates=QualityGates("permissive"))


CALLS = {
    "SeedSlot.germinate": lambda m: m.slot("r0c0").germinate("conv_light", dilation=2),
    "MorphogeneticModel.germinate": lambda m: m.germinate("r0c0", "conv_light", dilation=2),
    "DistributedLifecycle.germinate": lambda m: DistributedLifecycle(m).germinate(
        "r0c0", "conv_light", dilation=2
    ),
}


@pytest.mark.parametrize("call", list(CALLS.values()), ids=list(CALLS))
def test_an_option_given_as_a_keyword_points_to_options(call) -> None:
    target = model()
    before = model_snapshot(target)
    with pytest.raises(LifecycleError) as info:
        call(target)
    assert isinstance(info.value, EsperError) and not isinstance(info.value, TypeError)
    message = str(info.value)
    assert "['dilation']" in message and "options={'dilation': ...}" in message
    assert "accepted keywords: ['options', 'seed_id'" in message
    assert target.slot("r0c0").stage is SeedStage.DORMANT
    assert same(before, model_snapshot(target))


def test_several_stray_keywords_are_all_named() -> None:
    with pytest.raises(
        LifecycleError, match=r"\['dilation', 'groups'\].*options=\{'dilation': \.\.\., 'groups': \.\.\.\}"
    ):
        model().germinate("r0c0", "conv_light", groups=2, dilation=2)


def test_the_same_option_in_options_is_a_registry_decision() -> None:
    """Through ``options={...}`` the blueprint's own option list decides (conv_light has no dilation)."""
    target = model()
    with pytest.raises(EsperError, match="dilation"):
        target.germinate("r0c0", "conv_light", options={"dilation": 2})
    target.germinate("r0c0", "conv_light", options={})
    assert target.slot("r0c0").stage is SeedStage.GERMINATED
