"""Entry point of the pack: registers the eight transformer blueprints with Esper.

Named by ``[project.entry-points."esper.blueprints"]`` in this pack's ``pyproject.toml``;
the core loads it lazily on first registry access.
"""

from __future__ import annotations

from collections.abc import Callable

from esper_blueprints_transformer.catalog import BLUEPRINTS
from esper_core import BlueprintSpec, hookimpl

__all__ = ["esper_register_blueprints"]


@hookimpl
def esper_register_blueprints(register: Callable[[BlueprintSpec], None]) -> None:
    """Register every blueprint of :data:`~esper_blueprints_transformer.catalog.BLUEPRINTS`."""
    for spec in BLUEPRINTS:
        register(spec)
