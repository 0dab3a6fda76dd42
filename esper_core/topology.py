"""Topologies: the tensor layouts seeds are grown in.

A topology tells the rest of the library (slots, the conformance kit, hosts) what a
feature tensor looks like at an injection point, so that a third-party topology can be
added by a pack without touching the core. The core registers ``cnn`` and
``transformer`` itself, through the same hook a pack would use.
"""

from __future__ import annotations

import attrs
import torch

from esper_core.errors import RegistryError

__all__ = ["CNN", "TRANSFORMER", "Topology"]

_NAME_RE = r"^[a-z][a-z0-9_]*$"


def _positive(instance: Topology, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RegistryError(
            f"topology {instance.name!r}: {attribute.name} must be a positive int, got {value!r}"
        )


@attrs.frozen
class Topology:
    """The layout of feature tensors at an injection point.

    ``layout`` names the axes, batch first (``"(B, C, L)"``), for people and messages;
    ``ndim`` is their number. ``feature_axis`` is the axis whose size is the slot's ``dim``
    (never the batch axis); ``sequence_axis`` is set for ordered sequences, where a seed
    must be causal along it (any non-batch axis other than the feature axis, before or
    after it); ``example_extent`` gives the sizes of the remaining non-batch axes, in order,
    used for test inputs. ``reference_dim`` is the width at which blueprints are compared
    when no dim is given. Every layout accepted here works with every blend algorithm.
    Raises :class:`RegistryError` naming the bad field.
    """

    name: str = attrs.field(validator=attrs.validators.matches_re(_NAME_RE))
    layout: str
    ndim: int = attrs.field(validator=_positive)
    feature_axis: int
    reference_dim: int = attrs.field(validator=_positive)
    description: str = attrs.field(validator=attrs.validators.min_len(1))
    example_extent: tuple[int, ...] = attrs.field(converter=tuple)
    sequence_axis: int | None = None
    channels_last: bool = False

    def __attrs_post_init__(self) -> None:
        if (
            isinstance(self.feature_axis, bool)
            or not isinstance(self.feature_axis, int)
            or not -self.ndim <= self.feature_axis < self.ndim
            or self.feature_axis % self.ndim == 0
        ):
            raise RegistryError(
                f"topology {self.name!r}: feature_axis {self.feature_axis} must be a non-batch axis of {self.ndim}"
            )
        if self.sequence_axis is not None and (
            isinstance(self.sequence_axis, bool)
            or not isinstance(self.sequence_axis, int)
            or not -self.ndim <= self.sequence_axis < self.ndim
            or self.sequence_axis % self.ndim in (0, self.feature_axis % self.ndim)
        ):
            raise RegistryError(
                f"topology {self.name!r}: sequence_axis {self.sequence_axis!r} must be None or a "
                f"non-batch axis of {self.ndim} other than feature_axis {self.feature_axis}"
            )
        axes = [a.strip() for a in self.layout.strip().removeprefix("(").removesuffix(")").split(",")]
        if len(axes) != self.ndim or not all(axes):
            raise RegistryError(
                f"topology {self.name!r}: layout {self.layout!r} must name its {self.ndim} axes, "
                "batch first, e.g. '(B, C, L)'"
            )
        if len(self.example_extent) != self.ndim - 2:
            raise RegistryError(
                f"topology {self.name!r}: example_extent needs {self.ndim - 2} sizes, got {self.example_extent}"
            )
        if self.channels_last and self.ndim != 4:
            raise RegistryError(
                f"topology {self.name!r}: channels_last needs 4-d tensors, ndim is {self.ndim}"
            )

    def example_shape(
        self, dim: int, batch: int = 2, extent: tuple[int, ...] | None = None
    ) -> tuple[int, ...]:
        """The shape of a feature tensor with ``dim`` features."""
        sizes = list(self.example_extent if extent is None else extent)
        sizes.insert(self.feature_axis % self.ndim - 1, dim)
        return (batch, *sizes)

    def example_input(
        self,
        dim: int,
        batch: int = 2,
        *,
        extent: tuple[int, ...] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """A standard-normal feature tensor of this layout (contiguous)."""
        shape = self.example_shape(dim, batch, extent)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)

    def alpha_shape(self, batch: int) -> tuple[int, ...]:
        """Shape of a per-sample blend amplitude that broadcasts over a feature tensor."""
        return (batch,) + (1,) * (self.ndim - 1)


CNN = Topology(
    name="cnn",
    layout="(B, C, H, W)",
    ndim=4,
    feature_axis=1,
    reference_dim=64,
    description="convolutional feature maps; seeds must keep channels_last and any H, W >= 1",
    example_extent=(5, 7),
    channels_last=True,
)

TRANSFORMER = Topology(
    name="transformer",
    layout="(B, T, D)",
    ndim=3,
    feature_axis=-1,
    reference_dim=384,
    description="token sequences; seeds must be causal along T",
    example_extent=(6,),
    sequence_axis=1,
)
