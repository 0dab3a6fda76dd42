"""The core's own plugin: it registers the ``cnn`` and ``transformer`` topologies.

Registering them through the hook, exactly as a pack would, keeps one code path for
every topology and lets ``esper plugins`` show where each came from.
"""

from __future__ import annotations

from collections.abc import Callable

from esper_core.hookspecs import hookimpl
from esper_core.topology import CNN, TRANSFORMER, Topology


@hookimpl
def esper_register_topologies(register: Callable[[Topology], None]) -> None:
    register(CNN)
    register(TRANSFORMER)
