"""Scenarios of ``dist_scenarios_standin`` that are run again on three ranks: rank 0 sends
each record to every peer (on gloo one point-to-point message per peer), so a second peer
must receive exactly what the first one does."""

from __future__ import annotations

from dist_scenarios_standin import channel_exchange, commands, lone_mismatch

SCENARIOS = [
    ("channel_exchange", channel_exchange),
    ("commands", commands),
    ("lone_mismatch", lone_mismatch),
]
