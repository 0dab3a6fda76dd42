"""Random lifecycle operations on real slots with real blueprints, forwards and backwards.

Run as ``python -m tests.adversarial.lifecycle_fuzz SEED OPS SECONDS`` (a child process of
``test_lifecycle_fuzz.py``, so a crash in torch fails the test, not the test run); prints
one JSON line with the counts and the first failures.

Each operation is drawn at random from everything a training script does to a slot
(germinate any installed blueprint with random options and schedules, advance, evaluate,
prune, schedule a prune, retarget alpha, tick, record accuracies and contributions, train a
step, forward with an alpha override, save and reload through ``torch.load(weights_only=True)``,
deep-copy, reconfigure the gates, poison a weight with NaN). Most arguments are valid; some
are not, or are not allowed in the current stage. An operation either succeeds and leaves a
consistent slot (the invariants below), or raises the library's error and changes nothing
(lifecycle, modules, tensors, the global RNG). Anything else is a failure.
"""

from __future__ import annotations

import copy
import io
import json
import math
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from esper_core.alpha import AlphaCurve, BlendAlgorithm
from esper_core.codec import decode_envelope
from esper_core.errors import EsperError
from esper_core.gates import QualityGates
from esper_core.registry import list_blueprints
from esper_core.slot import SeedSlot
from esper_core.stages import LIVE, RUNS_SEED, SeedStage

from .conftest import slot_snapshot
from .fuzzing import bad_value, differences, same

DIMS = {"cnn": 8, "transformer": 16}
SKIP = {
    "flex_attention"
}  # compiles a kernel on first use: minutes on this machine, nothing lifecycle-specific


