"""Random sequences of every slot operation, checking the lifecycle invariants."""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
from hypothesis import settings
from hypothesis import strategies as hs
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from esper_core.alpha import AlphaCurve
from esper_core.blend import BlendAlgorithm
from esper_core.errors import LifecycleError, RegistryError
from esper_core.gates import GateLevel, QualityGates
from esper_core.registry import list_blueprints
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage, has_seed_module, runs_seed

S = SeedStage
DIM = 8
PRE_BLENDING = {S.DORMANT, S.GERMINATED, S.TRAINING, S.PRUNED, S.EMBARGOED, S.RESETTING}
CURVES = hs.sampled_from(list(AlphaCurve))
ALGORITHMS = hs.sampled_from(list(BlendAlgorithm))
STAGE_ARGS = hs.one_of(hs.none(), hs.sampled_from(list(SeedStage)), hs.just(5))


def _blueprints(topology: str) -> list[str]:
    """Every registered blueprint of the topology (both packs when installed, plus test ones)."""
    return sorted(spec.name for spec in list_blueprints(topology) if spec.name not in {"lc_shrink"})


class SlotMachine(RuleBasedStateMachine):
    helpers: ClassVar[Any] = None

    @initialize(
        topology=hs.sampled_from(["cnn", "transformer"]),
        policy=hs.sampled_from(["strict", "permissive"]),
        auto=hs.sets(hs.sampled_from([GateLevel.G1, GateLevel.G2, GateLevel.G3])),
    )
    def setup(self, topology: str, policy: str, auto: set[GateLevel]) -> None:
        self.slot = SeedSlot("m", topology=topology, dim=DIM, gates=QualityGates(policy), embargo_epochs=2,
                             auto_advance=auto)  # fmt: skip
        self.names = _blueprints(topology)
        self.fossilized = False
        self.opt: torch.optim.Optimizer | None = None
        self.slot.add_observer(self._on_event)

    def _on_event(self, event: object) -> None:
        self.opt = None  # parameters may have changed; rebuild lazily

    def _attempt(self, call) -> None:  # type: ignore[no-untyped-def]
        lc = self.helpers
        before = lc.snapshot(self.slot)
        try:
            call()
        except (LifecycleError, RegistryError):
            assert lc.same_snapshot(before, lc.snapshot(self.slot)), "a rejected call changed the slot"

    # ---- rules ------------------------------------------------------------------------------------

    @rule(data=hs.data(), algorithm=ALGORITHMS, ramp_epochs=hs.integers(0, 3), curve=CURVES,
          amplitude=hs.sampled_from([0.0, 0.5, 1.0]))  # fmt: skip
    def germinate(self, data, algorithm, ramp_epochs, curve, amplitude) -> None:  # type: ignore[no-untyped-def]
        name = data.draw(hs.sampled_from(self.names))
        self._attempt(
            lambda: self.slot.germinate(
                name, algorithm=algorithm, ramp_epochs=ramp_epochs, curve=curve, alpha_target=amplitude
            )
        )

    @rule(stage=STAGE_ARGS)
    def advance(self, stage) -> None:  # type: ignore[no-untyped-def]
        self._attempt(lambda: self.slot.advance(stage))

    @rule(stage=STAGE_ARGS)
    def evaluate(self, stage) -> None:  # type: ignore[no-untyped-def]
        lc = self.helpers
        before = lc.snapshot(self.slot)
        with contextlib.suppress(LifecycleError):
            self.slot.evaluate(stage)
        assert lc.same_snapshot(before, lc.snapshot(self.slot))

    @rule(reason=hs.sampled_from(["policy_prune", ""]))
    def prune(self, reason: str) -> None:
        self._attempt(lambda: self.slot.prune(reason, "policy"))

    @rule(steps=hs.integers(-1, 3), curve=CURVES)
    def schedule_prune(self, steps: int, curve: AlphaCurve) -> None:
        self._attempt(lambda: self.slot.schedule_prune(steps, curve, reason="scheduled", initiator="policy"))

    @rule(amplitude=hs.sampled_from([0.0, 0.5, 0.7, 1.0, 1.5]), steps=hs.integers(0, 3), curve=CURVES,
          algorithm=hs.one_of(hs.none(), ALGORITHMS))  # fmt: skip
    def set_alpha_target(self, amplitude, steps, curve, algorithm) -> None:  # type: ignore[no-untyped-def]
        self._attempt(lambda: self.slot.set_alpha_target(amplitude, steps, curve, algorithm=algorithm))

    @rule()
    def step_epoch(self) -> None:
        self._attempt(self.slot.step_epoch)

    @rule(accuracy=hs.floats(-5.0, 105.0))
    def record_accuracy(self, accuracy: float) -> None:
        self._attempt(lambda: self.slot.record_accuracy(accuracy))

    @rule(contribution=hs.floats(-3.0, 5.0))
    def record_counterfactual(self, contribution: float) -> None:
        self._attempt(lambda: self.slot.record_counterfactual(contribution))

    @rule(train=hs.booleans())
    def forward(self, train: bool) -> None:
        slot = self.slot
        h = slot._topology.example_input(DIM, batch=2).requires_grad_(True)
        out = slot(h)
        assert out.shape == h.shape
        if not runs_seed(slot.stage):
            assert out is h
        if slot.stage is S.TRAINING:
            assert torch.equal(out, h)
        if train and out.requires_grad:
            params = [p for p in slot.seed_parameters() if p.requires_grad]
            if params and self.opt is None:
                self.opt = torch.optim.SGD(params, lr=0.01)
            out.square().mean().backward()
            if self.opt is not None:
                self.opt.step()
                self.opt.zero_grad()

    def _progress(self) -> None:
        """The natural next step for the current stage (random rules rarely line these up)."""
        slot = self.slot
        stage = slot.stage
        if stage is S.DORMANT:
            self._attempt(lambda: slot.germinate(self.names[len(self.names) // 2], ramp_epochs=2))
        elif stage is S.TRAINING:
            self._attempt(lambda: slot.record_accuracy(60.0))
            self._attempt(slot.advance)
        elif stage is S.BLENDING:
            self._attempt(slot.step_epoch)
            self._attempt(slot.advance)
        elif stage is S.HOLDING:
            self._attempt(lambda: slot.record_counterfactual(2.0))
            self._attempt(slot.advance)
        elif stage is not S.FOSSILIZED:
            self._attempt(slot.advance if stage is S.GERMINATED else slot.step_epoch)

    @rule()
    def progress(self) -> None:
        self._progress()

    @rule()
    def progress_twice(self) -> None:
        self._progress()
        self._progress()

    # ---- invariants ---------------------------------------------------------------------------------

    @invariant()
    def alpha_in_unit_interval(self) -> None:
        assert 0.0 <= self.slot.alpha <= 1.0

    @invariant()
    def alpha_zero_before_blending(self) -> None:
        if self.slot.stage in PRE_BLENDING:
            assert self.slot.alpha == 0.0

    @invariant()
    def full_amplitude_when_holding(self) -> None:
        if self.slot.stage in (S.HOLDING, S.FOSSILIZED):
            assert self.slot.alpha == 1.0

    @invariant()
    def fossilized_is_terminal(self) -> None:
        if self.fossilized:
            assert self.slot.stage is S.FOSSILIZED
        self.fossilized = self.slot.stage is S.FOSSILIZED

    @invariant()
    def seed_present_iff_live(self) -> None:
        assert (self.slot.seed is not None) == has_seed_module(self.slot.stage)

    @invariant()
    def report_is_consistent(self) -> None:
        report = self.slot.report()
        assert report.stage is self.slot.stage
        assert report.seed_param_count == sum(
            p.numel() for p in ([] if self.slot.seed is None else self.slot.seed.parameters())
        )


def test_slot_state_machine(lc) -> None:  # type: ignore[no-untyped-def]
    SlotMachine.helpers = lc
    run_state_machine_as_test(
        SlotMachine, settings=settings(max_examples=30, stateful_step_count=30, deadline=None)
    )
