"""Lifecycle overheads: what a SeedSlot costs on top of the math it performs.

Every case is timed against a reference in the same process (see ``bench/_harness.py``):

* all slots DORMANT vs the bare host, forward + backward;
* a BLENDING ``conv_light`` slot vs a hand-written module doing the same math;
* a TRAINING (straight-through) slot vs a hand-written incubator;
* one activity capture vs one training step (the capture's share of a step);
* memory kept for backward by the GroupNorm + channels_last workaround vs plain isolation.

Blueprints come from the CNN pack when it is installed (``conv_light``, ``norm``); otherwise
equivalent residual modules are registered for the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from bench._harness import Benchmark, Measurement, compare, ratio_of
from esper_core.gates import QualityGates
from esper_core.registry import get_blueprint, temporary_blueprints
from esper_core.slot import SeedSlot
from esper_core.spec import BlueprintSpec
from esper_core.stages import SeedStage

DIM = 64
BATCH = 16
SIDE = 16


class _ResidualConv(nn.Module):
    """Stand-in for ``conv_light`` when the pack is absent: ``x + gn(conv(x))``, gain 0."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(8, dim)
        nn.init.zeros_(self.gn.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gn(self.conv(x))


class _Norm(nn.Module):
    """Stand-in for ``norm``: a GroupNorm that reads the seed input directly."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gn = nn.GroupNorm(8, dim)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.tanh(self.scale) * (self.gn(x) - x)


_FALLBACKS = {
    "conv_light": BlueprintSpec(
        name="conv_light", topology="cnn", factory=_ResidualConv,
        param_count=lambda d: 9 * d * d + 2 * d, description="bench stand-in",
    ),
    "norm": BlueprintSpec(
        name="norm", topology="cnn", factory=_Norm, param_count=lambda d: 2 * d + 1, description="bench stand-in"
    ),
}  # fmt: skip


@contextlib.contextmanager
def _blueprints() -> Iterator[None]:
    missing = []
    for name, spec in _FALLBACKS.items():
        try:
            get_blueprint("cnn", name)
        except Exception:
            missing.append(spec)
    with (
        temporary_blueprints(*missing, distribution="bench-lifecycle")
        if missing
        else contextlib.nullcontext()
    ):
        yield


def _block() -> nn.Module:
    return nn.Sequential(nn.Conv2d(DIM, DIM, 3, padding=1, bias=False), nn.BatchNorm2d(DIM), nn.ReLU())


def _input() -> Tensor:
    return torch.randn(BATCH, DIM, SIDE, SIDE, generator=torch.Generator().manual_seed(0))


def _slot(blueprint: str, stage: SeedStage) -> SeedSlot:
    """A slot driven to ``stage`` through the public API (permissive gates)."""
    slot = SeedSlot("bench", topology="cnn", dim=DIM, gates=QualityGates("permissive"))
    if stage is SeedStage.DORMANT:
        return slot
    slot.germinate(blueprint, ramp_epochs=2)
    slot.advance(SeedStage.TRAINING)
    if stage is SeedStage.TRAINING:
        return slot
    slot.record_accuracy(50.0)
    slot.advance(SeedStage.BLENDING)
    slot.step_epoch()  # alpha 0.5, mid-blend
    return slot


def _fwd_bwd(model: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], None]:
    def run() -> None:
        model(x).square().mean().backward()

    return run


# ---- 1. dormant slots ---------------------------------------------------------------------------


def dormant_slots() -> Measurement:
    torch.manual_seed(0)
    blocks = [_block() for _ in range(4)]
    slots = [_slot("conv_light", SeedStage.DORMANT) for _ in blocks]
    with_slots = nn.Sequential(*[m for pair in zip(blocks, slots, strict=True) for m in pair])
    bare = nn.Sequential(*blocks)
    x = _input()
    return compare(_fwd_bwd(with_slots, x), _fwd_bwd(bare, x), repeats=31, number=5,
                   detail="4 conv blocks, a DORMANT slot after each")  # fmt: skip


# ---- 2. blending slot vs hand-written ---------------------------------------------------------------


class _HandBlend(nn.Module):
    """What a BLENDING CNN slot computes, written out: detached input, seed, lerp."""

    def __init__(self, seed: nn.Module, alpha: float) -> None:
        super().__init__()
        self.seed = seed
        self.register_buffer("alpha", torch.tensor(alpha))

    def forward(self, h: Tensor) -> Tensor:
        return torch.lerp(h, self.seed(h.detach()), self.alpha)


class _HandSte(nn.Module):
    """What a TRAINING slot computes, written out: host value, seed learns as if added."""

    def __init__(self, seed: nn.Module) -> None:
        super().__init__()
        self.seed = seed

    def forward(self, h: Tensor) -> Tensor:
        s = self.seed(h.detach())
        return h + (s - s.detach())


def _versus(stage: SeedStage, hand: Callable[[nn.Module, SeedSlot], nn.Module]) -> Measurement:
    torch.manual_seed(0)
    slot = _slot("conv_light", stage)
    pre, post = _block(), _block()
    reference = hand(slot.seed, slot)
    x = _input()
    case = nn.Sequential(pre, slot, post)
    ref = nn.Sequential(pre, reference, post)
    return compare(_fwd_bwd(case, x), _fwd_bwd(ref, x), repeats=31, number=5,
                   detail=f"conv block, {stage.name} conv_light slot, conv block")  # fmt: skip


def blending_slot() -> Measurement:
    return _versus(SeedStage.BLENDING, lambda seed, slot: _HandBlend(seed, slot.alpha))


def training_slot() -> Measurement:
    return _versus(SeedStage.TRAINING, lambda seed, slot: _HandSte(seed))


# ---- 3. activity capture ------------------------------------------------------------------------------


def activity_capture() -> Measurement:
    torch.manual_seed(0)
    slot = _slot("conv_light", SeedStage.TRAINING)
    model = nn.Sequential(_block(), slot, _block(), _block())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = _input()

    def step() -> None:
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    step()
    slot.capture_activity()  # reference copy taken; from now on each capture measures a change
    # Time the capture itself against the step it would follow: the ratio is the capture's
    # share of a training step (measuring step+capture / step would bury a ~1% cost in the
    # step's own run-to-run noise).
    return compare(slot.capture_activity, step, repeats=31, number=5,
                   detail="capture / training step (the slot itself captures once per epoch)")  # fmt: skip


# ---- 4. memory of the GroupNorm workaround ---------------------------------------------------------------


def _saved_bytes(fn: Callable[[], Tensor], exclude: Tensor) -> int:
    """Bytes of distinct storages autograd keeps for backward, not counting ``exclude``'s."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() != exclude.untyped_storage().data_ptr():
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.sum().backward()
    return sum(storages.values())


def workaround_memory() -> Measurement:
    """Memory autograd keeps for a GroupNorm seed on channels_last features.

    Case: the slot (every GroupNorm of the seed guarded: a grad-requiring view, no copy). Reference: the same seed on
    the same features through a plain ``detach()`` of a contiguous tensor (no crash there).
    The detail also shows what the earlier contiguous-copy workaround would have kept.
    """
    torch.manual_seed(0)
    slot = _slot("norm", SeedStage.TRAINING)
    assert any(isinstance(m, torch.nn.GroupNorm) and m._forward_pre_hooks for m in slot.seed.modules())
    pre = _block().to(memory_format=torch.channels_last)
    x = _input().to(memory_format=torch.channels_last)
    h = pre(x).detach().requires_grad_(True)
    seed = slot.seed

    def incubate(host: Tensor, seed_in: Tensor) -> Tensor:
        s = seed(seed_in)
        return host + (s - s.detach())

    ours = _saved_bytes(lambda: slot(h), h)
    plain = h.detach().contiguous().requires_grad_(True)
    reference = _saved_bytes(lambda: incubate(plain, plain.detach()), plain)
    copied = _saved_bytes(lambda: incubate(h, h.detach().contiguous()), h)
    ratio = ours / reference if reference else float("inf")
    return ratio_of(
        [ratio],
        detail=f"kept for backward: slot {ours} B, plain detach {reference} B, "
        f"contiguous-copy workaround {copied} B (activation {h.numel() * h.element_size()} B)",
    )


def _within(fn: Callable[[], Measurement]) -> Callable[[], Measurement]:
    """Run with the blueprints available and torch on one thread: ratios of small CPU
    kernels are far steadier single-threaded on a shared machine."""

    def run() -> Measurement:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with _blueprints():
                return fn()
        finally:
            torch.set_num_threads(threads)

    return run


BENCHMARKS = [
    Benchmark("lifecycle: 4 DORMANT slots / bare host, fwd+bwd", "<= 1.02", _within(dormant_slots)),
    Benchmark(
        "lifecycle: BLENDING conv_light slot / hand-written, fwd+bwd", "<= 1.05", _within(blending_slot)
    ),
    Benchmark("lifecycle: TRAINING (STE) slot / hand-written, fwd+bwd", "<= 1.05", _within(training_slot)),
    Benchmark("lifecycle: activity capture / train step", "<= 0.03", _within(activity_capture)),
    Benchmark(
        "lifecycle: GroupNorm channels_last workaround memory / plain detach",
        "<= 1.01",
        _within(workaround_memory),
        note="bytes autograd keeps for backward; no activation copy",
    ),
]
