"""A compiled model follows every lifecycle change (issue 15 item 1).

The kind: Dynamo reuses a graph while its guards pass, so whatever ``forward`` branches on
must be something Dynamo guards on, and alpha must be a graph input. The slot branches
only on plain attributes it sets at commit and reads alpha from a buffer. These tests
compile a model once, walk it through the whole lifecycle - GERMINATED, TRAINING, the
BLENDING ramp, HOLDING, FOSSILIZED, an immediate prune and a scheduled prune's ramp-down,
then the cooldown - and at every step compare the compiled model with the eager one
(output and every parameter gradient) and count compilations: one for each configuration
of what the slots' forwards read that has not been seen before, none during a ramp, and
never more than one per change. Models: ``MorphogeneticModel`` around ``CNNHost`` and
``TransformerHost``, and injected user models (a CNN and a token MLP). The backend runs
AOTAutograd (``aot_eager``), so the backward is the compiled one.

The issue's instances are regression tests at the end: a slot (or a ``TransformerHost``
model) compiled in TRAINING and advanced to BLENDING at alpha 1, the gradient of the host
conv upstream of a slot that advances to HOLDING, and the README loop compiled once at
the start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from esper_core.alpha import AlphaMode
from esper_core.blend import BlendAlgorithm
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost, TransformerHost
from esper_core.inject import alpha_overrides, evaluate_injected, inject_slots
from esper_core.model import MorphogeneticModel
from esper_core.optim import OptimizerBinding, host_parameters
from esper_core.slot import SeedSlot
from esper_core.stages import RUNS_SEED, SeedStage

from .conftest import CountingBackend

_S = SeedStage
_B = BlendAlgorithm
BLUEPRINT = {"cnn": "conv_light", "transformer": "mlp_small"}


@pytest.fixture(autouse=True)
def roomy_cache() -> Iterator[None]:
    """A walk visits more configurations than torch's default recompile_limit (8) allows."""
    with torch._dynamo.config.patch(recompile_limit=64):
        yield


# ---- the models ----------------------------------------------------------------------------------


class UserCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1).flatten(1))


class UserMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.blocks = nn.Sequential(*(nn.Sequential(nn.Linear(16, 16), nn.GELU()) for _ in range(3)))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x)))


def _permissive() -> QualityGates:
    return QualityGates("permissive")


