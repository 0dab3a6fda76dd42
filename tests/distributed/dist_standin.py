"""A minimal slot with the SeedSlot surface the distributed layer uses.

It lets the command stream, the decider hook, the drift check and the timeouts be tested
independently of the real slot: its gate is a plain threshold on a per-rank score, so a
test can make one rank pass where another fails. Every mutation records itself in
``calls`` so tests can check that each rank applied exactly rank 0's arguments.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import nn

from esper_core.errors import LifecycleError
from esper_core.gates import GateLevel, GateResult
from esper_core.stages import SeedStage


@attrs.frozen
class _Outcome:
    result: GateResult | None


class StandInSlot(nn.Module):
    def __init__(self, slot_id: str, *, dim: int = 4, threshold: float = 0.5) -> None:
        super().__init__()
        self.slot_id = slot_id
        self.topology = "cnn"
        self.dim = dim
        self.threshold = threshold
        self.score = 0.0  # the per-rank evidence the gate reads
        self.decider = None
        self.seed: nn.Module | None = None
        self.stage = SeedStage.DORMANT
        self.alpha = 0.0
        self.calls: list[tuple[Any, ...]] = []

    def seed_parameters(self) -> list[nn.Parameter]:
        return [] if self.seed is None else list(self.seed.parameters())

    def germinate(self, blueprint: str, *, options=None, seed_id=None, algorithm=None, ramp_epochs=5, curve=None,
                  alpha_target=1.0) -> None:  # fmt: skip
        if self.stage is not SeedStage.DORMANT:
            raise LifecycleError(f"slot {self.slot_id!r} is {self.stage.name}, not DORMANT")
        self.seed = nn.Linear(self.dim, self.dim)  # random init: must match across ranks
        self.stage = SeedStage.GERMINATED
        self.calls.append(("germinate", blueprint, dict(options or {}), seed_id, algorithm, ramp_epochs, curve,
                           alpha_target))  # fmt: skip

    def evaluate(self, target: SeedStage | None = None) -> GateResult:
        if self.seed is None:
            raise LifecycleError(f"slot {self.slot_id!r} has no seed to advance")
        target = target or {
            SeedStage.GERMINATED: SeedStage.TRAINING,
            SeedStage.TRAINING: SeedStage.BLENDING,
        }.get(self.stage, SeedStage.HOLDING)
        passed = self.score >= self.threshold
        return GateResult(
            gate=GateLevel.G1,
            edge=(self.stage, target),
            passed=passed,
            score=self.score,
            checks_passed=("score",) if passed else (),
            checks_failed=() if passed else ("score",),
            message=f"score {self.score} vs {self.threshold}",
            policy="strict",
        )

    def advance(self, target: SeedStage | None = None) -> GateResult:
        result = self.evaluate(target)
        verdict = result.passed if self.decider is None else self.decider(self, result)
        if verdict:
            self.stage = result.target
        self.calls.append(("advance", None if target is None else int(target), verdict))
        return attrs.evolve(result, passed=verdict)

    def prune(self, reason: str, initiator: str) -> None:
        self.seed = None
        self.stage = SeedStage.PRUNED
        self.alpha = 0.0
        self.calls.append(("prune", reason, initiator))

    def schedule_prune(self, steps: int, curve=None, *, reason: str, initiator: str) -> None:
        self.calls.append(("schedule_prune", steps, curve, reason, initiator))

    def set_alpha_target(self, target: float, steps: int, curve=None, *, algorithm=None) -> None:
        self.alpha = target
        self.calls.append(("set_alpha_target", target, steps, curve))

    def step_epoch(self) -> None:
        # Auto-advance out of TRAINING, decided through the hook like the real slot does.
        if self.stage is SeedStage.TRAINING:
            self.advance()

    # ---- the command surface DistributedLifecycle drives (SeedSlot.prepare / SeedSlot.apply)

    def prepare(self, command: Any) -> Any:
        if type(command).__name__ == "Germinate":
            if self.stage is not SeedStage.DORMANT:
                raise LifecycleError(f"slot {self.slot_id!r} is {self.stage.name}, not DORMANT")
            from esper_core.registry import get_blueprint

            resolved = get_blueprint(self.topology, command.blueprint).resolve(self.dim, command.options_dict)
            return attrs.evolve(command, options=resolved)
        return command

    def apply(self, command: Any) -> Any:
        name = type(command).__name__
        result = None
        if name == "Germinate":
            self.germinate(
                command.blueprint,
                options=command.options_dict,
                seed_id=command.seed_id,
                algorithm=command.algorithm,
                ramp_epochs=command.ramp_epochs,
                curve=command.curve,
                alpha_target=command.alpha_target,
            )
        elif name == "Advance":
            result = self.advance(command.target)
        elif name == "Prune":
            self.prune(command.reason, command.initiator)
        elif name == "SchedulePrune":
            self.schedule_prune(
                command.epochs, command.curve, reason=command.reason, initiator=command.initiator
            )
        elif name == "SetAlphaTarget":
            self.set_alpha_target(command.target, command.epochs, command.curve, algorithm=command.algorithm)
        else:
            raise LifecycleError(f"the stand-in does not apply {name}")
        return _Outcome(result)

    def state_checksum(self) -> torch.Tensor:
        return torch.tensor([float(self.stage), self.alpha], dtype=torch.float64)
