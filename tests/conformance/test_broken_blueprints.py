"""The kit must name each deliberate fault, and pass the correct blueprints.

A conformance kit that passes everything is worthless, so every check is proven here
against a blueprint that breaks exactly that promise (fixtures in conftest.py).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from esper_core.testing import Check, assert_conformant, conformance_report

from .kit_blueprints import BROKEN, GOOD

SLOT_AVAILABLE = importlib.util.find_spec("esper_core.slot") is not None

# fixture -> (the check that must fail, other checks allowed to fail as a consequence)
EXPECTED: dict[str, tuple[Check, frozenset[Check]]] = {
    "kit_off_by_one": (Check.PARAM_COUNT, frozenset()),
    "kit_not_identity": (Check.IDENTITY, frozenset({Check.BLEND, Check.SLOT, Check.CHANNELS_LAST})),
    "kit_changes_shape": (Check.SHAPE, frozenset({Check.CHANNELS_LAST, Check.MEMORY_FORMAT, Check.BF16})),
    "kit_dead_parameter": (Check.LEARN, frozenset()),
    "kit_breaks_channels_last": (Check.CHANNELS_LAST, frozenset()),
    "kit_loses_channels_last": (Check.MEMORY_FORMAT, frozenset()),
    "kit_ignores_unknown_option": (Check.OPTIONS, frozenset()),
    "kit_unstable_keys": (Check.STATE_DICT_KEYS, frozenset()),
    "kit_non_persistent_state": (Check.STATE_DICT_ROUND_TRIP, frozenset()),
    "kit_wrong_flops": (Check.FLOP_COUNT, frozenset()),
    "kit_not_causal": (Check.CAUSAL, frozenset()),
    "kit_graph_break": (Check.COMPILE, frozenset()),
    "kit_forces_float32": (Check.BF16, frozenset()),
    "kit_rejects_odd_dims_late": (Check.BUILD, frozenset()),
    "kit_unknown_topology": (Check.TOPOLOGY, frozenset()),
    "kit_validate_raises_value_error": (Check.OPTIONS, frozenset()),
    # compared with a pre-call copy of the input, the identity checks fail too
    "kit_mutates_input": (
        Check.INPUT_UNCHANGED,
        frozenset({Check.IDENTITY, Check.BLEND, Check.SLOT, Check.CHANNELS_LAST}),
    ),
    "kit_groupnorm_backward_crash": (Check.BACKWARD_NO_GRAD_INPUT, frozenset()),
}


def test_every_broken_fixture_has_an_expectation():
    assert set(EXPECTED) | {"kit_three_faults"} == set(BROKEN)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kit_names_the_fault(name, report_for):
    must, allowed = EXPECTED[name]
    report = report_for(name)
    assert must in report.failed_checks, report.format()
    assert report.failed_checks <= {must} | allowed, report.format()
    assert f"[{must}] {report.blueprint}" in report.format()
    assert report.blueprint.endswith(f":{name}")


@pytest.mark.parametrize("name", sorted(GOOD))
def test_correct_blueprints_pass_every_check(name, report_for):
    report = report_for(name)
    assert report.passed, report.format()
    expected_run = {
        Check.OPTIONS,
        Check.BUILD,
        Check.PARAM_COUNT,
        Check.SHAPE,
        Check.IDENTITY,
        Check.BLEND,
        Check.LEARN,
        Check.STATE_DICT_KEYS,
        Check.STATE_DICT_ROUND_TRIP,
        Check.BF16,
        Check.COMPILE,
    }
    assert expected_run <= set(report.checks_run)
    assert (Check.SLOT in report.checks_run) == SLOT_AVAILABLE
    topology_specific = Check.CHANNELS_LAST if name == "kit_good_cnn" else Check.CAUSAL
    if name == "kit_good_attention":  # FLOPs counted through SDPA, whichever CPU kernel it picks
        assert Check.FLOP_COUNT in report.checks_run
    assert topology_specific in report.checks_run


def test_param_count_fault_is_reported_only_at_the_dims_where_it_is_wrong(report_for):
    failures = [f for f in report_for("kit_off_by_one").failures if f.check is Check.PARAM_COUNT]
    assert {f.dim for f in failures} == {9, 13}  # odd dims of the default sweep (8, 9, 13, 1024)
    assert all("(declared +1)" in f.actual for f in failures)


def test_late_rejection_is_reported_at_the_odd_dims(report_for):
    failures = [f for f in report_for("kit_rejects_odd_dims_late").failures if f.check is Check.BUILD]
    assert {f.dim for f in failures} == {9, 13}
    assert all("ValueError" in f.actual for f in failures)


def test_dead_parameter_is_named(report_for):
    (failure,) = [f for f in report_for("kit_dead_parameter").failures if f.check is Check.LEARN]
    assert "'spare'" in failure.actual


def test_one_assertion_error_lists_every_fault(report_for):
    with pytest.raises(AssertionError) as info:
        assert_conformant(BROKEN["kit_three_faults"])
    message = str(info.value)
    assert message.startswith("cnn:kit_three_faults failed 3 conformance check(s)")
    for check in (Check.PARAM_COUNT, Check.LEARN, Check.STATE_DICT_KEYS):
        assert f"[{check}] cnn:kit_three_faults" in message
    assert "dim=9" in message and "dim=13" in message
    assert message.count("\n  - ") == len(report_for("kit_three_faults").failures)


def test_failure_lines_carry_dim_options_expected_and_actual(report_for):
    failure = next(f for f in report_for("kit_off_by_one").failures if f.dim == 9)
    line = failure.describe()
    assert line.startswith("[param-count] cnn:kit_off_by_one dim=9 options={}")
    numel = 2 * 2 * 9 * 9 + 9  # two 1x1 convs 9 -> 18 -> 9, one bias of 9
    assert f"actual param_count() = {numel + 1}, sum(p.numel()) = {numel} (declared +1)" in line


def test_options_are_swept_for_the_count(report_for):
    failures = [f for f in report_for("kit_off_by_one").failures if f.check is Check.PARAM_COUNT]
    swept = {f.options for f in failures if f.dim == 9}
    assert {(("expansion", 1),), (("act", "tanh"),), (("expansion", 3),), ()} <= swept
    assert {f.dim for f in failures if f.options == (("expansion", 3),)} == {9, 13}


def test_passing_run_returns_the_report_and_keeps_the_callers_rng():
    state = torch.get_rng_state()
    report = assert_conformant(GOOD["kit_good_seq"], dims=[4, 5])
    assert report.passed
    assert torch.equal(torch.get_rng_state(), state)


def test_explicit_options_become_the_base_configuration():
    report = conformance_report(GOOD["kit_good_cnn"], dims=[4], options={"expansion": 3})
    assert report.passed, report.format()
    rejected = conformance_report(GOOD["kit_good_cnn"], dims=[4], options={"expansion": 9})
    assert rejected.failed_checks == {Check.DIMS}


def test_no_accepted_dim_is_a_failure_not_a_silent_pass():
    spec = GOOD["kit_good_cnn"]
    report = conformance_report(spec, dims=[4096])  # only meta-device dims: nothing can run
    assert report.failed_checks == {Check.DIMS}


def test_kit_rejects_something_that_is_not_a_spec():
    from esper_core.errors import RegistryError

    with pytest.raises(RegistryError, match="BlueprintSpec"):
        conformance_report("cnn:noop")  # type: ignore[arg-type]