def _morphogenetic(topology: str) -> tuple[nn.Module, list[SeedSlot], torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    if topology == "cnn":
        host: nn.Module = CNNHost(num_classes=3, n_blocks=2, base_channels=4)
        x = torch.randn(2, 3, 8, 8, generator=g)
    else:
        host = TransformerHost(vocab_size=11, n_embd=8, n_head=2, n_layer=3, block_size=6)
        x = torch.randint(0, 11, (2, 6), generator=g)
    model = MorphogeneticModel(host, gates=_permissive())
    return model, [model.slot(s) for s in model.slot_ids[:3]], x


def _injected(kind: str) -> tuple[nn.Module, list[SeedSlot], torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    if kind == "cnn":
        model: nn.Module = UserCNN()
        x = torch.randn(2, 3, 6, 6, generator=g)
        targets = {"stem": "cnn", "body.0": "cnn", "body.2": "cnn"}
    else:
        model = UserMLP()
        x = torch.randn(2, 5, 6, generator=g)
        targets = {"blocks.0": "transformer", "blocks.1.0": "transformer", "blocks.2": "transformer"}
    slots = inject_slots(model, targets, example_input=x, gates=_permissive())
    return model, list(slots.values()), x


MODELS: dict[str, Callable[[], tuple[nn.Module, list[SeedSlot], torch.Tensor]]] = {
    "cnn_host": lambda: _morphogenetic("cnn"),
    "transformer_host": lambda: _morphogenetic("transformer"),
    "injected_cnn": lambda: _injected("cnn"),
    "injected_mlp": lambda: _injected("transformer"),
}


# ---- what forward reads, from public state --------------------------------------------------------


def forward_configuration(slot: SeedSlot) -> tuple[Any, ...]:
    """What the slot's forward (and the code routing to it) branches on, read from public state.

    A model routes to a slot that holds a seed; the slot runs the seed in RUNS_SEED stages:
    straight-through in TRAINING, otherwise behind a gradient stop when isolated, without
    grad while alpha ramps down, blended with its algorithm. Alpha itself is a graph input.
    """
    if slot.stage not in RUNS_SEED:
        return (slot.seed is not None,)
    if slot.stage is _S.TRAINING:  # straight-through: nothing is blended, the algorithm is not read
        return (True, "straight-through")
    ramping_down = slot.schedule.mode is AlphaMode.DOWN
    return (True, slot.isolated, ramping_down, slot.algorithm)


class Walk:
    """Drives the lifecycle and checks the compiled model against the eager one after each change."""

    def __init__(self, model: nn.Module, slots: list[SeedSlot], x: torch.Tensor, topology: str) -> None:
        self.model, self.slots, self.x, self.topology = model, slots, x, topology
        self.backend = CountingBackend(inner="aot_eager")
        self.compiled = torch.compile(model, backend=self.backend, fullgraph=True)
        self.seen: set[tuple[Any, ...]] = set()
        self.log: list[tuple[str, int, int]] = []  # (step, compilations, expected)
        self.check("start")

    def configuration(self) -> tuple[Any, ...]:
        return tuple(forward_configuration(s) for s in self.slots)

    def check(self, step: str) -> None:
        config = self.configuration()
        expected = int(config not in self.seen)
        self.seen.add(config)
        before = self.backend.compilations
        got, got_grads = _output_and_grads(self.model, self.compiled, self.x)
        compilations = self.backend.compilations - before
        want, want_grads = _output_and_grads(self.model, self.model, self.x)
        torch.testing.assert_close(got, want, msg=step)
        assert got_grads.keys() == want_grads.keys(), step
        for name, grad in want_grads.items():
            torch.testing.assert_close(got_grads[name], grad, msg=f"{step}: {name}")
        self.log.append((step, compilations, expected))
        assert compilations == expected, self.describe()

    def describe(self) -> str:
        return "\n".join(f"{step}: compiled {n}, expected {e}" for step, n, e in self.log)

    def grow(self, name: str, slot: SeedSlot, algorithm: BlendAlgorithm, last: SeedStage) -> None:
        """GERMINATED -> TRAINING -> BLENDING (each ramp epoch) -> HOLDING -> FOSSILIZED, up to ``last``."""
        slot.germinate(BLUEPRINT[slot.topology], algorithm=algorithm, ramp_epochs=3)
        _perturb(slot)  # non-zero seed weights, so every stage's output really differs
        self.check(f"{name} germinated")
        for stage in (_S.TRAINING, _S.BLENDING, _S.HOLDING, _S.FOSSILIZED):
            if stage is _S.HOLDING:
                while not (slot.schedule.at_rest and slot.alpha == 1.0):
                    slot.step_epoch()
                    self.check(f"{name} ramp alpha={slot.alpha:.2f}")
            if stage is _S.FOSSILIZED:
                slot.record_counterfactual(2.0)
            slot.record_accuracy(40.0 + len(self.log))
            assert slot.advance(stage).passed, stage
            self.check(f"{name} {stage.name}")
            if stage is last:
                return


def _perturb(slot: SeedSlot) -> None:
    g = torch.Generator().manual_seed(len(slot.slot_id))
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)


def _output_and_grads(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Any:
    model.zero_grad(set_to_none=True)
    out = run(x)
    out.float().square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---- the walk ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MODELS))
def test_compiled_model_follows_every_stage_change(kind: str) -> None:
    model, (a, b, c), x = MODELS[kind]()
    topology = a.topology
    walk = Walk(model, [a, b, c], x, topology)
    walk.grow("a", a, _B.ADD, last=_S.FOSSILIZED)
    walk.grow("b", b, _B.GATE, last=_S.HOLDING)
    b.schedule_prune(3, reason="test", initiator="tester")  # ramp-down: a BLENDING stage without grad
    walk.check("b schedule_prune")
    while b.seed is not None:
        b.step_epoch()
        walk.check(f"b ramp down alpha={b.alpha:.2f} {b.stage.name}")
    walk.grow("c", c, _B.MULTIPLY, last=_S.BLENDING)
    c.step_epoch()
    walk.check("c mid-ramp")
    c.prune("test", "tester")
    walk.check("c pruned")
    while not (b.available and c.available):  # the cooldown back to DORMANT
        for slot in (b, c):
            slot.step_epoch()
        walk.check(f"cooldown {b.stage.name} {c.stage.name}")
    walk.grow("c", c, _B.ADD, last=_S.TRAINING)  # a second seed in a slot that had one

    assert all(n <= 1 for _, n, _ in walk.log), walk.describe()
    assert all(n == 0 for step, n, _ in walk.log if "ramp" in step), walk.describe()
    steps = {step: (n, e) for step, n, e in reversed(walk.log)}  # a repeated step: its first time
    for stage in ("germinated", "TRAINING", "BLENDING"):  # every new forward compiles once
        assert steps[f"a {stage}"][0] == 1, walk.describe()
    # HOLDING ends BLENDING's gradient stop where BLENDING isolates (convolutional topologies).
    assert steps["a HOLDING"][0] == (1 if topology == "cnn" else 0), walk.describe()
    assert steps["a FOSSILIZED"][0] == 0 and steps["b schedule_prune"][0] == 1, walk.describe()
    assert sum(n for _, n, _ in walk.log) == len(walk.seen)  # one graph per configuration


