"""An example Esper blueprint pack: two small seeds registered through an entry point.

Nothing here is imported by Esper directly: the ``esper.blueprints`` entry point in
``pyproject.toml`` names :mod:`esper_blueprints_example.plugin`, which Esper loads the
first time its registry is used.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
