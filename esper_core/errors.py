"""The exception types Esper raises.

Every error Esper raises on bad input is one of these, so callers can catch the library's
failures without catching unrelated ones. Each also derives from the builtin a Python user
would expect (``ValueError`` for bad values, ``RuntimeError`` for calls made at the wrong
time), so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConflictError",
    "DistributedError",
    "EsperError",
    "GovernorError",
    "HostError",
    "LifecycleError",
    "MissingGateError",
    "OptionError",
    "PluginLoadError",
    "RegistryError",
    "UnknownBlueprintError",
    "UnknownTopologyError",
]


class EsperError(Exception):
    """Base class of every error raised by Esper."""


class RegistryError(EsperError, ValueError):
    """A registry lookup or registration was given a value it cannot accept."""


class UnknownTopologyError(RegistryError):
    """No topology of that name is registered; the message lists those that are."""


class UnknownBlueprintError(RegistryError):
    """No blueprint of that name exists for the topology; the message lists those that do."""


class OptionError(RegistryError):
    """A blueprint option is unknown, of the wrong type or out of range."""


class ConflictError(RegistryError):
    """Two registrations claim the same key; the message names both sources."""


class PluginLoadError(EsperError):
    """A blueprint pack could not be loaded (raised only under ``ESPER_STRICT_PLUGINS=1``)."""


class HostError(EsperError, ValueError):
    """A host or injection was given a slot id, route, target or dim it cannot accept."""


class LifecycleError(EsperError, RuntimeError):
    """A lifecycle call is not allowed in the slot's current state."""


class MissingGateError(LifecycleError):
    """A transition edge has no quality gate; edges never pass by default."""


class CheckpointError(EsperError, ValueError):
    """A checkpoint field is missing, malformed or inconsistent; the message names the field."""


class DistributedError(EsperError, RuntimeError):
    """Ranks disagree about lifecycle state, or a collective did not complete in time."""


class GovernorError(EsperError, RuntimeError):
    """The governor found a fault pruning cannot repair (a fossilized seed or the host went
    non-finite, or steps keep being skipped); the message names the culprit and the remedy."""
