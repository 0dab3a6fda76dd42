"""Declared options of the CNN blueprints.

Each option is declared once and used both by the registry (which validates calls before any
factory runs) and by the seed constructors themselves, so building a seed class directly
rejects bad values with the same :class:`~esper_core.errors.OptionError` and message.
"""

from __future__ import annotations

from esper_blueprints_cnn.counts import DEFAULT_REDUCTION
from esper_core import Option

__all__ = ["ATTENTION_REDUCTION", "BOTTLENECK_REDUCTION"]

ATTENTION_REDUCTION = Option(
    name="reduction",
    type=int,
    default=DEFAULT_REDUCTION,
    help=(
        "channel reduction of the excitation MLP: hidden width max(1, C // reduction). "
        "Larger is cheaper; any value >= 1 is accepted, values above C give width 1."
    ),
    minimum=1,
)

BOTTLENECK_REDUCTION = Option(
    name="reduction",
    type=int,
    default=DEFAULT_REDUCTION,
    help=(
        "channel reduction of the bottleneck: hidden width max(8, C // reduction). "
        "Larger is cheaper; any value >= 1 is accepted, values above C give width 8."
    ),
    minimum=1,
)
