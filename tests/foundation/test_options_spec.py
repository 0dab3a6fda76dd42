"""Option and BlueprintSpec validation: bad input is rejected before any factory runs."""

from __future__ import annotations

import math

import pytest

from esper_core.errors import OptionError, RegistryError
from esper_core.options import Option
from esper_core.spec import BlueprintSpec, check_dim


def test_int_option_rejects_bool_and_float_and_names_what_is_accepted() -> None:
    opt = Option("reduction", int, 4, "squeeze ratio", minimum=1)
    assert opt.validate(8) == 8
    for bad in (True, 2.0, "4", None):
        with pytest.raises(OptionError, match=r"reduction.*accepted: an int >= 1"):
            opt.validate(bad)
    with pytest.raises(OptionError, match="got 0"):
        opt.validate(0)


def test_float_option_coerces_ints_and_rejects_non_finite() -> None:
    opt = Option("scale", float, 1.0, "scale", minimum=0.0, maximum=2.0)
    assert opt.validate(1) == 1.0 and isinstance(opt.validate(1), float)
    for bad in (math.nan, math.inf, 2.5, -0.1, False):
        with pytest.raises(OptionError):
            opt.validate(bad)


def test_choices_and_bool_options() -> None:
    mode = Option("mode", str, "a", "mode", choices=("a", "b"))
    assert mode.validate("b") == "b"
    with pytest.raises(OptionError, match=r"one of \['a', 'b'\]"):
        mode.validate("c")
    flag = Option("checkpoint", bool, False, "activation checkpointing")
    with pytest.raises(OptionError):
        flag.validate(1)


def test_an_invalid_default_is_rejected_at_declaration() -> None:
    with pytest.raises(OptionError, match="reduction"):
        Option("reduction", int, 0, "ratio", minimum=1)
    with pytest.raises(OptionError, match="type"):
        Option("thing", list, [], "unsupported type")


@pytest.mark.parametrize("dim", [0, -1, 1.5, True, "8", None])
def test_check_dim_rejects_non_positive_ints(dim: object) -> None:
    with pytest.raises(RegistryError, match="dim must be a positive int"):
        check_dim(dim)


def test_unknown_option_is_rejected_before_the_factory_runs(fakes) -> None:
    spec = fakes.widened_spec()
    with pytest.raises(OptionError, match=r"unknown option\(s\) \['widht'\].*width"):
        spec.build(3, widht=2)
    with pytest.raises(OptionError):
        spec.build(3, width=0)
    assert spec.factory.calls == []
    module = spec.build(3, width=2)
    assert spec.factory.calls == [(3, 2)]
    assert sum(p.numel() for p in module.parameters()) == spec.count_params(3, width=2) == 8


def test_cross_option_validate_runs_before_count_and_build() -> None:
    def validate(dim: int, n_head: int) -> None:
        if dim % n_head:
            raise OptionError(f"n_head={n_head} must divide dim={dim}")

    spec = BlueprintSpec(
        name="heads",
        topology="transformer",
        factory=lambda dim, n_head: pytest.fail("factory must not run"),
        param_count=lambda dim, n_head: pytest.fail("count must not run"),
        description="validated",
        options=(Option("n_head", int, 4, "heads", minimum=1),),
        validate=validate,
    )
    with pytest.raises(OptionError, match="n_head=4 must divide dim=6"):
        spec.count_params(6)
    with pytest.raises(OptionError, match="n_head=4 must divide dim=6"):
        spec.build(6)


def test_spec_fields_are_validated() -> None:
    with pytest.raises(ValueError):
        BlueprintSpec(name="Bad Name", topology="cnn", factory=print, param_count=len, description="x")
    with pytest.raises(ValueError):
        BlueprintSpec(name="ok", topology="cnn", factory=print, param_count=len, description="")
    with pytest.raises(RegistryError, match="twice"):
        BlueprintSpec(
            name="ok",
            topology="cnn",
            factory=print,
            param_count=len,
            description="x",
            options=(Option("a", int, 1, "a"), Option("a", int, 2, "a")),
        )
