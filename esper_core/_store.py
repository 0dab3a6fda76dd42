"""The registry's store: topologies and blueprints with their sources, and what was refused.

:class:`Registry` holds what packs registered and answers lookups and listings. It has two
ways in. :meth:`Registry.register_batch` is the direct API (tests, notebooks,
:func:`~esper_core.registry.temporary_blueprints`): everything or nothing, a name clash
raises. :meth:`Registry.admit` is the plugin loader's: an invalid object fails the whole
pack, but a name clash or a broken count refuses only that entry, recorded as a
:class:`Refusal` that ``esper plugins`` shows with the distribution to blame.
"""

from __future__ import annotations

import fnmatch
import math
import threading
import warnings

import attrs
import pluggy

from esper_core._checks import shown
from esper_core.errors import (
    BlueprintError,
    ConflictError,
    OptionError,
    PluginLoadError,
    PluginLoadWarning,
    RegistryError,
    UnknownBlueprintError,
    UnknownTopologyError,
)
from esper_core.plugins import PluginInfo, create_plugin_manager, normalize_distribution
from esper_core.spec import BlueprintSpec, check_dim
from esper_core.topology import Topology

__all__ = ["Refusal", "Registry", "Source"]


@attrs.frozen
class Source:
    """Where a registration came from: the distribution, its version, and the plugin name."""

    distribution: str
    version: str
    plugin: str


@attrs.frozen
class Refusal:
    """A registration the registry did not keep, and why.

    ``key`` is ``topology:name`` for a blueprint and the topology's name for a topology;
    ``spec`` is the refused blueprint itself, kept so the conformance kit can fail it.
    """

    kind: str  # "blueprint" | "topology"
    key: str
    source: Source
    reason: str
    spec: BlueprintSpec | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.key!r} refused: {self.reason}"


def _clash(kept: Source, refused: Source, *, loading: bool = True) -> str:
    held = f"the name is already registered by {kept.distribution} {kept.version} ({kept.plugin})"
    newcomer = f"{refused.distribution} {refused.version} ({refused.plugin})"
    if not loading:
        return f"{held}; {newcomer} cannot register it too (unregister the first, or rename)"
    return (
        f"{held}; {newcomer} arrived second under the clash rule (the core and the packs shipped "
        "with Esper first, then other packs by name), so its entry is refused: rename it in that "
        "pack, or uninstall one of the two"
    )


