"""How soon a seed can finish its probation under a controller config and a set of gates.

Pure arithmetic over :class:`~esper_core.control.ControllerConfig` and
:class:`~esper_core.gates.QualityGates`, public as :func:`esper_core.control.lifecycle_timing`.
It answers "is this run long enough for growth to show at all?" before any training: a run
shorter than :attr:`LifecycleTiming.first_blended_epoch` trains the grown model exactly as
the host alone, and one shorter than :attr:`LifecycleTiming.earliest_fossilization` cannot
keep a seed.

The count follows :meth:`HeuristicController.step <esper_core.control.HeuristicController.step>`
called once per epoch ``1, 2, ...`` after validation, with the slots' ``auto_advance`` off (the
controller advances, one stage per step): the step of epoch ``g`` germinates; the next step
passes G1 (GERMINATED -> TRAINING); G2 needs the TRAINING dwell in evaluations, G3 the full alpha
ramp and, under strict gates, the BLENDING dwell; G5 is judged one step after HOLDING is
entered. These are lower bounds: a plateau, an improvement or a contribution that does not
come delays or stops a seed, never speeds it up.
"""

from __future__ import annotations

import attrs

from esper_core._control_config import ControllerConfig
from esper_core.gates import QualityGates
from esper_core.hosts.base import HostError

__all__ = ["LifecycleTiming", "lifecycle_timing"]


@attrs.frozen(kw_only=True)
class LifecycleTiming:
    """The fewest epochs each part of a seed's probation takes (all counts in epochs).

    ``germination_epoch``: the earliest epoch whose controller step can germinate (the
    ``warmup_epochs`` must have passed and the ``plateau_window`` needs one earlier score).
    ``germinated``, ``training``, ``blending``, ``holding``: steps spent in each stage.
    ``stalled``: the stages whose minimum dwell exceeds ``max_stage_epochs``, so the
    controller prunes every seed there first (empty when none does).
    """

    germination_epoch: int
    germinated: int
    training: int
    blending: int
    holding: int
    stalled: tuple[str, ...] = ()

    @property
    def first_blended_epoch(self) -> int:
        """The first epoch that trains with a seed at alpha > 0 (the step before it enters BLENDING)."""
        return self.germination_epoch + self.germinated + self.training + 1

    @property
    def earliest_fossilization(self) -> int | None:
        """The earliest epoch whose step can fossilize a seed; ``None`` when a stall prunes it first."""
        if self.stalled:
            return None
        return self.germination_epoch + self.germinated + self.training + self.blending + self.holding


def lifecycle_timing(config: ControllerConfig, gates: QualityGates | None = None) -> LifecycleTiming:
    """The :class:`LifecycleTiming` of ``config`` under ``gates`` (default: ``QualityGates()``, strict).

    Raises :class:`~esper_core.errors.HostError` when ``config`` is not a ControllerConfig or
    ``gates`` not a QualityGates.
    """
    if not isinstance(config, ControllerConfig):
        raise HostError(f"config must be a ControllerConfig, got {type(config).__name__}")
    gates = QualityGates() if gates is None else gates
    if not isinstance(gates, QualityGates):
        raise HostError(f"gates must be a QualityGates, got {type(gates).__name__}")
    t = gates.thresholds
    # The step of epoch e has a history of e scores; plateaued() needs more than the window.
    germination = max(config.warmup_epochs, 1, config.plateau_window + 1)
    dwell = t.min_training_evaluations if gates.strict else t.permissive_training_evaluations
    training = max(dwell, 1)  # one stage per step: BLENDING is a step after TRAINING at best
    blending = max(config.ramp_epochs, t.min_blending_evaluations if gates.strict else 1)
    stalled = tuple(
        name
        for name, epochs in (("TRAINING", training), ("BLENDING", blending))
        if epochs > config.max_stage_epochs
    )
    return LifecycleTiming(
        germination_epoch=germination,
        germinated=1,
        training=training,
        blending=blending,
        holding=1,
        stalled=stalled,
    )
