"""An example Esper pack that adds the ``seq1d`` topology ``(B, C, L)`` and two causal seeds.

Esper imports only :mod:`esper_blueprints_seq1d.plugin`, through the ``esper.blueprints``
entry point, the first time its registry is used.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
