"""The exception types Esper raises.

Every error Esper raises on bad input is one of these, so callers can catch the library's
failures without catching unrelated ones. Each also derives from the builtin a Python user
would expect (``ValueError`` for bad values, ``RuntimeError`` for calls made at the wrong
time), so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "BlueprintError",
    "CheckpointError",
    "ConflictError",
    "DistributedError",
    "EsperError",
    "FoldError",
    "GerminationRefusedError",
    "GovernorError",
    "HostError",
    "LifecycleError",
    "LifecycleWarning",
    "MissingExtraError",
    "MissingGateError",
    "OptionError",
    "PluginLoadError",
    "PluginLoadWarning",
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
    """No blueprint of that name exists for the topology; the message lists those that do.

    When the caller knew which distribution (and version) provided the blueprint, for
    example from a checkpoint, the message also says what to install; ``topology``,
    ``name``, ``distribution`` and ``version`` carry the same facts for programs.
    """

    def __init__(
        self,
        message: str,
        *,
        topology: str | None = None,
        name: str | None = None,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        super().__init__(message)
        self.topology = topology
        self.name = name
        self.distribution = distribution
        self.version = version


class OptionError(RegistryError):
    """A blueprint option is unknown, of the wrong type or out of range."""


class BlueprintError(RegistryError):
    """A blueprint's own code misbehaved: its factory raised or returned something that is not
    an ``nn.Module``, its ``validate`` raised something other than :class:`OptionError`, or a
    count function raised or returned something that is not a non-negative ``int``. The
    message names the blueprint (``topology:name``), the dim and options, and the
    distribution that registered it."""


class ConflictError(RegistryError):
    """Two registrations claim the same key; the message names both sources."""


class PluginLoadError(EsperError):
    """A blueprint pack could not be loaded (raised only under ``ESPER_STRICT_PLUGINS=1``)."""


class PluginLoadWarning(RuntimeWarning):
    """Issued once per pack that failed to load and per refused registration (non-strict mode)."""


class HostError(EsperError, ValueError):
    """A host or injection was given a slot id, route, target or dim it cannot accept."""


class LifecycleError(EsperError, RuntimeError):
    """A lifecycle call is not allowed in the slot's current state."""


class LifecycleWarning(UserWarning):
    """A seed's one-time warning (a :class:`~esper_core.telemetry.SeedWarning` event), also
    issued as a Python warning: an accuracy that looks like a fraction, a seed that cannot
    learn, an unhealthy seed. ``warnings.filterwarnings("ignore", category=LifecycleWarning)``
    silences it; the event still reaches observers and sinks."""


class GerminationRefusedError(LifecycleError):
    """G0 refused a candidate seed: it failed one of G0's checks (``checks_failed`` names them:
    ``shape_changed``, ``dtype_changed``, ``input_modified_in_place``, ...) or its forward raised
    on G0's probe input (``checks_failed`` is then ``("probe_raised",)``).

    The blueprint, not the caller, is at fault; the slot and the global RNG are as before.
    ``slot_id``, ``blueprint`` and ``checks_failed`` carry the facts for programs (they are
    ``None``/empty when the error was re-raised from another rank, which sends the message).
    """

    def __init__(
        self,
        message: str,
        *,
        slot_id: str | None = None,
        blueprint: str | None = None,
        checks_failed: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.slot_id = slot_id
        self.blueprint = blueprint
        self.checks_failed = tuple(checks_failed)

    @classmethod
    def of(cls, slot_id: str, blueprint: str, checks_failed: tuple[str, ...]) -> GerminationRefusedError:
        """The error for G0 refusing ``blueprint`` in slot ``slot_id``, with its message."""
        return cls(
            f"G0 rejected germinating {blueprint!r} in slot {slot_id!r}: {list(checks_failed)}",
            slot_id=slot_id,
            blueprint=blueprint,
            checks_failed=tuple(checks_failed),
        )


class MissingGateError(LifecycleError):
    """A transition edge has no quality gate; edges never pass by default."""


class MissingExtraError(EsperError, ImportError):
    """A feature needs an optional dependency that cannot be imported. The message names the
    feature, the missing module(s) and the ``pip install "esper-core[EXTRA]"`` command;
    ``extras`` (the extras to install) and ``modules`` (the modules that failed) carry the
    same facts for programs. An ``ImportError``, so ``except ImportError`` still catches it."""

    def __init__(self, message: str, *, extras: tuple[str, ...] = (), modules: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.extras = extras
        self.modules = modules


class CheckpointError(EsperError, ValueError):
    """A checkpoint field is missing, malformed or inconsistent; the message names the field."""


class DistributedError(EsperError, RuntimeError):
    """Ranks disagree about lifecycle state, or a collective did not complete in time."""


class GovernorError(EsperError, RuntimeError):
    """The governor found a fault pruning cannot repair (a fossilized seed or the host went
    non-finite, or steps keep being skipped); the message names the culprit and the remedy."""


class FoldError(EsperError, RuntimeError):
    """A grown model cannot be folded as asked: a seed is still on probation, or an exact weight
    merge was required where none exists; the message names the slots and why."""
