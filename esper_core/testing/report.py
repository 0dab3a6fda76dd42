"""What the conformance kit found: named checks, individual failures, and the report.

Every failure names the blueprint, the check, the dim and options it was seen at, and
what was expected versus what happened, so a pack author can act on the message without
re-running anything. The kit collects every failure before raising, because fixing one
blueprint problem at a time through a test loop is slow and hides related faults.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["Check", "ConformanceReport", "Failure"]


class Check(enum.StrEnum):
    """The name of each conformance check; the value is what reports print."""

    TOPOLOGY = "topology"
    """The spec's topology is registered, so inputs of its layout can be made."""
    REGISTRATION = "registration"
    """The registry did not refuse the spec (a name clash, a broken count), and no other
    installed blueprint holds its ``topology:name``."""
    DIMS = "dims"
    """At least one dim of the sweep is accepted by the blueprint."""
    OPTIONS = "options"
    """Unknown options and invalid values are rejected before the factory (or count) runs."""
    BUILD = "build"
    """Every accepted (dim, options) builds an ``nn.Module`` without raising."""
    FORWARD = "forward"
    """A built seed's forward pass runs without raising and returns a Tensor."""
    SHAPE = "shape"
    """The output has the input's shape."""
    DTYPE = "dtype"
    """The output has the input's dtype."""
    DEVICE = "device"
    """The output lives on the input's device."""
    MEMORY_FORMAT = "memory-format"
    """The output keeps the input's memory format (channels_last where the topology uses it)."""
    IDENTITY = "identity-at-birth"
    """A freshly built seed returns exactly its input (max |y - x| == 0), in eval and train mode."""
    BLEND = "identity-under-blend"
    """Blending a fresh seed into its host with every blend algorithm returns exactly the host."""
    SLOT = "identity-in-slot"
    """A fresh seed germinated in a real seed slot and blended with alpha > 0 leaves the host unchanged."""
    PARAM_COUNT = "param-count"
    """The closed-form parameter count is a non-negative int equal to ``sum(p.numel())`` at
    every swept dim and option value."""
    FLOP_COUNT = "flop-count"
    """A declared FLOP count equals what ``torch.utils.flop_counter.FlopCounterMode`` measures."""
    LEARN = "parameters-learn"
    """A few optimiser steps on a non-trivial loss change every parameter tensor."""
    STATE_DICT_KEYS = "state-dict-keys"
    """Two constructions have the same state_dict keys and shapes."""
    STATE_DICT_ROUND_TRIP = "state-dict-round-trip"
    """Loading one module's state_dict into a second construction reproduces its output."""
    BF16 = "bf16"
    """The seed runs on bfloat16 input and weights and returns finite bfloat16 output."""
    CHANNELS_LAST = "channels-last"
    """The seed runs on channels_last input and matches its contiguous output."""
    CAUSAL = "causal"
    """For sequence topologies, an output position never depends on later positions."""
    POSITION_WISE = "position-wise"
    """A blueprint declared ``position_wise=True`` gives each position what it gives it alone."""
    AFFINE_FORM = "affine-form"
    """A module's ``affine_form()`` is the affine map its forward computes (merges rely on it)."""
    COMPILE = "compile"
    """``torch.compile(fullgraph=True)`` runs and matches eager within tolerance."""
    INPUT_UNCHANGED = "input-unchanged"
    """Forward never writes into its input (values and version counter), in train and eval mode."""
    BACKWARD_NO_GRAD_INPUT = "backward-no-grad-input"
    """Backward runs, in a child process, on an input that does not require grad (channels_last
    where the topology uses it); a crash fails this check instead of killing the run."""


def _freeze_options(options: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...] | None:
    if options is None:
        return None
    return tuple(sorted(dict(options).items()))


@attrs.frozen
class Failure:
    """One failed check at one configuration."""

    blueprint: str
    check: Check
    expected: str
    actual: str
    dim: int | None = None
    options: tuple[tuple[str, Any], ...] | None = attrs.field(default=None, converter=_freeze_options)

    def describe(self) -> str:
        """One line: ``[check] blueprint dim=... options=...: expected ...; actual ...``."""
        where = [self.blueprint]
        if self.dim is not None:
            where.append(f"dim={self.dim}")
        if self.options is not None:
            where.append(f"options={dict(self.options)!r}")
        return f"[{self.check}] {' '.join(where)}: expected {self.expected}; actual {self.actual}"


@attrs.frozen
class ConformanceReport:
    """Every failure the kit found for one blueprint, plus what was checked."""

    blueprint: str
    failures: tuple[Failure, ...] = ()
    checks_run: tuple[Check, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failed_checks(self) -> frozenset[Check]:
        """The names of the checks with at least one failure."""
        return frozenset(failure.check for failure in self.failures)

    def format(self) -> str:
        """A readable multi-line summary (the AssertionError message)."""
        if self.passed:
            return f"{self.blueprint} passed {len(self.checks_run)} conformance checks"
        names = ", ".join(sorted(self.failed_checks))
        count = len(self.failed_checks)
        lines = [
            f"{self.blueprint} failed {count} conformance check(s) ({names}); {len(self.failures)} failure(s):"
        ]
        lines.extend(f"  - {failure.describe()}" for failure in self.failures)
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise one AssertionError listing every failure, or return if there are none."""
        if self.failures:
            raise AssertionError(self.format())
