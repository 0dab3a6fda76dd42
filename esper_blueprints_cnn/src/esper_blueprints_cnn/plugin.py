"""Entry-point module of the pack (``esper.blueprints``: ``cnn = "esper_blueprints_cnn.plugin"``).

The core loads this module through the entry point and calls the hook once; nothing in the
core imports the pack directly. Blueprints are registered in the order of
:data:`esper_blueprints_cnn.catalogue.SPECS`.
"""

from __future__ import annotations

from collections.abc import Callable

from esper_blueprints_cnn.catalogue import SPECS
from esper_core import BlueprintSpec, hookimpl

__all__ = ["esper_register_blueprints"]


@hookimpl
def esper_register_blueprints(register: Callable[[BlueprintSpec], None]) -> None:
    """Register the eight CNN blueprints."""
    for spec in SPECS:
        register(spec)
