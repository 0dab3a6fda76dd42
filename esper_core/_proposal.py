"""What a command would do to a slot, worked out before anything is committed.

:func:`propose` is the first half of :meth:`SeedSlot.apply <esper_core.slot.SeedSlot.apply>`:
it gathers the evidence (for a germination: builds and probes the candidate, see
:mod:`esper_core._build`), calls the pure :func:`~esper_core.transition.transition`, and
builds the modules the new state needs. It touches no slot state: the slot commits what it
returns in one step, or nothing when it raises.

**The global RNG.** Building a candidate draws its initial weights from the global RNG. A
germination that raises (a blueprint factory, G0's probe, the transition) or that G0
refuses leaves the RNG exactly as it found it, as any other rejected command does; only a
committed germination consumes random numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from esper_core import _build
from esper_core.commands import Germinate
from esper_core.evidence import Decide, Evidence, Outcome
from esper_core.slot_state import SlotConfig, SlotState
from esper_core.topology import Topology
from esper_core.transition import transition

__all__ = ["propose"]

#: ``(seed, blend_gate)``: the modules a slot holds, or will hold.
Modules = tuple[nn.Module | None, nn.Module | None]


def propose(
    command: object,
    state: SlotState,
    config: SlotConfig,
    *,
    topology: Topology,
    anchor: Tensor,
    modules: Modules,
    evidence: Callable[[object], Evidence],
    decide: Decide,
) -> tuple[Outcome, Modules]:
    """The outcome of a prepared ``command`` on ``state``, and the modules its new state needs.

    ``modules`` are the slot's current ones (kept where the new state still uses them);
    ``anchor`` gives new modules their device, dtype and memory format; ``evidence(command)``
    measures what the transition needs of the current modules (not called for a
    germination, whose evidence is the candidate's); ``decide`` turns a gate result into the
    verdict. When the state does not change the returned modules are not to be committed.
    Raises the library's error for a command not allowed now (RNG as before, see above).
    """
    rng = torch.random.get_rng_state() if isinstance(command, Germinate) else None
    try:
        if isinstance(command, Germinate):
            measured, modules = _build.candidate(config, topology, anchor, command)
        else:
            measured = evidence(command)
        outcome = transition(state, config, command, measured, decide)
        if outcome.state is not state:
            modules = _build.modules_for(outcome.state, *modules, topology, config.dim, anchor)
    except BaseException:
        if rng is not None:
            torch.random.set_rng_state(rng)
        raise
    if rng is not None and outcome.state is state:  # G0 refused: the candidate is dropped
        torch.random.set_rng_state(rng)
    return outcome, modules
