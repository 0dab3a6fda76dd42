"""What a host network must offer so seeds can grow inside it.

A host is an ordinary network cut into *segments* at named *injection points*. Seed slots
sit at the points; the host itself never manages slots (that is
:class:`~esper_core.model.MorphogeneticModel`'s job), it only knows how to run the piece of
its computation between two points. Keeping routing in the host and lifecycle in the slots
lets the same slot code serve any host, including models written by users
(see :mod:`esper_core.inject`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs
from torch import Tensor, nn

from esper_core.errors import HostError

__all__ = ["HostError", "HostProtocol", "InjectionPoint", "SegmentedHost", "unique_param_count"]

_SURFACES = ("pre_pool", "post_pool", "post_block", "module_output")


@attrs.frozen
class InjectionPoint:
    """One place in a host where a seed slot can sit.

    ``dim`` is the feature width there (it becomes the blueprint ``dim``); ``order`` is the
    position in execution order, which is the order the model threads activations through.
    """

    slot_id: str = attrs.field(validator=attrs.validators.matches_re(r"^[A-Za-z_][A-Za-z0-9_]*$"))
    topology: str
    dim: int = attrs.field(validator=attrs.validators.gt(0))
    order: int = attrs.field(validator=attrs.validators.ge(0))
    surface: str = attrs.field(validator=attrs.validators.in_(_SURFACES))


@runtime_checkable
class HostProtocol(Protocol):
    """The interface :class:`~esper_core.model.MorphogeneticModel` needs from a host.

    ``forward_segment(x, start, stop)`` runs the host from injection point ``start`` (``None``
    means the network input) to injection point ``stop`` (``None`` means the network output),
    so ``forward_segment(x, None, None)`` equals ``forward(x)``. The architecture must not
    change after construction: models cache the injection points.
    """

    @property
    def topology(self) -> str: ...

    def injection_points(self) -> tuple[InjectionPoint, ...]: ...

    def forward(self, x: Tensor) -> Tensor: ...

    def forward_segment(self, x: Tensor, start: str | None, stop: str | None) -> Tensor: ...


def unique_param_count(module: nn.Module) -> int:
    """Number of parameters of ``module``, counting tied (shared) tensors once.

    ``requires_grad`` is ignored on purpose: a frozen parameter still costs memory.
    """
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


class SegmentedHost(nn.Module):
    """Base for hosts whose body is a flat list of ops with injection points between them.

    Subclasses fill ``_ops`` (callables, usually registered submodules) and call
    :meth:`_set_points` with ``(point, index)`` pairs meaning "this point sits after
    ``_ops[index]``"; they implement ``_enter`` (input to first features) and ``_exit``
    (last features to output). Routing is then one slice of ``_ops``, identical for every
    host, which is what makes "no seed means exactly the host's output" easy to guarantee.
    """

    topology_name: str = ""

    def __init__(self) -> None:
        super().__init__()
        self._ops: list[nn.Module] = []
        self._points: tuple[InjectionPoint, ...] = ()
        self._after: dict[str, int] = {}

    @property
    def topology(self) -> str:
        """The topology of every injection point of this host."""
        return self.topology_name

    def _set_points(self, placed: Sequence[tuple[InjectionPoint, int]]) -> None:
        self._points = tuple(p for p, _ in placed)
        self._after = {p.slot_id: index for p, index in placed}

    def injection_points(self) -> tuple[InjectionPoint, ...]:
        """All injection points, in execution order."""
        return self._points

    def execution_order(self) -> tuple[str, ...]:
        """Slot ids in the order activations pass them."""
        return tuple(p.slot_id for p in self._points)

    def point(self, slot_id: str) -> InjectionPoint:
        """The injection point ``slot_id``; :class:`HostError` lists the valid ids."""
        for p in self._points:
            if p.slot_id == slot_id:
                return p
        raise HostError(f"unknown slot id {slot_id!r}; this host has {list(self.execution_order())}")

    def _index(self, slot_id: str | None, default: int) -> int:
        if slot_id is None:
            return default
        if slot_id not in self._after:
            self.point(slot_id)  # raises with the list of valid ids
        return self._after[slot_id] + 1

    def _enter(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _exit(self, h: Tensor) -> Tensor:
        raise NotImplementedError

    def _run(self, h: Tensor, lo: int, hi: int) -> Tensor:
        for op in self._ops[lo:hi]:
            h = op(h)
        return h

    def forward(self, x: Tensor) -> Tensor:
        """The plain host, with no slots."""
        return self._exit(self._run(self._enter(x), 0, len(self._ops)))

    def forward_segment(self, x: Tensor, start: str | None, stop: str | None) -> Tensor:
        """Run from point ``start`` (``None``: the input) to point ``stop`` (``None``: the output).

        Routing must move forward: a ``stop`` at or before ``start`` is a :class:`HostError`,
        because silently returning the input (as earlier implementations did) hides bugs.
        """
        lo = self._index(start, 0)
        hi = self._index(stop, len(self._ops))
        if start is not None and stop is not None and hi <= lo:
            raise HostError(
                f"cannot route backwards from {start!r} to {stop!r}; execution order is {list(self.execution_order())}"
            )
        h = self._enter(x) if start is None else x
        h = self._run(h, lo, hi)
        return self._exit(h) if stop is None else h

    def host_param_count(self) -> int:
        """Exact number of host parameters (tied tensors counted once)."""
        return unique_param_count(self)
