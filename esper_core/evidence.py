"""What a lifecycle transition is given and what it returns, as frozen values.

The slot shell measures what needs torch (the probe of a candidate seed, whether the seed
can learn, its parameter count, the activity meter's reading) before it calls
:func:`esper_core.transition.transition`, and passes it in as :class:`Evidence`; the
transition returns an :class:`Outcome`. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from esper_core.gates import GateResult
from esper_core.slot_state import Provenance, SlotState
from esper_core.telemetry import SeedEvent

__all__ = ["NO_EVIDENCE", "ActivityEvidence", "Decide", "Evidence", "Outcome", "Probe"]

#: Turns a gate result into the committed verdict (a slot's ``decider``).
Decide = Callable[[GateResult], bool]


@attrs.frozen(kw_only=True)
class Probe:
    """G0's evidence: the candidate seed run once on a random input of the slot's layout."""

    shape_preserved: bool
    dtype_preserved: bool
    input_preserved: bool = True
    """False when the seed wrote into its input tensor (it would change the host's tensor)."""
    nonfinite: tuple[str, ...] = ()
    """What was NaN or infinite: ``"parameters"`` (as built), ``"output"`` (on the probe input)."""
    identity_preserved: bool = True
    """False when the eval-mode output is not exactly the input (the seed is not the identity at birth)."""
    identity_error: float | None = None
    """``max |output - input|`` of the eval pass when it is finite and not 0 (else ``None``)."""


@attrs.frozen(kw_only=True)
class ActivityEvidence:
    """One activity-meter reading (relative parameter change) and what it found non-finite."""

    value: float | None = None
    nonfinite_parameters: bool = False
    nonfinite_gradients: bool = False
    nonfinite_output: bool = False


@attrs.frozen(kw_only=True)
class Evidence:
    """What only the slot can measure, gathered before the call (defaults: nothing measured)."""

    trainable_params: bool = False
    """Some seed parameter requires grad."""
    param_count: int = 0
    """Seed plus blend-gate parameters (for germinate: of the candidate modules)."""
    probe: Probe | None = None
    activity: ActivityEvidence | None = None
    provenance: Provenance | None = None


#: Evidence of nothing measured (what a command needs when it reads no measurement).
NO_EVIDENCE = Evidence()


@attrs.frozen
class Outcome:
    """A transition's result: the new state, its events (to emit after commit), a gate result."""

    state: SlotState
    events: tuple[SeedEvent, ...] = ()
    result: GateResult | None = None