def test_past_the_recompile_limit_the_compiled_model_is_still_right() -> None:
    """Each configuration is one cached graph; past torch's recompile_limit a frame runs eagerly
    (``fullgraph=False``), never a stale graph."""
    model, (a, b, c), x = _morphogenetic("cnn")
    backend = CountingBackend()
    with torch._dynamo.config.patch(recompile_limit=3):
        compiled = torch.compile(model, backend=backend)
        for slot in (a, b, c):
            slot.germinate("conv_light", ramp_epochs=1)
            _perturb(slot)
            for stage in (_S.TRAINING, _S.BLENDING):
                slot.record_accuracy(40.0)
                assert slot.advance(stage).passed
                got, got_grads = _output_and_grads(model, compiled, x)
                want, want_grads = _output_and_grads(model, model, x)
                torch.testing.assert_close(got, want)
                for name, grad in want_grads.items():
                    torch.testing.assert_close(got_grads[name], grad, msg=name)
    assert backend.compilations <= 3


def test_alpha_buffer_is_written_again_by_a_load_after_to_empty() -> None:
    """Meta-device style initialisation: ``to_empty()`` leaves every buffer uninitialised and
    the alpha buffer is not in the state_dict, so the load itself must write it again."""
    model, (slot, *_), x = _morphogenetic("cnn")
    slot.germinate("conv_light", ramp_epochs=4)
    assert slot.advance(_S.TRAINING).passed
    _perturb(slot)
    slot.record_accuracy(40.0)
    assert slot.advance(_S.BLENDING).passed
    slot.step_epoch()
    slot.step_epoch()
    model.eval()
    with torch.no_grad():
        want = model(x)
    checkpoint = model.state_dict()
    model.to_empty(device=x.device)
    with torch.no_grad():
        slot._alpha_value.fill_(float("nan"))  # what uninitialised memory may hold
    model.load_state_dict(checkpoint)
    compiled = torch.compile(model, backend=CountingBackend(inner="aot_eager"), fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)
        torch.testing.assert_close(compiled(x), want)


# ---- the instances ------------------------------------------------------------------------


def _differs_by(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach() - b.detach()).abs().max().item()


def _to_blending_at_one(slot: SeedSlot) -> None:
    slot.record_accuracy(40.0)
    assert slot.advance(_S.BLENDING).passed
    while not (slot.schedule.at_rest and slot.alpha == 1.0):
        slot.step_epoch()


def test_bare_slot_compiled_in_training_blends_its_seed_in_after_advancing() -> None:
    """Issue 15 item 1: the compiled output stayed equal to the host's (off by ~1.09)."""
    torch.manual_seed(0)
    slot = SeedSlot("s", topology="cnn", dim=4, gates=_permissive())
    slot.germinate("conv_light", ramp_epochs=2)
    assert slot.advance(_S.TRAINING).passed
    _perturb(slot)
    h = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(slot, backend=CountingBackend(inner="aot_eager"), fullgraph=True)
    torch.testing.assert_close(compiled(h), h, rtol=0, atol=0)  # TRAINING: the host's features
    _to_blending_at_one(slot)
    got, want = compiled(h), slot(h)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got, slot.seed(h))  # ADD at alpha 1: the seed's output
    assert _differs_by(got, h) > 0.5
    slot.record_accuracy(41.0)
    assert slot.advance(_S.HOLDING).passed
    torch.testing.assert_close(compiled(h), slot(h))


