"""The ``seq1d`` topology: what a feature tensor looks like where these seeds are grown."""

from __future__ import annotations

from esper_core import Topology

__all__ = ["SEQ1D"]

SEQ1D = Topology(
    name="seq1d",
    layout="(B, C, L)",  # names the axes, batch first: what Conv1d takes and returns
    ndim=3,  # B, C and L
    feature_axis=1,  # C: its size is the slot's dim
    sequence_axis=2,  # L: ordered, so seeds (and GATE blending) must be causal along it
    reference_dim=64,  # the width `esper blueprints` counts at when no --dim is given
    example_extent=(12,),  # sizes of the other non-batch axes (here L) for test inputs
    description="1-d signals in the Conv1d layout; seeds must be causal along L",
)
