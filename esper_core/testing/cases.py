"""Pytest parameters for every registered blueprint, for one-function pack tests."""

from __future__ import annotations

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
    """
    import pytest

    from esper_core.plugins import normalize_distribution
    from esper_core.registry import get_registry

    registry = get_registry()
    specs = registry.list_blueprints(topology, pattern)
    if distribution is not None:
        wanted = normalize_distribution(distribution)
        specs = [s for s in specs if normalize_distribution(registry.source(s).distribution) == wanted]
    if not specs:
        failed = [f"{p.distribution}: {p.error}" for p in registry.plugins if p.error is not None]
        raise UnknownBlueprintError(
            f"no registered blueprint matches topology={topology!r} pattern={pattern!r} "
            f"distribution={distribution!r}; registered: {sorted(s.key for s in registry.all_blueprints())}; "
            f"plugins that failed to load: {failed or 'none'}"
        )
    return [pytest.param(spec, id=spec.key) for spec in sorted(specs, key=lambda s: s.key)]
