"""Checks of a blueprint against the rest of the core: option validation, blending, slots.

These exercise the blueprint the way Esper itself uses it, so a blueprint that is fine
on its own but breaks the lifecycle's promises (the host is unchanged until a seed has
learned something) is caught here rather than in a user's training run.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from esper_core.errors import OptionError
from esper_core.testing.plan import invalid_values
from esper_core.testing.recorder import Recorder, describe_exception, max_abs_diff
from esper_core.testing.report import Check
from esper_core.testing.subject import BATCH, Subject

__all__ = ["UNKNOWN_OPTION", "check_blend", "check_options", "check_slot"]

UNKNOWN_OPTION = "esper_conformance_unknown_option"
"""The option name the kit passes to prove unknown options are rejected."""

_PROBE_PREFIX = "conformance_probe_"


def _bad_option_sets(subject: Subject, base: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cases = [(f"unknown option {UNKNOWN_OPTION!r}", {**base, UNKNOWN_OPTION: 1})]
    for option in subject.spec.options:
        for value in invalid_values(option):
            try:
                option.validate(value)
            except OptionError:
                cases.append((f"{option.name}={value!r}", {**base, option.name: value}))
            else:  # the option accepts it after all (e.g. an unusual declaration): not a probe
                continue
    return cases


def check_options(rec: Recorder, subject: Subject, dim: int, base: Mapping[str, Any]) -> None:
    """Unknown options and invalid values must raise OptionError before the factory or
    the count runs; a recording copy of the spec shows whether they were reached."""
    calls: list[str] = []
    spec = subject.spec

    def factory(*args: Any, **kwargs: Any) -> Any:
        calls.append("factory")
        return spec.factory(*args, **kwargs)

    def count(*args: Any, **kwargs: Any) -> Any:
        calls.append("param_count")
        return spec.param_count(*args, **kwargs)

    rec.ran(Check.OPTIONS)
    try:
        probe = attrs.evolve(spec, factory=factory, param_count=count)
    except Exception as exc:  # a spec subclass that cannot be copied cannot be probed
        rec.fail(
            Check.OPTIONS, expected="attrs.evolve(spec) to work", actual=describe_exception(exc), dim=dim
        )
        return
    for label, options in _bad_option_sets(subject, base):
        for action in ("build", "count_params"):
            calls.clear()
            expected = f"{action}() to raise OptionError for {label} before any factory or count runs"
            try:
                getattr(probe, action)(dim, **options)
            except OptionError:
                if calls:
                    rec.fail(
                        Check.OPTIONS, expected=expected, actual=f"raised only after {calls} ran", dim=dim
                    )
                continue
            except Exception as exc:
                rec.fail(
                    Check.OPTIONS,
                    expected=expected,
                    actual=f"raised {describe_exception(exc)} after running {calls or 'nothing'}",
                    dim=dim,
                )
                continue
            rec.fail(
                Check.OPTIONS, expected=expected, actual=f"accepted it; ran {calls or 'nothing'}", dim=dim
            )


def _optional(module: str) -> Any | None:
    """Import a core module that may not exist in this version of the core."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def check_blend(rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any]) -> None:
    """A fresh seed blended with its host must give back the host exactly, for every blend
    algorithm the core offers and a non-zero, per-sample alpha (and gate)."""
    blending = _optional("esper_core.blend")
    if blending is None:
        return
    with rec.guard(Check.BLEND, dim=dim, options=options, expected="the seed to run before blending"):
        module = subject.build(dim, options).eval()
        host = subject.input(dim, seed=10)
        generator = torch.Generator().manual_seed(11)
        shape = subject.topology.alpha_shape(BATCH)
        alpha = 0.25 + 0.5 * torch.rand(shape, generator=generator)
        gate = 0.25 + 0.5 * torch.rand(shape, generator=generator)
        with torch.no_grad():
            seed_out = module(host.clone())  # host stays the pre-call reference
        for algorithm in blending.BlendAlgorithm:
            with rec.guard(Check.BLEND, dim=dim, options=options, expected=f"blend({algorithm.name}) to run"):
                uses_gate = algorithm is blending.BlendAlgorithm.GATE
                out = blending.blend(algorithm, host, seed_out, alpha, gate if uses_gate else None)
                diff = max_abs_diff(out, host)
                rec.expect(
                    diff == 0.0,
                    Check.BLEND,
                    expected=f"blend({algorithm.name}, host, seed(host), alpha>0) == host exactly",
                    actual=f"max|out - host| = {diff:.3g}",
                    dim=dim,
                    options=options,
                )


