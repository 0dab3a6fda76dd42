"""Pytest parameters for every registered blueprint, for one-function pack tests."""

from __future__ import annotations

import fnmatch
from typing import Any

from esper_core.errors import UnknownBlueprintError

__all__ = ["conformance_cases"]


def conformance_cases(
    topology: str | None = None, pattern: str = "*", *, distribution: str | None = None
) -> list[Any]:
    """One ``pytest.param(spec, id="topology:name")`` per registered blueprint that matches.

    ``pattern`` is an fnmatch pattern on the name or ``topology:name``; ``distribution``
    keeps only blueprints registered by that installed distribution (a pack's own tests
    pass their distribution name so other installed packs are not re-tested). Matching
    nothing raises instead of returning an empty list, because pytest would turn an empty
    parametrization into a silently skipped test, hiding a pack that failed to load.
    Blueprints the registry refused (a name clash, a broken count) are included, with the
    id ``topology:name@distribution``, so the kit fails them. A broken blueprint of another
    pack never affects the cases of this one.
    """
    import pytest

    from esper_core.plugins import normalize_distribution
    from esper_core.registry import get_registry

    registry = get_registry()
    wanted = None if distribution is None else normalize_distribution(distribution)
    specs = registry.list_blueprints(topology, pattern)
    if wanted is not None:
        specs = [s for s in specs if normalize_distribution(registry.source(s).distribution) == wanted]
    # Refused blueprints stay in the cases so the kit fails them (check "registration")
    # instead of the pack's test passing without them.
    refused = [
        r
        for r in registry.refusals()
        if r.spec is not None
        and (topology is None or r.spec.topology == topology)
        and (fnmatch.fnmatchcase(r.spec.name, pattern) or fnmatch.fnmatchcase(r.key, pattern))
        and (wanted is None or normalize_distribution(r.source.distribution) == wanted)
    ]
    params = [pytest.param(spec, id=spec.key) for spec in sorted(specs, key=lambda s: s.key)]
    params += [pytest.param(r.spec, id=f"{r.key}@{r.source.distribution}") for r in refused]
    if not params:
        failed = [f"{p.distribution}: {p.error}" for p in registry.plugins if p.error is not None]
        raise UnknownBlueprintError(
            f"no registered blueprint matches topology={topology!r} pattern={pattern!r} "
            f"distribution={distribution!r}; registered: {sorted(s.key for s in registry.all_blueprints())}; "
            f"plugins that failed to load: {failed or 'none'}"
        )
    return params