class Registry:
    """Topologies and blueprints, each with the source that registered it."""

    def __init__(self, manager: pluggy.PluginManager | None = None, *, strict: bool = False) -> None:
        self.manager = manager if manager is not None else create_plugin_manager()
        self.plugins: list[PluginInfo] = []
        self.strict = strict
        self._topologies: dict[str, tuple[Topology, Source]] = {}
        self._blueprints: dict[str, tuple[BlueprintSpec, Source]] = {}
        self._refusals: list[Refusal] = []
        self._count_faults: dict[tuple[str, int], str] = {}
        self._version = 0
        self._lock = threading.RLock()

    @property
    def version(self) -> int:
        return self._version

    # ---- registration: the direct API (all or nothing) -----------------------------------

    def register_topology(self, topology: Topology, source: Source) -> None:
        self.register_batch([topology], [], source)

    def register_blueprint(self, spec: BlueprintSpec, source: Source) -> None:
        self.register_batch([], [spec], source)

    def register_batch(self, topologies: list[Topology], specs: list[BlueprintSpec], source: Source) -> None:
        """Register everything or nothing: validate the whole batch before changing state."""
        with self._lock:
            self._check_types(topologies, specs, source)
            staged_topologies: dict[str, tuple[Topology, Source]] = {}
            for topology in topologies:
                previous = self._topologies.get(topology.name) or staged_topologies.get(topology.name)
                if previous is not None:
                    raise ConflictError(
                        f"topology {topology.name!r}: {_clash(previous[1], source, loading=False)}"
                    )
                staged_topologies[topology.name] = (topology, source)
            staged: dict[str, tuple[BlueprintSpec, Source]] = {}
            for spec in specs:
                self._check_target(spec, source, staged_topologies)
                previous = self._blueprints.get(spec.key) or staged.get(spec.key)
                if previous is not None:
                    raise ConflictError(
                        f"blueprint {spec.key!r}: {_clash(previous[1], source, loading=False)}"
                    )
                staged[spec.key] = (spec, source)
            self._commit(staged_topologies, staged)

    def unregister_blueprint(self, topology: str, name: str) -> None:
        with self._lock:
            spec = self.get_blueprint(topology, name)
            del self._blueprints[spec.key]
            self._version += 1

    # ---- registration: the plugin loader's path (refuse entries, not packs) ---------------

    def admit(self, topologies: list[Topology], specs: list[BlueprintSpec], source: Source) -> list[Refusal]:
        """Register what one pack's hook produced; return what was refused.

        Raises :class:`RegistryError` (nothing registered) when the pack registered something
        that is not a Topology or BlueprintSpec, or a blueprint for a topology nobody
        registered. A name already taken, a blueprint for a topology of this pack that was
        refused, or a count that is not a non-negative int at the topology's reference dim
        refuses only that entry. Earlier registrations always win: the loader registers the
        core and the packs shipped with Esper first, then the others in name order.
        """
        with self._lock:
            self._check_types(topologies, specs, source)
            refused: list[Refusal] = []
            staged_topologies: dict[str, tuple[Topology, Source]] = {}
            for topology in topologies:
                previous = self._topologies.get(topology.name) or staged_topologies.get(topology.name)
                if previous is not None:
                    reason = _clash(previous[1], source)
                    refused.append(Refusal("topology", topology.name, source, reason))
                else:
                    staged_topologies[topology.name] = (topology, source)
            lost = {r.key for r in [*self._refusals, *refused] if r.kind == "topology" and r.source == source}
            staged: dict[str, tuple[BlueprintSpec, Source]] = {}
            for spec in specs:
                if spec.topology in lost:
                    reason = f"it targets topology {spec.topology!r}, which this pack defines but was refused"
                    refused.append(Refusal("blueprint", spec.key, source, reason, spec))
                    continue
                self._check_target(spec, source, staged_topologies)
                previous = self._blueprints.get(spec.key) or staged.get(spec.key)
                if previous is not None:
                    reason = _clash(previous[1], source)
                    refused.append(Refusal("blueprint", spec.key, source, reason, spec))
                    continue
                topology = staged_topologies.get(spec.topology) or self._topologies[spec.topology]
                problem = _count_problem(spec, topology[0])
                if problem is not None:
                    refused.append(Refusal("blueprint", spec.key, source, problem, spec))
                    continue
                staged[spec.key] = (spec, source)
            self._commit(staged_topologies, staged)
            self._refusals.extend(refused)
            return refused

    def refusals(self) -> list[Refusal]:
        """Every registration refused so far (name clashes and broken counts), oldest first."""
        return list(self._refusals)

    # ---- shared validation ----------------------------------------------------------------

    def _check_types(self, topologies: list[Topology], specs: list[BlueprintSpec], source: Source) -> None:
        for topology in topologies:
            if not isinstance(topology, Topology):
                raise RegistryError(
                    f"register() expects a Topology, got {topology!r} from {source.distribution}"
                )
        for spec in specs:
            if not isinstance(spec, BlueprintSpec):
                raise RegistryError(
                    f"register() expects a BlueprintSpec or Topology, got {spec!r} from {source.distribution}"
                )

    def _check_target(self, spec: BlueprintSpec, source: Source, staged: dict[str, object]) -> None:
        if spec.topology not in self._topologies and spec.topology not in staged:
            raise UnknownTopologyError(
                f"blueprint {spec.key!r} from {source.distribution} targets unknown topology "
                f"{spec.topology!r}; registered topologies: {sorted(self._topologies)}"
            )

    def _commit(
        self,
        topologies: dict[str, tuple[Topology, Source]],
        blueprints: dict[str, tuple[BlueprintSpec, Source]],
    ) -> None:
        self._topologies.update(topologies)
        self._blueprints.update(blueprints)
        if topologies or blueprints:
            self._version += 1

    # ---- lookup ---------------------------------------------------------------------------

    def topology_names(self) -> list[str]:
        return sorted(self._topologies)

    def get_topology(self, name: str) -> Topology:
        entry = self._topologies.get(name) if isinstance(name, str) else None
        if entry is None:
            raise UnknownTopologyError(
                f"unknown topology {shown(name)}; registered topologies: {self.topology_names()}"
            )
        return entry[0]

    def topology_source(self, name: str) -> Source:
        self.get_topology(name)
        return self._topologies[name][1]

    def get_blueprint(
        self, topology: str, name: str, *, distribution: str | None = None, version: str | None = None
    ) -> BlueprintSpec:
        """The blueprint ``topology:name``; ``distribution``/``version`` (when the caller knows
        where it came from) only make a miss say what to install."""
        self.get_topology(topology)
        entry = self._blueprints.get(f"{topology}:{name}") if isinstance(name, str) else None
        if entry is None:
            raise self._missing(topology, name, distribution, version)
        return entry[0]

    def _missing(
        self, topology: str, name: object, distribution: str | None, version: str | None
    ) -> UnknownBlueprintError:
        available = sorted(s.name for s, _ in self._blueprints.values() if s.topology == topology)
        message = f"unknown blueprint {shown(name)} for topology {topology!r}; available: {available}"
        elsewhere = self.topologies_of(name)
        if elsewhere:  # a name from another topology: say where it is, not only that it is missing
            message += f"; {shown(name)} is registered for topology {' and '.join(map(repr, elsewhere))}"
        key = f"{topology}:{name}" if isinstance(name, str) else None
        for r in self._refusals:
            if r.kind == "blueprint" and r.key == key:
                message += f"; {r.source.distribution} {r.source.version} registers it, but it was refused: {r.reason}"
        if distribution is not None:
            message += "; " + _install_hint(self.plugins, distribution, version)
        return UnknownBlueprintError(
            message,
            topology=topology,
            name=name if isinstance(name, str) else shown(name),
            distribution=distribution,
            version=version,
        )

    def source(self, spec: BlueprintSpec) -> Source:
        return self._blueprints[spec.key][1]

    def source_of(self, key: str) -> Source | None:
        """The source of the blueprint ``topology:name`` or of the topology ``key``, if registered."""
        entry = self._blueprints.get(key) if ":" in key else self._topologies.get(key)
        return None if entry is None else entry[1]

    def holds(self, spec: BlueprintSpec) -> bool:
        """Whether ``spec`` itself (not merely its name) is registered."""
        entry = self._blueprints.get(spec.key)
        return entry is not None and (entry[0] is spec or entry[0] == spec)

    def all_blueprints(self) -> list[BlueprintSpec]:
        return [spec for spec, _ in self._blueprints.values()]

    def topologies_of(self, name: object) -> list[str]:
        """The topologies that register a blueprint named ``name``, sorted (empty if none does,
        or if ``name`` is not a ``str``: comparing an arbitrary object could raise)."""
        if type(name) is not str:
            return []
        return sorted({spec.topology for spec, _ in self._blueprints.values() if spec.name == name})

    # ---- counts and listing ---------------------------------------------------------------

    def count_at(self, spec: BlueprintSpec, dim: int | None = None) -> int | None:
        """Exact count with default options at ``dim`` (or the reference dim); None if invalid there.

        A broken count (:class:`BlueprintError`) is recorded, warned about once and raised;
        under strict mode it is raised as well (callers that list skip the blueprint instead).
        """
        width = self.get_topology(spec.topology).reference_dim if dim is None else dim
        try:
            return spec.count_params(width)
        except OptionError:
            return None
        except BlueprintError as exc:
            self._record_count_fault(spec, width, str(exc))
            raise

    def _record_count_fault(self, spec: BlueprintSpec, dim: int, message: str) -> None:
        with self._lock:
            if (spec.key, dim) in self._count_faults:
                return
            self._count_faults[(spec.key, dim)] = message
        if not self.strict:
            warnings.warn(f"esper: {message}; left out of listings", PluginLoadWarning, stacklevel=4)

    def count_faults(self) -> dict[tuple[str, int], str]:
        """Broken counts met while listing at dims other than the reference dim."""
        return dict(self._count_faults)

    def list_blueprints(
        self, topology: str | None = None, pattern: str = "*", dim: int | None = None
    ) -> list[BlueprintSpec]:
        """Blueprints matching ``pattern``, sorted by exact count at ``dim`` then name.

        A blueprint whose count at ``dim`` is broken is left out (and recorded); under
        strict mode the :class:`BlueprintError` propagates instead.
        """
        if topology is not None:
            self.get_topology(topology)
        if not isinstance(pattern, str) or not pattern:
            raise RegistryError(
                f"pattern must be a non-empty fnmatch pattern such as 'conv*'; got {pattern!r}"
            )
        if dim is not None:
            check_dim(dim)
        ordered: list[tuple[float, str, str, BlueprintSpec]] = []
        for spec in self.all_blueprints():
            if topology is not None and spec.topology != topology:
                continue
            if not (fnmatch.fnmatchcase(spec.name, pattern) or fnmatch.fnmatchcase(spec.key, pattern)):
                continue
            try:
                count = self.count_at(spec, dim)
            except BlueprintError:
                if self.strict:
                    raise
                continue
            ordered.append((math.inf if count is None else count, spec.name, spec.topology, spec))
        ordered.sort(key=lambda row: row[:3])
        return [row[3] for row in ordered]

    # ---- the report -----------------------------------------------------------------------

    def report(self) -> list[PluginInfo]:
        """One :class:`PluginInfo` per plugin seen, with what it provides now and what was refused."""
        infos = []
        for info in self.plugins:
            refused = tuple(r.describe() for r in self._refusals if r.source.plugin == info.name)
            infos.append(attrs.evolve(info, refused=refused) if refused else info)
        return infos

    def problems(self) -> list[str]:
        """Every load failure and refusal, one line each (what strict mode refuses to ignore)."""
        lines = [
            f"{info.distribution} {info.version} ({info.name}): {info.error}"
            for info in self.plugins
            if info.error is not None
        ]
        lines += [f"{r.source.distribution} {r.source.version}: {r.describe()}" for r in self._refusals]
        return lines

    def raise_if_problems(self) -> None:
        """Raise :class:`PluginLoadError` listing every problem (used under strict mode)."""
        problems = self.problems()
        if problems:
            raise PluginLoadError(
                f"ESPER_STRICT_PLUGINS is set and {len(problems)} plugin problem(s) were found:\n  - "
                + "\n  - ".join(problems)
            )


