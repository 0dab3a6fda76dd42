"""Turning a sink on and off: registration as an ``esper`` pluggy plugin.

A sink is any object with an ``esper_seed_event(self, event)`` method marked with
:data:`esper_core.hookimpl`. Registering it on the process's plugin manager (the one
:func:`esper_core.registry.get_plugin_manager` returns, which also holds the blueprint
packs) is all it takes for :func:`esper_core.telemetry.emit` to call it for every event of
every slot. These functions add the checks a bare ``manager.register`` lacks: a sink
without the marked method is refused (it would otherwise receive nothing, silently), and
unregistering always targets the manager the sink was registered on, even if the registry
was rebuilt in between.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Self, TypeVar

import attrs
import pluggy

from esper_core.errors import RegistryError

__all__ = ["EventSink", "SinkHandle", "register_sink", "registered"]

HOOK = "esper_seed_event"

SinkT = TypeVar("SinkT")


@attrs.frozen
class SinkHandle:
    """A registered sink: the plugin manager it is on and the plugin name it has there."""

    manager: pluggy.PluginManager
    name: str

    @property
    def active(self) -> bool:
        """Whether the sink is still registered."""
        return self.manager.get_plugin(self.name) is not None

    def unregister(self) -> None:
        """Stop delivering events to the sink; calling it again does nothing."""
        if self.active:
            self.manager.unregister(name=self.name)


def register_sink(sink: object, *, name: str | None = None) -> SinkHandle:
    """Register ``sink`` so it receives every lifecycle event of every slot in this process.

    ``name`` is the plugin name (shown in a :class:`~esper_core.telemetry.TelemetrySinkWarning`
    if the sink raises); by default ``"<ClassName>@<hex id>"``. Raises
    :class:`~esper_core.errors.RegistryError` if ``sink`` has no ``esper_seed_event`` method
    marked with :data:`esper_core.hookimpl`, if it is already registered, or if ``name`` is
    taken.
    """
    from esper_core.registry import get_plugin_manager

    manager = get_plugin_manager()
    kind = type(sink).__name__
    if manager.parse_hookimpl_opts(sink, HOOK) is None:
        raise RegistryError(
            f"{kind} is not a telemetry sink: it needs a method `{HOOK}(self, event)` decorated "
            "with @esper_core.hookimpl"
        )
    if name is None:
        name = f"{kind}@{id(sink):x}"
    if not isinstance(name, str) or not name:
        raise RegistryError(f"sink name must be a non-empty string, got {name!r}")
    if manager.is_registered(sink):
        raise RegistryError(f"{kind} is already registered as {manager.get_name(sink)!r}")
    if manager.get_plugin(name) is not None:
        raise RegistryError(f"a plugin named {name!r} is already registered; pass another name")
    manager.register(sink, name=name)
    return SinkHandle(manager, name)


@contextlib.contextmanager
def registered(sink: SinkT, *, name: str | None = None) -> Iterator[SinkT]:
    """``with registered(MySink()) as sink:`` -- the sink receives events inside the block only."""
    handle = register_sink(sink, name=name)
    try:
        yield sink
    finally:
        handle.unregister()


class EventSink:
    """What every ready sink shares: turning it on and off, and closing its output once.

    Like :class:`logging.Handler`, a sink class derives from this and adds its
    ``esper_seed_event`` (which writes under :attr:`lock` after :meth:`_check_open`) and
    :meth:`_release` (which closes or flushes what it writes to). ``label`` names it in errors.
    """

    def __init__(self, label: str) -> None:
        self._label = label
        self._handle: SinkHandle | None = None
        self._closed = False
        self.lock = threading.Lock()

    def _release(self) -> None:
        raise NotImplementedError

    @property
    def registered(self) -> bool:
        """Whether the sink currently receives events."""
        return self._handle is not None and self._handle.active

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a closed sink cannot be registered again)."""
        return self._closed

    def register(self, *, name: str | None = None) -> Self:
        """Start receiving events (see :func:`register_sink`); returns the sink."""
        if self._closed:
            raise ValueError(f"{self._label} is closed; create a new sink")
        self._handle = register_sink(self, name=name)
        return self

    def close(self) -> None:
        """Stop receiving events and release the output; calling it again does nothing."""
        if self._handle is not None:
            self._handle.unregister()
            self._handle = None
        with self.lock:
            if not self._closed:
                self._closed = True
                self._release()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self._label} is closed")

    def __enter__(self) -> Self:
        return self if self.registered else self.register()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "registered" if self.registered else "closed" if self._closed else "not registered"
        return f"{self._label[:-1]}, {state})" if self._label.endswith(")") else f"{self._label}({state})"
