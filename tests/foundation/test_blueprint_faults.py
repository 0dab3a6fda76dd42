"""A blueprint's own code misbehaving gives the library's error, naming what to fix.

Unit tests beside the real-install tests of ``test_pack_isolation.py``: counts that are not
non-negative ints, factories that return something else or blow up, validators that raise
the wrong thing, and option errors that name the blueprint.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from esper_core.errors import BlueprintError, OptionError
from esper_core.gates import QualityGates
from esper_core.options import Option
from esper_core.registry import temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.spec import BlueprintSpec, count_problem
from esper_core.testing import Check, conformance_report


class Gain(nn.Module):
    def __init__(self, dim: int, **_: object) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.gain.view(1, -1, *([1] * (x.dim() - 2))))


def spec(name: str = "fault", **fields: object) -> BlueprintSpec:
    values: dict[str, object] = {
        "name": name,
        "topology": "cnn",
        "factory": Gain,
        "param_count": lambda dim, **_: dim,
        "description": "per-channel gain (test)",
    }
    values.update(fields)
    return BlueprintSpec(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 7, 10**30, np.int64(5)])
def test_valid_counts(value: object) -> None:
    assert count_problem(value) is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [(-1, "returned -1;"), (True, "True (bool)"), (152.5, "152.5 (float)"), (152.0, "152.0 (float)"),
     (math.nan, "nan (float)"), ("64", "'64' (str)"), (None, "None (NoneType)"),
     (torch.tensor(3), "tensor(3) (Tensor)")],
)  # fmt: skip
def test_invalid_counts_are_named(value: object, shown: str) -> None:
    problem = count_problem(value)
    assert problem is not None and shown in problem and "non-negative int" in problem


@pytest.mark.parametrize("which", ["param_count", "flop_count"])
@pytest.mark.parametrize("bad", [lambda *a, **k: 152.5, lambda *a, **k: -3, lambda *a, **k: 1 / 0])
def test_a_broken_count_raises_blueprint_error_with_the_configuration(which: str, bad) -> None:
    subject = spec(options=(Option("k", int, 2, "a knob", minimum=1),), **{which: bad})
    call = (
        subject.count_params
        if which == "param_count"
        else lambda d, **o: subject.count_flops(d, (2, d, 3, 3), **o)
    )
    with pytest.raises(
        BlueprintError, match=rf"blueprint cnn:fault has a broken {which} at dim=8 with options \{{'k': 3\}}"
    ):
        call(8, k=3)


def test_an_option_error_raised_inside_a_count_stays_a_declared_rejection() -> None:
    def count(dim: int) -> int:
        raise OptionError(f"dim={dim} is not supported")

    with pytest.raises(OptionError, match=r"^cnn:fault: dim=9 is not supported$"):
        spec(param_count=count).count_params(9)


@pytest.mark.parametrize(
    ("factory", "detail"),
    [
        (lambda dim: {"w": 1}, "the factory returned {'w': 1} (dict), not an nn.Module"),
        (lambda dim: print, "the factory returned <built-in function print> (builtin_function_or_method)"),
        (lambda dim: None, "the factory returned None (NoneType), not an nn.Module"),
        (lambda dim: torch.zeros(2), "the factory returned tensor([0., 0.]) (Tensor), not an nn.Module"),
        (lambda dim: 1 / 0, "the factory raised ZeroDivisionError: division by zero"),
        (lambda dim: nn.Linear(dim, 2**40), "can't allocate memory"),
    ],
)
def test_a_misbehaving_factory_raises_blueprint_error(factory, detail: str) -> None:
    with pytest.raises(BlueprintError) as caught:
        spec(factory=factory, param_count=lambda dim: 0).build(8)
    message = str(caught.value)
    assert message.startswith("blueprint cnn:fault failed to build at dim=8 with options {}: ")
    assert detail in message


def test_out_of_memory_says_how_big_the_module_would_be() -> None:
    def factory(dim: int, width: int) -> nn.Module:
        raise MemoryError

    subject = spec(factory=factory, param_count=lambda dim, width: dim * width,
                   options=(Option("width", int, 4, "width", minimum=1),))  # fmt: skip
    with pytest.raises(
        BlueprintError, match=r"MemoryError \(out of memory; param_count\(\) says 8,000,000,000 parameters"
    ):
        subject.build(8, width=10**9)


def test_a_validator_that_raises_the_wrong_type_is_a_blueprint_fault() -> None:
    def validate(dim: int) -> None:
        raise TypeError("unsupported operand")

    with pytest.raises(
        BlueprintError, match=r"cnn:fault could not validate .* validate\(\) raised TypeError"
    ):
        spec(validate=validate).resolve(8, {})


def test_option_errors_name_the_blueprint() -> None:
    subject = spec(options=(Option("k", int, 2, "a knob", minimum=1, maximum=4),))
    with pytest.raises(
        OptionError, match=r"^cnn:fault: option 'k' got 9 \(int\); accepted: an int in \[1, 4\]$"
    ):
        subject.build(8, k=9)

    def validate(dim: int, k: int) -> None:
        raise OptionError(f"k={k} must divide dim={dim}")

    with pytest.raises(OptionError, match=r"^cnn:fault: k=3 must divide dim=8$"):
        spec(options=subject.options, validate=validate).count_params(8, k=3)


def test_germinate_names_the_registering_distribution_and_leaves_the_slot_empty() -> None:
    broken = spec("returns_none", factory=lambda dim: None, param_count=lambda dim: 0)
    slot = SeedSlot("s0", topology="cnn", dim=8, gates=QualityGates("permissive"))
    with (
        temporary_blueprints(broken, distribution="esper-test-pack"),
        pytest.raises(BlueprintError) as caught,
    ):
        slot.germinate("returns_none", options={})
    assert str(caught.value).startswith(
        "blueprint cnn:returns_none (registered by esper-test-pack 0) failed to build"
    )
    assert slot.stage.name == "DORMANT" and slot.seed is None


def test_the_kit_checks_count_types_at_every_dim_and_option_value() -> None:
    subject = spec(
        "fault_float",
        param_count=lambda dim, k: dim + 0.5,
        options=(Option("k", int, 2, "a knob", minimum=1, maximum=3),),
    )
    report = conformance_report(subject)
    assert Check.PARAM_COUNT in report.failed_checks
    seen = {(f.dim, f.options) for f in report.failures if f.check is Check.PARAM_COUNT}
    assert {dim for dim, _ in seen} == {8, 9, 13, 1024}  # real and meta-device dims
    assert {dict(options or ()).get("k", 2) for _, options in seen} == {1, 2, 3}  # every option value
    assert all(
        "(float); a count must be a non-negative int" in f.actual
        for f in report.failures
        if f.check is Check.PARAM_COUNT
    )


def test_the_kit_reports_a_clash_with_an_installed_blueprint() -> None:
    lookalike = spec("conv_light")  # cnn:conv_light belongs to esper-blueprints-cnn
    report = conformance_report(lookalike, dims=[8])
    (failure,) = [f for f in report.failures if f.check is Check.REGISTRATION]
    assert "cnn:conv_light is already registered by esper-blueprints-cnn" in failure.actual
