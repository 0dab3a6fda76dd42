"""The forward pass and the measurements of :class:`~esper_core.slot.SeedSlot`.

``forward`` is the hot path: in stages that do not run the seed it returns its input
object untouched after one set-membership test; otherwise it isolates the seed input,
runs the seed and blends (or, in TRAINING, applies the straight-through incubator). The
only per-call bookkeeping is an attribute read (does the seed output require grad, checked
once per stage) and keeping a reference to the last training output, so that health can be
checked later, off the hot path, by :meth:`ForwardMixin.capture_activity`.

Everything ``forward`` branches on is a plain attribute that changes only with the stage
(or the ramp direction), and the amplitude is a tensor buffer, so ``torch.compile`` builds
one graph per stage configuration without breaks and keeps it through a whole ramp. The
bookkeeping above is skipped while compiling (it is eager-only diagnostics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from esper_core import stages as st
from esper_core.activity import ActivityReading
from esper_core.alpha import AlphaController, AlphaMode
from esper_core.blend import blend
from esper_core.errors import LifecycleError
from esper_core.isolation import needs_groupnorm_workaround, seed_input, straight_through
from esper_core.stages import SeedStage

if TYPE_CHECKING:
    from esper_core.slot import SeedSlot

__all__ = ["RUNS_SEED", "ForwardMixin"]

RUNS_SEED = frozenset({SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED})
_RUNS_SEED = RUNS_SEED


class ForwardMixin:
    """forward / record_accuracy / capture_activity / record_counterfactual."""

    # ---- what forward reads -------------------------------------------------------------------------

    def _refresh_groupnorm_workaround(self: SeedSlot) -> None:
        """Decide the GroupNorm workaround once per seed module (see :mod:`.isolation`).

        The probe runs the seed, so it is repeated only when ``seed`` is a different module
        object than the one last probed - not on every restore of the same seed.
        """
        seed = self.seed
        if seed is None:
            self._groupnorm_probe = None
        elif self._groupnorm_probe is None or self._groupnorm_probe[0] is not seed:
            self._groupnorm_probe = (seed, needs_groupnorm_workaround(seed, self._probe_input(1)))

    @property
    def _groupnorm_workaround(self: SeedSlot) -> bool:
        probe = self._groupnorm_probe
        return probe is not None and probe[1]

    @property
    def _alpha(self: SeedSlot) -> AlphaController:
        """The amplitude schedule. Assigning it also refreshes the tensor forward reads."""
        return self._alpha_controller

    @_alpha.setter
    def _alpha(self: SeedSlot, controller: AlphaController) -> None:
        previous = self.__dict__.get("_alpha_controller")
        # Plain attributes: object.__setattr__ skips nn.Module's parameter/buffer/module tests.
        object.__setattr__(self, "_alpha_controller", controller)
        object.__setattr__(self, "_ramping_down", controller.mode is AlphaMode.DOWN)
        if previous is None or previous.alpha != controller.alpha:  # the buffer already holds it
            with torch.no_grad():
                self._alpha_value.fill_(controller.alpha)

    # ---- forward ------------------------------------------------------------------------------------

    def _alpha_tensor(self: SeedSlot, h: Tensor) -> Tensor:
        """The schedule's amplitude as a 0-dim tensor in ``h``'s dtype.

        Read from the ``_alpha_value`` buffer, never from the controller's Python float:
        under ``torch.compile`` a float would be baked into the graph as a constant and
        every ramp tick would recompile. The cast is a no-op unless ``h`` is in another
        dtype than the module (e.g. under autocast).
        """
        alpha = self._alpha_value
        return alpha if alpha.dtype == h.dtype else alpha.to(h.dtype)

    def _observe_output(self: SeedSlot, s: Tensor) -> None:
        """Once per stage: does the seed output carry grad? (cheap attribute check)."""
        self._output_checked = True
        self._output_requires_grad = bool(s.requires_grad)
        if not s.requires_grad:
            self._warn_once(
                "seed_output_not_trainable",
                f"seed {self._seed_id!r} produced an output that does not require grad while grad "
                "mode is on; it cannot learn and G2 will fail",
            )

    def forward(self: SeedSlot, h: Tensor, alpha_override: Tensor | None = None) -> Tensor:
        """The host features, with the seed applied according to the stage.

        Identity (the very same tensor) unless the stage runs the seed. In TRAINING the
        output equals ``h`` exactly (straight-through incubator) unless ``alpha_override``
        is given. ``alpha_override`` (0-dim or per-sample, e.g. ``(B, 1, 1, 1)``) replaces
        the schedule's amplitude, for counterfactual evaluation.
        """
        stage = self._stage
        if stage not in _RUNS_SEED:
            return h
        seed = self.seed
        assert seed is not None  # invariant: stages that run the seed hold one
        x = seed_input(h, isolate=self.isolated, groupnorm_workaround=self._groupnorm_workaround)
        if self._ramping_down:
            return self._blend_out(h, x, seed, alpha_override)
        s = seed(x)
        tracking = torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if tracking and not self._output_checked:
            self._observe_output(s)
        if stage is SeedStage.TRAINING and alpha_override is None:
            return straight_through(h, s)
        if alpha_override is None:
            alpha = self._alpha_tensor(h)
        else:
            if not isinstance(alpha_override, Tensor) or alpha_override.dim() not in (0, h.dim()):
                raise LifecycleError(
                    f"alpha_override must be a 0-dim or {h.dim()}-dim tensor, got {alpha_override!r:.80}"
                )
            alpha = alpha_override
        gate = self.gate_module(x) if self.gate_module is not None else None
        if tracking and self.training:
            self._last_output = s.detach()
        return blend(self._algorithm, h, s, alpha, gate, reference=x)

    def _blend_out(
        self: SeedSlot, h: Tensor, x: Tensor, seed: nn.Module, alpha_override: Tensor | None
    ) -> Tensor:
        """While the amplitude ramps down, seed and gate run without autograd.

        They must not learn to fight their own removal, and nothing needs to be frozen or
        remembered for that: no ``requires_grad`` flag changes, so parameter counts and
        optimizers are untouched, and the freeze ends by itself when the ramp does. The
        host keeps its direct-path gradient (``1 - alpha`` for ADD).
        """
        with torch.no_grad():
            s = seed(x)
            gate = self.gate_module(x) if self.gate_module is not None else None
        alpha = self._alpha_tensor(h) if alpha_override is None else alpha_override
        return blend(self._algorithm, h, s, alpha, gate, reference=x)

    # ---- measurements ------------------------------------------------------------------------------

    def _require_seed(self: SeedSlot, what: str) -> None:
        if not st.has_seed_module(self._stage):
            raise LifecycleError(
                f"slot {self.slot_id!r}: {what} needs a live seed (GERMINATED..FOSSILIZED); "
                f"stage is {self._stage.name}"
            )

    def record_accuracy(self: SeedSlot, accuracy: float) -> None:
        """One epoch's validation accuracy (percentage points, 0-100).

        This marks the end of the epoch's training for this seed: in the stages that run
        the seed, the activity measure for G2 is taken here (see :meth:`capture_activity`).
        """
        self._require_seed("record_accuracy")
        metrics = self._metrics.record_accuracy(accuracy)
        self._metrics = metrics
        if self._stage in _RUNS_SEED:
            self.capture_activity()

    def capture_activity(self: SeedSlot) -> ActivityReading:
        """Measure the seed's relative parameter change since the last capture.

        Also checks the seed's parameters, gradients and last training output for
        non-finite values; any found marks the seed unhealthy for good (it can then never
        pass a gate). Called by :meth:`record_accuracy`; callers may call it themselves.
        """
        self._require_seed("capture_activity")
        reading = self._meter.measure(self._seed_tensors())
        issues = list(self._health_issues)
        last = self._last_output
        self._last_output = None
        found = {
            "nonfinite_parameters": reading.nonfinite_parameters,
            "nonfinite_gradients": reading.nonfinite_gradients,
            "nonfinite_output": last is not None and not bool(torch.isfinite(last).all()),
        }
        for issue, present in found.items():
            if present and issue not in issues:
                issues.append(issue)
        if reading.value is not None:
            self._activity = self._activity.update(reading.value, self.activity_decay)
        if tuple(issues) != self._health_issues:
            self._health_issues = tuple(issues)
            self._warn_once("unhealthy", f"seed {self._seed_id!r} is unhealthy: {', '.join(issues)}")
        return reading

    def record_counterfactual(self: SeedSlot, contribution: float) -> None:
        """A measured leave-one-out contribution (pp); updates the contribution velocity."""
        self._require_seed("record_counterfactual")
        self._metrics = self._metrics.record_counterfactual(contribution)
