"""How a seed's output is mixed into the host's features.

:func:`blend` is a pure tensor function: no module state, no Python-side branching on
tensor values, so it compiles with ``torch.compile(fullgraph=True)``. Seed output, alpha
and gate are cast to the host's dtype only when their dtype differs (a cast is a copy;
the common same-dtype path allocates nothing extra). ``alpha`` is clamped to [0, 1].

* ADD      ``host + a * (seed - host)``: a cross-fade (``torch.lerp``).
* MULTIPLY ``host * (1 + a * tanh(seed - ref))``: the seed acts as a bounded valve; ``ref``
  is the seed's own input (``reference``), which equals the host features but may be
  detached, so no gradient reaches the host through ``-ref``.
* GATE     ``host + a * g * (seed - host)`` with a learned per-sample gate ``g`` in [0, 1].

With ``seed == host`` (every blueprint at birth) all three return ``host`` exactly.

:class:`BlendGate` computes ``g``. For sequence topologies it is **causal**: the gate at
position ``t`` is computed from the running mean of positions ``0..t`` only, so no
information flows from future tokens into earlier outputs. Its final layer starts with
zero weights and zero bias, so at birth the gate is exactly :data:`INITIAL_GATE` (0.5)
for every input: the effective blend weight starts at half the amplitude, and the gate
gets the largest possible sigmoid gradient from the first step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esper_core.alpha import BlendAlgorithm
from esper_core.errors import LifecycleError

__all__ = [
    "INITIAL_GATE",
    "BlendAlgorithm",
    "BlendGate",
    "blend",
    "check_alpha_override",
    "gate_hidden_width",
]

#: The value every :class:`BlendGate` outputs at birth.
INITIAL_GATE = 0.5


def _like(t: Tensor, ref: Tensor) -> Tensor:
    return t if t.dtype == ref.dtype else t.to(ref.dtype)


def blend(
    algorithm: BlendAlgorithm,
    host: Tensor,
    seed: Tensor,
    alpha: Tensor,
    gate: Tensor | None = None,
    *,
    reference: Tensor | None = None,
) -> Tensor:
    """Mix ``seed`` into ``host`` with amplitude ``alpha`` (0-dim or broadcastable per sample).

    ``gate`` is required for GATE and ignored otherwise; ``reference`` (MULTIPLY only)
    defaults to ``host``. The result has the host's dtype.
    """
    seed = _like(seed, host)
    a = _like(alpha, host).clamp(0.0, 1.0)
    if algorithm is BlendAlgorithm.ADD:
        return torch.lerp(host, seed, a)
    if algorithm is BlendAlgorithm.MULTIPLY:
        ref = host if reference is None else _like(reference, host)
        return host * (1.0 + a * torch.tanh(seed - ref))
    if algorithm is BlendAlgorithm.GATE:
        if gate is None:
            raise LifecycleError("blend(GATE, ...) needs a gate tensor; got gate=None")
        return torch.lerp(host, seed, a * _like(gate, host).clamp(0.0, 1.0))
    raise LifecycleError(
        f"unknown blend algorithm {algorithm!r}; accepted: {[b.value for b in BlendAlgorithm]}"
    )


def check_alpha_override(alpha: object, h: Tensor) -> None:
    """Raise unless ``alpha`` is a floating tensor on ``h``'s device (a 0-dim one may also live
    on the CPU) that is 0-dim, or ``h.dim()``-dim and broadcastable to ``h``.

    Shapes, dtypes and devices only (no value is read, so no device sync); :func:`blend`
    clamps values to [0, 1].
    """
    ok = isinstance(alpha, Tensor) and (
        alpha.dim() == 0
        or (alpha.dim() == h.dim() and all(a in (1, b) for a, b in zip(alpha.shape, h.shape, strict=True)))
    )
    if not ok:
        got = tuple(alpha.shape) if isinstance(alpha, Tensor) else type(alpha).__name__
        raise LifecycleError(
            f"alpha_override must be a 0-dim tensor or a {h.dim()}-dim tensor broadcastable to "
            f"{tuple(h.shape)} (e.g. {(h.shape[0],) + (1,) * (h.dim() - 1)}); got {got}"
        )
    assert isinstance(alpha, Tensor)
    if not alpha.is_floating_point() or alpha.layout is not torch.strided:
        raise LifecycleError(
            f"alpha_override must be a dense floating tensor (alpha is a weight in [0, 1]); got {alpha.dtype} "
            f"in layout {alpha.layout}"
        )
    if alpha.device != h.device and not (alpha.dim() == 0 and alpha.device.type == "cpu"):
        raise LifecycleError(
            f"alpha_override is on {alpha.device} but the features are on {h.device}; accepted: a tensor on "
            f"{h.device} (or a 0-dim CPU tensor)"
        )


def gate_hidden_width(dim: int) -> int:
    """Hidden width of the gate MLP: a quarter of the features, at least 8."""
    return max(8, dim // 4)


class BlendGate(nn.Module):
    """A per-sample (per-position for sequences) gate in [0, 1], causal along sequences.

    ``feature_axis`` is the axis of size ``dim``; ``sequence_axis`` (if any) is pooled with a
    cumulative mean, every other non-batch axis with a plain mean. Either axis may come
    first. The output broadcasts over the input: ``(B, 1, 1, 1)`` for images, ``(B, T, 1)``
    for ``(B, T, D)`` sequences, ``(B, 1, L)`` for channels-first ``(B, C, L)`` sequences.
    Raises :class:`LifecycleError` when an axis is the batch axis or both are the same.
    """

    def __init__(self, dim: int, *, ndim: int, feature_axis: int, sequence_axis: int | None = None) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise LifecycleError(f"BlendGate dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.ndim = ndim
        self.feature_axis = feature_axis % ndim
        self.sequence_axis = None if sequence_axis is None else sequence_axis % ndim
        if self.feature_axis == 0 or self.sequence_axis in (0, self.feature_axis):
            raise LifecycleError(
                f"BlendGate needs distinct non-batch feature and sequence axes of a {ndim}-d input; "
                f"got feature_axis={feature_axis}, sequence_axis={sequence_axis}"
            )
        # Where the sequence axis lands once the feature axis is moved last: one place
        # earlier when it came after the feature axis ((B, C, L) -> (B, L, C)).
        self._pooled_sequence_axis = (
            None
            if self.sequence_axis is None
            else self.sequence_axis - (self.sequence_axis > self.feature_axis)
        )
        hidden = gate_hidden_width(dim)
        self.hidden = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # sigmoid(0) == INITIAL_GATE

    @classmethod
    def for_topology(cls, topology: object, dim: int) -> BlendGate:
        """Build from a :class:`~esper_core.topology.Topology` (duck-typed)."""
        return cls(
            dim,
            ndim=topology.ndim,  # type: ignore[attr-defined]
            feature_axis=topology.feature_axis,  # type: ignore[attr-defined]
            sequence_axis=topology.sequence_axis,  # type: ignore[attr-defined]
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != self.ndim:
            raise LifecycleError(f"BlendGate expects {self.ndim}-d input, got shape {tuple(x.shape)}")
        features = x.movedim(self.feature_axis, -1)
        sequence = self._pooled_sequence_axis
        keep = {0} if sequence is None else {0, sequence}
        pooled_axes = [d for d in range(1, features.dim() - 1) if d not in keep]
        if pooled_axes:
            features = features.mean(dim=pooled_axes, keepdim=True)
        if sequence is not None:
            counts = torch.arange(1, features.shape[sequence] + 1, device=x.device, dtype=features.dtype)
            shape = [1] * features.dim()
            shape[sequence] = -1
            features = features.cumsum(dim=sequence) / counts.view(shape)
        features = _like(features, self.hidden.weight)
        gate = torch.sigmoid(self.out(torch.relu(self.hidden(features))))
        # ``gate`` has size 1 on every pooled axis and on the (moved) feature axis; moving the
        # feature axis back restores the input's axis order.
        return gate.movedim(-1, self.feature_axis)
