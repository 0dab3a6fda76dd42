"""The governor finds the culprit in forward and backward, and never stalls silently (issue 16, item 7).

The kind: a seed that makes training non-finite, in any stage, through its forward, its
backward or an overflow further down the host, must be the one pruned; a host-caused fault
prunes nobody; a culprit that cannot be pruned (FOSSILIZED) raises ``GovernorError``.
First the reported instances, then seeded trials over topologies, stages, dtypes and fault
kinds, counted, with zero failures.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from esper_core.errors import GovernorError, HostError
from esper_core.gates import QualityGates
from esper_core.governor import Governor, Verdict
from esper_core.hosts import CNNHost, TransformerHost
from esper_core.model import MorphogeneticModel
from esper_core.optim import OptimizerBinding
from esper_core.stages import SeedStage

from .conftest import drive

TRIALS = 240


class _PoisonBackward(torch.autograd.Function):
    """Identity forward; backward sends NaN to whatever produced the input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


def poison_backward(seed: nn.Module) -> None:
    seed.register_forward_pre_hook(lambda _m, args: (_PoisonBackward.apply(args[0]),))


def scale_output(seed: nn.Module, factor: float) -> None:
    seed.register_forward_hook(lambda _m, _args, out: out * factor)


class Net:
    """A model, its optimizer and governor, and one batch; ``step()`` is the documented loop."""

    def __init__(
        self, topology: str, seeds: dict[str, SeedStage], dtype: torch.dtype = torch.float32
    ) -> None:
        torch.manual_seed(0)
        self.topology = topology
        if topology == "cnn":
            host: nn.Module = CNNHost(3, in_channels=1, base_channels=4)
            self.x = torch.randn(6, 1, 8, 8).to(dtype)
            self.y = torch.randint(0, 3, (6,))
            blueprint = "toy_conv"
        else:
            host = TransformerHost(16, n_embd=8, n_head=2, n_layer=2, block_size=8, num_segments=2)
            self.x = torch.randint(0, 16, (4, 8))
            self.y = torch.randint(0, 16, (4, 8))
            blueprint = "toy_linear"
        self.model = MorphogeneticModel(host, gates=QualityGates("permissive"))
        for slot_id, stage in seeds.items():
            self.model.germinate(slot_id, blueprint)
            drive(self.model.slots[slot_id], stage)
            if stage is SeedStage.BLENDING:
                self.model.slots[slot_id].step_epoch()
        self.model.to(dtype)
        self.optimizer = torch.optim.SGD(self.model.host.parameters(), lr=1e-3)
        OptimizerBinding(self.optimizer, self.model.slots)
        self.governor = Governor(self.model, self.model.slots)

    def loss(self) -> torch.Tensor:
        out = self.model(self.x).float()
        if self.topology == "cnn":
            return F.cross_entropy(out, self.y)
        return F.cross_entropy(out.flatten(0, 1), self.y.flatten())

    def step(self) -> Verdict:
        self.optimizer.zero_grad()
        loss = self.loss()
        verdict = self.governor.check_loss(loss, self.loss)
        if verdict.ok:
            loss.backward()
            verdict = self.governor.check_gradients(self.loss)
            if verdict.ok:
                self.optimizer.step()
        return verdict

    def host_state(self) -> dict[str, torch.Tensor]:
        """Host parameters; buffers must merely stay finite (a skipped step whose forward was
        finite may keep that forward's BatchNorm statistics)."""
        assert all(torch.isfinite(b).all() for b in self.model.host.buffers() if b.is_floating_point())
        return {n: p.detach().clone() for n, p in self.model.host.named_parameters()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- the reported instances ------------------------------------------------------------------------


def test_holding_seed_whose_backward_poisons_the_host_is_pruned() -> None:
    net = Net("cnn", {"r0c1": SeedStage.HOLDING, "r1c1": SeedStage.BLENDING})
    poison_backward(net.model.slots["r0c1"].seed)
    host = net.host_state()
    verdict = net.step()
    assert verdict.pruned == ("r0c1",) and "backward" in verdict.reason  # was "no seed responsible"
    assert net.model.slots["r1c1"].stage is SeedStage.BLENDING
    assert _same(host, net.host_state())
    assert net.step().ok  # training goes on


def test_blending_transformer_seed_whose_backward_poisons_the_host_is_pruned() -> None:
    net = Net("transformer", {"r0c0": SeedStage.BLENDING, "r0c1": SeedStage.BLENDING})
    poison_backward(net.model.slots["r0c1"].seed)
    verdict = net.step()
    assert verdict.pruned == ("r0c1",)
    assert net.model.slots["r0c0"].stage is SeedStage.BLENDING
    assert net.step().ok


def test_a_finite_huge_seed_output_that_overflows_downstream_in_bf16_is_the_seeds() -> None:
    net = Net("cnn", {"r0c0": SeedStage.HOLDING, "r0c1": SeedStage.BLENDING}, torch.bfloat16)
    scale_output(net.model.slots["r0c0"].seed, 1e38)
    with torch.no_grad():  # the seed's own output stays finite: the overflow is further down
        assert torch.isfinite(
            net.model.slots["r0c0"](net.model.host.forward_segment(net.x, None, "r0c0"))
        ).all()
    host = net.host_state()
    verdict = net.step()
    assert verdict.pruned == ("r0c0",) and "overflow downstream" in verdict.reason
    assert net.model.slots["r0c1"].stage is SeedStage.BLENDING
    assert _same(host, net.host_state())
    assert net.step().ok


def test_a_host_caused_overflow_prunes_no_seed() -> None:
    net = Net("cnn", {"r0c0": SeedStage.HOLDING, "r0c1": SeedStage.BLENDING}, torch.bfloat16)
    with torch.no_grad():
        net.model.host.classifier.weight.mul_(1e38)  # the head overflows whatever the seeds do
    verdict = net.step()
    assert not verdict.ok and verdict.pruned == () and "host caused it" in verdict.reason
    assert {net.model.slots[s].stage for s in ("r0c0", "r0c1")} == {SeedStage.HOLDING, SeedStage.BLENDING}


def test_a_fossilized_seed_with_nan_weights_raises_instead_of_stalling() -> None:
    net = Net("cnn", {"r0c1": SeedStage.FOSSILIZED})
    with torch.no_grad():
        net.model.slots["r0c1"].seed.conv.weight[0, 0] = float("nan")
    host = net.host_state()
    with pytest.raises(GovernorError, match=r"slot 'r0c1'.*FOSSILIZED.*reload the last good checkpoint"):
        net.step()
    assert _same(host, net.host_state())  # buffers restored, nothing stepped
    assert not net.governor.interventions[-1].ok


def test_steps_skipped_with_nobody_to_prune_raise_after_the_limit() -> None:
    net = Net("cnn", {"r0c1": SeedStage.BLENDING})
    net.governor = Governor(net.model, net.model.slots, max_skipped_steps=3)
    net.x[0, 0, 0, 0] = float("nan")  # a bad batch every time: the host's input
    for _ in range(2):
        assert net.step().pruned == ()
    with pytest.raises(GovernorError, match=r"3 consecutive training steps were skipped"):
        net.step()
    with pytest.raises(HostError, match="max_skipped_steps"):
        Governor(net.model, net.model.slots, max_skipped_steps=0)


def test_a_good_step_resets_the_skip_count() -> None:
    net = Net("cnn", {"r0c1": SeedStage.BLENDING})
    net.governor = Governor(net.model, net.model.slots, max_skipped_steps=2)
    clean = net.x.clone()
    for _ in range(4):
        net.x = clean.clone()
        net.x[0, 0, 0, 0] = float("nan")
        assert not net.step().ok
        net.x = clean
        assert net.step().ok


def test_non_finite_host_parameters_raise() -> None:
    net = Net("cnn", {"r0c1": SeedStage.BLENDING})
    with torch.no_grad():
        net.model.host.blocks[0].conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(GovernorError, match=r"host parameters \['host\.blocks\.0\.conv\.weight'\]"):
        net.step()


def test_without_replay_host_gradients_are_not_blamed_on_a_seed() -> None:
    net = Net("cnn", {"r0c1": SeedStage.HOLDING})
    poison_backward(net.model.slots["r0c1"].seed)
    loss = net.loss()
    assert net.governor.check_loss(loss, net.loss).ok
    loss.backward()
    verdict = net.governor.check_gradients()
    assert verdict.pruned == () and "pass replay=" in verdict.reason
    assert all(p.grad is None for p in net.model.parameters())


# ---- seeded trials ---------------------------------------------------------------------------------

FAULTS = ("none", "nan_weights", "backward_nan", "huge_output", "host_nan_input", "host_overflow")
STAGES = (SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED)


def _isolated(topology: str, stage: SeedStage) -> bool:
    return stage is SeedStage.TRAINING or (stage is SeedStage.BLENDING and topology == "cnn")


def _trial(rng: random.Random) -> tuple[str, str | None]:
    """One random scenario; returns (description, failure or None)."""
    topology = rng.choice(["cnn", "transformer"])
    fault = rng.choice(FAULTS)
    stage = rng.choice(STAGES)
    slots = ["r0c0", "r0c1"] if topology == "transformer" else ["r0c0", "r1c0", "r0c1", "r1c1"]
    faulty, innocent = rng.sample(slots, 2)
    innocent_stage = rng.choice([SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING])
    dtype = (
        torch.bfloat16 if fault in ("huge_output", "host_overflow") or rng.random() < 0.25 else torch.float32
    )
    what = f"{topology} {fault} in {faulty}@{stage.name} (innocent {innocent}@{innocent_stage.name}) {dtype}"
    net = Net(topology, {faulty: stage, innocent: innocent_stage}, dtype)
    seed = net.model.slots[faulty].seed
    if fault == "nan_weights":
        with torch.no_grad():
            next(p for p in seed.parameters() if p.dim() > 1).view(-1)[0] = float("nan")
    elif fault == "backward_nan":
        poison_backward(seed)
    elif fault == "huge_output":
        scale_output(seed, 1e38)
    elif fault == "host_nan_input":
        if topology == "cnn":
            net.x[0, 0, 0, 0] = float("nan")
        else:
            with torch.no_grad():
                net.model.host.tok_emb.weight[net.x[0, 0]] = float("nan")
    elif fault == "host_overflow":
        with torch.no_grad():
            head = net.model.host.classifier if topology == "cnn" else net.model.host.ln_f
            head.weight.mul_(1e38)
    host = net.host_state()
    fossil_fault = stage is SeedStage.FOSSILIZED and fault in ("nan_weights", "backward_nan", "huge_output")
    try:
        verdict = net.step()
    except GovernorError as exc:
        host_nan_param = fault == "host_nan_input" and topology == "transformer"
        if (fossil_fault and f"slot {faulty!r}" in str(exc)) or host_nan_param:
            return what, None
        return what, f"unexpected GovernorError: {exc}"
    if fault == "host_nan_input" and topology == "transformer":
        return what, "NaN host parameters did not raise"
    if not verdict.ok and not _same(host, net.host_state()):
        return what, "a skipped step changed the host"
    pruned = set(verdict.pruned)
    if innocent in pruned:
        return what, f"the innocent seed was pruned: {verdict.reason}"
    must_show = {
        "none": False,
        # In TRAINING the incubator hides the seed output and its weight gradients stay finite:
        # nothing non-finite reaches the step (the slot's own health check marks the seed).
        "nan_weights": stage is not SeedStage.TRAINING,
        "backward_nan": not _isolated(topology, stage),
        "huge_output": False,  # whether it overflows depends on the values; if it does, blame the seed
        "host_nan_input": True,
        "host_overflow": True,
    }[fault]
    if fault == "none" or (fault == "backward_nan" and _isolated(topology, stage)):
        return what, None if verdict.ok else f"a healthy step was skipped: {verdict.reason}"
    if fault in ("host_nan_input", "host_overflow"):
        return what, None if (not verdict.ok and not pruned) else f"host fault gave {verdict}"
    if verdict.ok:
        return what, "the fault did not show but should have" if must_show else None
    if fossil_fault:
        return what, f"a fossilized culprit did not raise: {verdict}"
    if pruned != {faulty}:
        return what, f"pruned {sorted(pruned)} instead of {faulty!r}: {verdict.reason}"
    if not net.step().ok:
        return what, f"training did not continue after pruning: {net.governor.interventions[-1].reason}"
    return what, None


def test_seeded_governor_trials() -> None:
    rng = random.Random(20240607)
    failures, seen = [], set()
    for _ in range(TRIALS):
        what, failure = _trial(rng)
        if failure:
            failures.append(f"{what}: {failure}")
        seen.update(word for word in what.split() if word in FAULTS)
        seen.update(stage.name for stage in STAGES if f"@{stage.name} (" in what)
    print(f"governor trials: tried {TRIALS}, failed {len(failures)}")
    assert seen == set(FAULTS) | {stage.name for stage in STAGES}, seen
    assert not failures, f"{len(failures)} of {TRIALS} failed:\n" + "\n".join(failures)


def test_a_host_whose_backward_is_non_finite_prunes_no_seed() -> None:
    net = Net("cnn", {"r0c1": SeedStage.HOLDING, "r1c1": SeedStage.BLENDING})
    poison_backward(net.model.host.classifier)  # NaN arrives at both seeds from downstream
    verdict = net.step()
    assert not verdict.ok and verdict.pruned == () and "in the host" in verdict.reason
    assert {net.model.slots[s].stage for s in ("r0c1", "r1c1")} == {SeedStage.HOLDING, SeedStage.BLENDING}
