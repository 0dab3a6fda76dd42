"""The conformance run: every check for one blueprint, collected into one report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from esper_core.errors import RegistryError
from esper_core.spec import BlueprintSpec
from esper_core.testing.backward import check_backward_in_child
from esper_core.testing.declared import check_affine_form, check_position_wise
from esper_core.testing.deep import (
    check_bf16,
    check_causal,
    check_channels_last,
    check_compile,
    check_learns,
    check_state_dict,
)
from esper_core.testing.inputs import check_input_untouched
from esper_core.testing.integration import check_blend, check_options, check_slot
from esper_core.testing.plan import REAL_DIM_LIMIT, make_plan
from esper_core.testing.recorder import Recorder, describe_exception
from esper_core.testing.report import Check, ConformanceReport
from esper_core.testing.subject import Subject
from esper_core.testing.sweep import run_sweep

__all__ = ["assert_conformant", "conformance_report"]


def conformance_report(
    spec: BlueprintSpec,
    dims: Iterable[int] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    full: bool | None = None,
) -> ConformanceReport:
    """Run every conformance check on ``spec`` and return what failed (never raises for a
    blueprint fault). Arguments are those of :func:`assert_conformant`."""
    if not isinstance(spec, BlueprintSpec):
        raise RegistryError(f"conformance needs a BlueprintSpec, got {type(spec).__name__}: {spec!r}")
    rec = Recorder(spec.key)
    # The kit seeds torch's RNG for reproducible inputs and inits; fork so the caller's
    # random stream is the same after the run as before it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _run(rec, spec, dims, options, full)
    return rec.report()


def _run(
    rec: Recorder,
    spec: BlueprintSpec,
    dims: Iterable[int] | None,
    options: Mapping[str, Any] | None,
    full: bool | None,
) -> None:
    from esper_core.registry import get_topology

    try:
        topology = get_topology(spec.topology)
    except RegistryError as exc:
        rec.fail(
            Check.TOPOLOGY,
            expected=f"topology {spec.topology!r} to be registered",
            actual=describe_exception(exc),
        )
        return
    check_registration(rec, spec)
    base = dict(options or {})
    plan = make_plan(spec.options, dims, base, full=full)
    subject = Subject(spec=spec, topology=topology, plan=plan)

    sweep = run_sweep(rec, subject)
    check_options(rec, subject, sweep.accepted[0] if sweep.accepted else plan.dims[0], base)
    if not sweep.built:
        if not sweep.accepted or not rec.has_failed(Check.BUILD):
            rec.fail(
                Check.DIMS,
                expected=f"at least one dim <= {REAL_DIM_LIMIT} of {list(plan.dims)} to be accepted with options {base}",
                actual=f"accepted: {list(sweep.accepted) or 'none'}",
            )
        return
    dim = sweep.built[0]
    if not (rec.has_failed(Check.SHAPE) or rec.has_failed(Check.FORWARD)):
        # blending needs seed and host of one shape; the shape failure is already reported
        check_blend(rec, subject, dim, base)
        check_slot(rec, subject, dim, base)
    if not rec.has_failed(Check.FORWARD):
        check_input_untouched(rec, subject, dim, base)
    check_learns(rec, subject, dim, base)
    check_backward_in_child(rec, subject, dim, base)
    trained = check_state_dict(rec, subject, dim, base)
    check_bf16(rec, subject, dim, base)
    check_channels_last(rec, subject, dim, base, trained)
    check_causal(rec, subject, dim, base, trained)
    check_position_wise(rec, subject, dim, base, trained)
    check_affine_form(rec, subject, dim, base, trained)
    check_compile(rec, subject, dim, base, trained)


def check_registration(rec: Recorder, spec: BlueprintSpec) -> None:
    """The registry kept ``spec``, or at least nothing else installed holds its name."""
    from esper_core.registry import get_registry

    rec.ran(Check.REGISTRATION)
    registry = get_registry()
    expected = "the registry to keep this blueprint (no name clash, counts that are non-negative ints)"
    for refusal in registry.refusals():
        if refusal.spec is spec:
            origin = f"{refusal.source.distribution} {refusal.source.version}"
            rec.fail(Check.REGISTRATION, expected=expected, actual=f"refused ({origin}): {refusal.reason}")
            return
    holder = registry.source_of(spec.key)
    if holder is not None and not registry.holds(spec):
        rec.fail(
            Check.REGISTRATION,
            expected=f"no other installed blueprint named {spec.key!r}",
            actual=(
                f"{spec.key} is already registered by {holder.distribution} {holder.version}; "
                "a pack registering this blueprint next to it would have it refused (rename it)"
            ),
        )


def assert_conformant(
    spec: BlueprintSpec,
    dims: Iterable[int] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    full: bool | None = None,
) -> ConformanceReport:
    """Check that ``spec`` keeps every promise a blueprint makes to Esper.

    ``dims`` overrides the width sweep (dims above 128 are only counted, on the meta
    device); ``options`` is the base configuration (default: the declared defaults), from
    which each declared option is also varied one at a time. ``full=True`` (or
    ``ESPER_CONFORMANCE_FULL=1``) runs the heavy sweep and compiles with Inductor.

    Raises a single AssertionError listing every failed check with the blueprint, check
    name, dim, options, expected and actual values; returns the report when all pass.
    """
    report = conformance_report(spec, dims, options, full=full)
    report.raise_if_failed()
    return report
