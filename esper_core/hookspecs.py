"""Hook specifications of the ``esper`` pluggy project.

A blueprint pack implements some of these hooks in the module its ``esper.blueprints``
entry point names, decorated with :data:`esper_core.hookimpl`. Hooks are grouped by
purpose; each is called by the core at the moment its docstring states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from esper_core.spec import BlueprintSpec
    from esper_core.topology import Topology

__all__ = ["hookimpl", "hookspec"]

PROJECT = "esper"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------------------------
# Registration hooks: called once per process, the first time the registry is used.
# -------------------------------------------------------------------------------------------


@hookspec
def esper_register_topologies(register: Callable[[Topology], None]) -> None:
    """Register tensor topologies that blueprints can target.

    Call ``register(Topology(...))`` once per topology. Topologies are collected from every
    pack before any blueprint is registered, so a pack may add blueprints to a topology
    that another pack defines. The core registers ``cnn`` and ``transformer`` itself.
    Registering a name twice is a :class:`~esper_core.errors.ConflictError` naming both
    distributions.
    """


@hookspec
def esper_register_blueprints(register: Callable[[BlueprintSpec], None]) -> None:
    """Register seed blueprints.

    Call ``register(BlueprintSpec(...))`` once per blueprint. The spec's topology must be
    registered. Two registrations of the same ``topology:name`` are a
    :class:`~esper_core.errors.ConflictError` naming both distributions; the registry stays
    as it was before the second call.
    """


# -------------------------------------------------------------------------------------------
# Observation hooks: called during training.
# -------------------------------------------------------------------------------------------


@hookspec
def esper_seed_event(event: Any) -> None:
    """Observe one lifecycle event (germinated, gate evaluated, stage changed, ...).

    ``event`` is a frozen value from :mod:`esper_core.telemetry`. Implementations are
    telemetry sinks: they must not mutate the slot. An exception raised here is reported
    once and otherwise ignored, so a broken sink never breaks training, unless
    ``ESPER_STRICT_PLUGINS=1`` is set, in which case it propagates.
    """