def test_transformer_host_compiled_in_training_blends_mlp_small_in_after_advancing() -> None:
    """Issue 15 item 1: a TransformerHost with an mlp_small seed (off by ~0.36)."""
    model, (slot, *_), tokens = _morphogenetic("transformer")
    host_out = model.host(tokens).detach()
    slot.germinate("mlp_small", ramp_epochs=2)
    assert slot.advance(_S.TRAINING).passed
    _perturb(slot)
    compiled = torch.compile(model, backend=CountingBackend(inner="aot_eager"), fullgraph=True)
    torch.testing.assert_close(compiled(tokens), host_out, rtol=0, atol=0)
    _to_blending_at_one(slot)
    got = compiled(tokens)
    torch.testing.assert_close(got, model(tokens))
    assert _differs_by(got, host_out) > 0.05


def test_upstream_host_conv_gets_its_gradient_once_the_seed_holds() -> None:
    """Issue 15 item 1: in HOLDING the first block's conv got gradient 0 compiled (~4.46 eager)."""
    model, (_first, second, *_), x = _morphogenetic("cnn")  # second: after block 0 and the pool
    upstream = model.host.blocks[0].conv.weight
    second.germinate("conv_light", ramp_epochs=1)
    assert second.advance(_S.TRAINING).passed
    _perturb(second)
    _to_blending_at_one(second)
    compiled = torch.compile(model, backend=CountingBackend(inner="aot_eager"), fullgraph=True)
    _, grads = _output_and_grads(model, compiled, x)
    assert torch.count_nonzero(grads["host.blocks.0.conv.weight"]) == 0  # isolated, alpha 1
    second.record_accuracy(41.0)
    assert second.advance(_S.HOLDING).passed
    _, got = _output_and_grads(model, compiled, x)
    _, want = _output_and_grads(model, model, x)
    torch.testing.assert_close(got["host.blocks.0.conv.weight"], want["host.blocks.0.conv.weight"])
    assert upstream.grad is not None and want["host.blocks.0.conv.weight"].abs().sum() > 0


class Net(nn.Module):  # the README's model
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _readme_loop(compile_model: bool) -> dict[str, Any]:
    """The README quickstart, with the training forward compiled once before the loop."""
    torch.manual_seed(0)
    x = torch.randn(256, 1, 8, 8)
    y = (x[:, :, :4].mean((1, 2, 3)) > x[:, :, 4:].mean((1, 2, 3))).long()
    model = Net()
    slots = inject_slots(model, {"features": "cnn"}, example_input=x[:1], gates=_permissive())
    optimizer = torch.optim.Adam(host_parameters(model, slots), lr=1e-2)
    OptimizerBinding(optimizer, slots)
    slot = slots["features"]
    backend = CountingBackend(inner="aot_eager")
    forward = torch.compile(model, backend=backend) if compile_model else model
    slot.germinate("conv_light", ramp_epochs=3)
    losses, configurations = [], set()
    for _ in range(7):
        for i in range(0, 256, 64):
            optimizer.zero_grad()
            configurations.add(forward_configuration(slot))
            loss = F.cross_entropy(forward(x[i : i + 64]), y[i : i + 64])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        result = evaluate_injected(model, [(x, y)], lambda out, t: (out.argmax(1) == t).float())
        slot.record_accuracy(result.score)
        if "features" in result.contributions:
            slot.record_counterfactual(result.contributions["features"])
        if slot.stage is not _S.FOSSILIZED:
            slot.advance()
        slot.step_epoch()
    return {
        "model": model,
        "forward": forward,
        "slot": slot,
        "losses": losses,
        "compilations": backend.compilations,
        "configurations": len(configurations),
    }


def test_readme_loop_compiled_once_at_the_start_trains_like_eager() -> None:
    """Issue 15 item 1: compiled once at the start, the seed fossilized without ever changing
    the compiled model's output."""
    compiled = _readme_loop(compile_model=True)
    eager = _readme_loop(compile_model=False)
    model, forward, slot = compiled["model"], compiled["forward"], compiled["slot"]
    assert slot.stage is eager["slot"].stage is _S.FOSSILIZED
    torch.testing.assert_close(compiled["losses"], eager["losses"], rtol=1e-4, atol=1e-5)
    for (name, got), (_, want) in zip(
        model.named_parameters(), eager["model"].named_parameters(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)
    # One graph per configuration the training forward met (GERMINATED, TRAINING, BLENDING,
    # HOLDING; FOSSILIZED reads what HOLDING reads), not one per epoch.
    assert compiled["compilations"] == compiled["configurations"] == 4
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        got = forward(x)
        torch.testing.assert_close(got, model(x))
        with alpha_overrides(model, {"features": torch.zeros(())}):
            without_seed = model(x)
    assert _differs_by(got, without_seed) > 1e-3  # the fossilized seed shapes the compiled output