def _install_hint(plugins: list[PluginInfo], distribution: str, version: str | None) -> str:
    """What to do about a blueprint that ``distribution`` (at ``version``) provided elsewhere."""
    origin = f"it came from {distribution} {version}" if version else f"it came from {distribution}"
    pin = f"=={version}" if version else ""
    wanted = normalize_distribution(distribution)
    infos = [i for i in plugins if normalize_distribution(i.distribution) == wanted]
    if not infos:
        return f"{origin}, which is not installed or not loaded: pip install '{distribution}{pin}'"
    info = infos[0]
    state = f"failed to load: {info.error}" if info.error else "is loaded but does not provide it"
    hint = f"{origin}; the installed {info.distribution} {info.version} {state}"
    if version and info.version != version:
        hint += f" (install the recorded version: pip install '{distribution}{pin}')"
    return hint


def _count_problem(spec: BlueprintSpec, topology: Topology) -> str | None:
    """Check a new blueprint's counts once, at the topology's reference dim with defaults.

    This is the first time the registry computes them (listings sort by them), so a count
    that raises, or returns a float, NaN, a bool, a string or a negative number, is caught
    before any listing or controller sees it. A reference dim the blueprint declares invalid
    (an :class:`OptionError`) proves nothing either way and is not a fault.
    """
    dim = topology.reference_dim
    try:
        spec.count_params(dim)
        spec.count_flops(dim, topology.example_shape(dim))
    except OptionError:
        return None
    except BlueprintError as exc:
        return str(exc)
    return None