def _compare(rec: Recorder, out: torch.Tensor, host: torch.Tensor, what: str, dim: int, options) -> None:
    diff = max_abs_diff(out, host)
    rec.expect(
        diff == 0.0,
        Check.SLOT,
        expected=f"slot output == host exactly ({what})",
        actual=f"max|out - host| = {diff:.3g}",
        dim=dim,
        options=options,
    )


def check_slot(rec: Recorder, subject: Subject, dim: int, options: Mapping[str, Any]) -> None:
    """Germinate the blueprint in a real SeedSlot (active whenever the core has slots) and
    require the host unchanged while the seed is blended in with alpha > 0.

    In TRAINING the slot blends with an explicit per-sample ``alpha_override``; a seed with
    parameters is then advanced to BLENDING (permissive gates, no dwell) and checked with
    the schedule's own alpha after one epoch. A parameterless seed (``noop``) stops at
    TRAINING: the gates rightly refuse to blend a seed that cannot learn.
    """
    slot_module = _optional("esper_core.slot")
    if slot_module is None or not hasattr(slot_module, "SeedSlot"):
        return
    from esper_core.blend import BlendAlgorithm
    from esper_core.errors import LifecycleWarning
    from esper_core.gates import QualityGates
    from esper_core.registry import temporary_blueprints
    from esper_core.stages import SeedStage

    # A renamed copy: the original may already be registered (it usually is), and a second
    # registration of the same key would be a conflict.
    probe = attrs.evolve(subject.spec, name=_PROBE_PREFIX + subject.spec.name)
    gates = QualityGates("permissive", permissive_training_evaluations=0)
    host = subject.input(dim, seed=12)
    alpha = 0.25 + 0.5 * torch.rand(
        subject.topology.alpha_shape(BATCH), generator=torch.Generator().manual_seed(13)
    )
    # The kit's own probe slot warns where it is expected to (a parameterless seed cannot learn).
    with temporary_blueprints(probe, distribution="esper-conformance-kit"), warnings.catch_warnings():
        warnings.simplefilter("ignore", LifecycleWarning)
        for algorithm in BlendAlgorithm:
            name = algorithm.name
            with rec.guard(
                Check.SLOT, dim=dim, options=options, expected=f"a {name} slot to germinate and blend"
            ):
                slot = slot_module.SeedSlot("r0c0", topology=subject.topology.name, dim=dim, gates=gates)
                slot.germinate(
                    probe.name,
                    options=dict(options),
                    seed_id="conformance",
                    algorithm=algorithm,
                    ramp_epochs=2,
                )
                _advance(slot, SeedStage.TRAINING)
                slot.eval()
                with torch.no_grad():
                    out = slot(host.clone(), alpha_override=alpha)  # host: the pre-call reference
                _compare(rec, out, host, f"{name} in TRAINING, per-sample alpha_override", dim, options)
                if not any(True for _ in slot.seed.parameters()):
                    continue
                _advance(slot, SeedStage.BLENDING)
                slot.step_epoch()
                if not slot.alpha > 0.0:
                    raise AssertionError(f"alpha stayed {slot.alpha} after an epoch of BLENDING")
                with torch.no_grad():
                    out = slot(host.clone())
                _compare(rec, out, host, f"{name} in BLENDING, alpha={slot.alpha:.3g}", dim, options)


def _advance(slot: Any, target: Any) -> None:
    result = slot.advance(target)
    if slot.stage is not target:
        raise AssertionError(f"advance({target.name}) refused: {result.message} {list(result.checks_failed)}")
