"""Per-slot state fingerprints and the comparison that finds drifting slots.

A fingerprint is a short float64 vector per slot. Ranks exchange ``max(v)`` and
``max(-v)`` in one all-reduce; a component whose maximum and minimum differ is a drift.
The comparison is exact: two ranks that applied the same commands to the same state hold
bit-identical lifecycle values, so any difference is a real divergence, not noise.

Only architectural state belongs in the fingerprint (stage, alpha, parameter count and,
optionally, a fingerprint of the seed's parameter values). Metrics such as validation
accuracy legitimately differ per rank (each rank evaluates its own shard), which is
exactly why rank 0 decides the gates.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

__all__ = ["FINGERPRINT_FIELDS", "Drift", "find_drift", "slot_fingerprint"]

#: Names of the fingerprint components, in order (the last two only with parameters).
FINGERPRINT_FIELDS: tuple[str, ...] = (
    "stage",
    "alpha",
    "seed_parameter_count",
    "state_checksum",
    "parameter_sum",
    "parameter_square_sum",
)

# A NaN never equals itself, and a max-reduction with NaN is backend-defined, so NaN is
# mapped to this finite sentinel before the exchange (a NaN on one rank then still differs).
_NAN_SENTINEL = -1.0e300


def _state_checksum(slot: object) -> float:
    """Fold the slot's own ``state_checksum()`` (if it has one) into one exact float."""
    method = getattr(slot, "state_checksum", None)
    if method is None:
        return 0.0
    values = torch.as_tensor(method(), dtype=torch.float64).flatten()
    values = torch.nan_to_num(values, nan=_NAN_SENTINEL)
    # A position-weighted sum: equal inputs give bit-identical sums on every rank.
    weights = torch.arange(1, values.numel() + 1, dtype=torch.float64)
    return float((values * weights).sum())


def slot_fingerprint(slot: object, *, parameters: bool) -> list[float]:
    """The drift fingerprint of one slot (see :data:`FINGERPRINT_FIELDS`)."""
    seed_params = list(slot.seed_parameters()) if getattr(slot, "seed", None) is not None else []
    values = [
        float(int(slot.stage)),
        float(slot.alpha),
        float(sum(p.numel() for p in seed_params)),
        _state_checksum(slot),
    ]
    if parameters:
        # Reduced where the weights live (no host copy of a large seed); only scalars move.
        total = squares = 0.0
        with torch.no_grad():
            for p in seed_params:
                flat = p.detach().to(torch.float64)
                total += float(flat.sum())
                squares += float((flat * flat).sum())
        values += [total, squares]
    return [_NAN_SENTINEL if v != v else v for v in values]


@attrs.frozen
class Drift:
    """One fingerprint component that differs across ranks."""

    slot_id: str
    field: str
    local: float
    low: float
    high: float

    def describe(self) -> str:
        return f"slot {self.slot_id!r} {self.field}: this rank {self.local!r}, ranks span [{self.low!r}, {self.high!r}]"


def find_drift(
    slot_ids: Sequence[str],
    fields: Sequence[str],
    local: torch.Tensor,
    high: torch.Tensor,
    low: torch.Tensor,
) -> list[Drift]:
    """Components of the ``(slots, fields)`` fingerprints whose rank maximum differs from the minimum."""
    drifts = []
    for i, slot_id in enumerate(slot_ids):
        for j in range(local.shape[1]):
            if high[i, j].item() != low[i, j].item():
                drifts.append(
                    Drift(
                        slot_id,
                        fields[j],
                        local[i, j].item(),
                        low[i, j].item(),
                        high[i, j].item(),
                    )
                )
    return drifts