class Run:
    """One fuzzing run: a current slot per topology, a private RNG, the counts."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.data = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.slots = {t: self.fresh(t) for t in DIMS}
        self.tried = self.succeeded = self.rejected = 0
        self.failures: list[str] = []
        self.by_op: dict[str, int] = {}
        self.by_stage: dict[str, int] = {}

    def fresh(self, topology: str) -> SeedSlot:
        policy = self.rng.choice(["permissive", "permissive", "strict"])
        return SeedSlot(
            f"{topology}0",
            topology=topology,
            dim=DIMS[topology],
            gates=QualityGates(policy),
            embargo_epochs=2,
        )

    def features(self, slot: SeedSlot, requires_grad: bool = False) -> torch.Tensor:
        if slot.topology == "cnn":  # what CNNHost hands a slot: channels_last
            h = torch.randn(2, slot.dim, 4, 4, generator=self.data).contiguous(
                memory_format=torch.channels_last
            )
        else:
            h = torch.randn(2, 5, slot.dim, generator=self.data)
        return h.requires_grad_(requires_grad)

    # ---- operations ---------------------------------------------------------------------------------

    def germinate(self, slot: SeedSlot) -> None:
        specs = [s for s in list_blueprints(slot.topology, dim=slot.dim) if s.name not in SKIP]
        spec = self.rng.choice(specs)
        options: dict[str, Any] = {}
        for option in spec.options:
            if option.type is int and self.rng.random() < 0.5:
                options[option.name] = self.rng.choice([1, 2, option.default, 2 * option.default, 0])
            elif option.type is bool and self.rng.random() < 0.5:
                options[option.name] = self.rng.random() < 0.5
        slot.germinate(
            self.rng.choice([spec.name, spec.name, "no_such_blueprint"]),
            options=options,
            algorithm=self.rng.choice(list(BlendAlgorithm)),
            ramp_epochs=self.rng.choice([1, 2, 3, 0]),
            curve=self.rng.choice(list(AlphaCurve)),
            alpha_target=self.rng.choice([1.0, 1.0, 0.5, self.rng.random(), 0.0]),
        )

    def advance(self, slot: SeedSlot) -> None:
        slot.advance(self.rng.choice([None, None, None, *list(SeedStage)]))

    def train(self, slot: SeedSlot) -> None:
        """One SGD step through the slot, as a training loop does."""
        h = self.features(slot, requires_grad=True)
        before = h.detach().clone()
        out = slot(h)
        assert same(h.detach(), before), "forward changed the host's features in place"
        out.square().mean().backward()
        with torch.no_grad():
            for p in slot.seed_parameters():
                if p.grad is not None:
                    p -= 0.05 * p.grad
                    p.grad = None

    def override(self, slot: SeedSlot) -> None:
        h = self.features(slot)
        shape = (2,) + (1,) * (h.dim() - 1)
        alpha = self.rng.choice([torch.rand(shape, generator=self.data), torch.zeros(()), torch.ones(2, 1)])
        with torch.no_grad():
            out = slot(h, alpha_override=alpha)
        assert out.shape == h.shape

    def reload(self, slot: SeedSlot) -> SeedSlot:
        """Save, ``torch.load(weights_only=True)``, load into a fresh slot: the same slot comes back."""
        buffer = io.BytesIO()
        torch.save(slot.state_dict(), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
        fresh = SeedSlot(
            slot.slot_id, topology=slot.topology, dim=slot.dim, gates=slot.gates, embargo_epochs=2
        )
        fresh.load_state_dict(state)
        assert fresh.lifecycle_text() == slot.lifecycle_text(), "a reloaded slot's lifecycle differs"
        h = self.features(slot)
        slot.eval(), fresh.eval()
        with torch.no_grad():
            assert same(slot(h), fresh(h)), "a reloaded slot computes something else"
        slot.train(), fresh.train()
        return fresh

    def bad_call(self, slot: SeedSlot) -> None:
        """A verb of the current slot with one argument replaced by a bad value of any kind."""
        _, value = bad_value(self.rng)
        h = self.features(slot)
        verb = self.rng.choice(
            [
                lambda v: slot.record_accuracy(v),
                lambda v: slot.record_counterfactual(v),
                lambda v: slot.set_alpha_target(v, 1),
                lambda v: slot.set_alpha_target(1.0, v),
                lambda v: slot.schedule_prune(v, reason="fuzz", initiator="fuzzer"),
                lambda v: slot.prune(v, "fuzzer"),
                lambda v: slot.advance(v),
                lambda v: slot.germinate("conv_light" if slot.topology == "cnn" else "lora", options=v),
                lambda v: slot.germinate(v),
                lambda v: slot.germinate("noop", ramp_epochs=v),
                lambda v: slot.germinate("noop", alpha_target=v),
                lambda v: slot(h, alpha_override=v),
                lambda v: slot.reconfigure(gates=v),
                lambda v: slot.load_state_dict(v),
            ]
        )
        verb(value)

    def poison(self, slot: SeedSlot) -> None:
        params = slot.seed_parameters()
        if params:
            with torch.no_grad():
                params[0].view(-1)[0] = math.nan

    def operations(self) -> list[tuple[str, float, Callable[[SeedSlot], object]]]:
        """(name, weight, operation): weighted so that seeds also live long enough to reach
        BLENDING, HOLDING and FOSSILIZED, not only to be pruned."""
        r = self.rng
        reason = lambda: r.choice(["fuzz", "fuzz", ""])  # noqa: E731
        return [
            ("germinate", 6, self.germinate),
            ("advance", 10, self.advance),
            ("evaluate", 3, lambda s: s.evaluate()),
            ("prune", 1, lambda s: s.prune(reason(), "fuzzer")),
            (
                "schedule_prune",
                1,
                lambda s: s.schedule_prune(r.choice([0, 1, 3]), reason="fuzz", initiator="fuzzer"),
            ),
            (
                "set_alpha_target",
                3,
                lambda s: s.set_alpha_target(
                    r.choice([1.0, 1.0, 0.5, r.random()]),
                    r.choice([0, 1, 2]),
                    algorithm=r.choice([None, None, *list(BlendAlgorithm)]),
                ),
            ),
            ("step_epoch", 10, lambda s: s.step_epoch()),
            (
                "record_accuracy",
                2,
                lambda s: s.record_accuracy(r.choice([r.uniform(0, 100), r.random(), 101.0])),
            ),
            ("record_accuracy", 8, lambda s: s.record_accuracy(r.uniform(30, 90))),
            ("record_counterfactual", 6, lambda s: s.record_counterfactual(r.uniform(-1, 10))),
            ("capture_activity", 2, lambda s: s.capture_activity()),
            ("train", 8, self.train),
            ("override", 3, self.override),
            (
                "reconfigure",
                1,
                lambda s: s.reconfigure(gates=QualityGates(r.choice(["strict", "permissive"]))),
            ),
            ("poison", 0.3, self.poison),
            ("bad_call", 4, self.bad_call),
        ]

    # ---- one trial ---------------------------------------------------------------------------------

    def trial(self) -> None:
        topology = self.rng.choice(list(DIMS))
        slot = self.slots[topology]
        if slot.stage is SeedStage.FOSSILIZED and self.rng.random() < 0.05:
            slot = self.slots[topology] = self.fresh(topology)  # terminal: carry on with a new slot
        special = self.rng.random()
        if special < 0.03:  # continue with a reloaded or a copied slot: they must carry on identically
            self.count("reload")
            self.checked("reload", slot, lambda: self.slots.__setitem__(topology, self.reload(slot)))
            return
        if special < 0.05:
            self.count("deepcopy")
            self.slots[topology] = copy.deepcopy(slot)
            self.checked("deepcopy", self.slots[topology], lambda: None)
            return
        choices = self.operations()
        name, _, operation = self.rng.choices(choices, weights=[w for _, w, _ in choices])[0]
        self.count(name)
        self.checked(name, slot, lambda: operation(slot))

    def count(self, name: str) -> None:
        self.by_op[name] = self.by_op.get(name, 0) + 1

    def checked(self, name: str, slot: SeedSlot, run: Callable[[], object]) -> None:
        self.tried += 1
        self.by_stage[slot.stage.name] = self.by_stage.get(slot.stage.name, 0) + 1
        before, rng = slot_snapshot(slot), torch.get_rng_state()
        where = f"{name} in {slot.topology} {slot.stage.name}"
        try:
            run()
        except EsperError as exc:
            after = slot_snapshot(slot)
            if not same(before, after):
                self.failures.append(
                    f"{where}: rejected ({exc}) but changed {differences(before, after)[:4]}"
                )
            elif not torch.equal(rng, torch.get_rng_state()):
                self.failures.append(f"{where}: rejected ({exc}) but moved the global RNG")
            else:
                self.rejected += 1
            return
        except Exception as exc:  # not the library's error, or a broken assertion of an operation
            self.failures.append(f"{where}: {type(exc).__name__}: {str(exc)[:300]}")
            return
        try:
            invariants(self.slots[slot.topology], self.features(slot))
        except Exception as exc:
            self.failures.append(f"{where}: succeeded but {type(exc).__name__}: {str(exc)[:300]}")
            self.slots[slot.topology] = self.fresh(slot.topology)  # a broken slot would repeat the failure
            return
        self.succeeded += 1


def invariants(slot: SeedSlot, h: torch.Tensor) -> None:
    """What holds for every slot after every successful operation."""
    state = slot.state
    assert decode_envelope(slot.lifecycle_text()).state == state, "the envelope does not read back"
    slot.state_checksum()
    live = state.stage in LIVE
    assert (slot.seed is not None) == live, (
        f"seed module present: {slot.seed is not None} in {state.stage.name}"
    )
    gate_needed = live and slot.algorithm is BlendAlgorithm.GATE
    assert (slot.blend_gate is not None) == gate_needed, f"blend gate present: {slot.blend_gate is not None}"
    report = slot.report()
    assert report.stage is state.stage and 0.0 <= report.alpha <= 1.0
    assert report.seed_param_count == sum(p.numel() for p in (slot.seed.parameters() if slot.seed else []))
    before = h.clone()
    with torch.no_grad():
        out = slot(h)
    assert same(h, before), "forward changed the host's features in place"
    assert out.shape == h.shape and out.dtype == h.dtype
    if state.stage not in RUNS_SEED:
        assert out is h, f"{state.stage.name} must be the identity (the very same tensor)"


def main(seed: int, ops: int, seconds: float) -> dict[str, Any]:
    torch.set_num_threads(1)
    run = Run(seed)
    deadline = time.monotonic() + seconds
    while run.tried < ops and time.monotonic() < deadline:
        run.trial()
    return {
        "tried": run.tried,
        "succeeded": run.succeeded,
        "rejected": run.rejected,
        "failed": len(run.failures),
        "failures": run.failures[:20],
        "by_op": run.by_op,
        "by_stage": run.by_stage,
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))))
