"""Checkpoints: what the slot envelopes add to a save + load round trip.

The model is ``MorphogeneticModel(CNNHost(10))`` with a slot at each of its six injection
points and three active seeds from the CNN pack in different stages (TRAINING, BLENDING
with a gate module, FOSSILIZED). One round trip is ``torch.save(model.state_dict())``, then
``torch.load(weights_only=True)``, then loading the result.

* In place: the round trip into the same (live) model, against the same round trip of an
  identical model whose slots carry no envelope (their extra-state hooks switched off, so
  the module tree and the tensors are the same). The ratio is the envelopes' cost:
  encode, validate, restore. Target <= 1.2.
* Fresh model: building a new model and loading the checkpoint into it, the seeds rebuilt
  from their envelopes (``load_checkpoint``), against building a new envelope-free model,
  germinating the same seeds by hand (what a checkpoint without envelopes would require)
  and loading the tensors. Target <= 1.2.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from bench._harness import Benchmark, Measurement, compare
from esper_core.blend import BlendAlgorithm
from esper_core.checkpoint import load_checkpoint
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.inject import InjectionTarget, get_injection, inject_slots
from esper_core.model import MorphogeneticModel
from esper_core.registry import create_blueprint
from esper_core.slot import SeedSlot

#: (slot id, blueprint, algorithm, target stage)
SEEDS = (
    ("r0c0", "conv_light", BlendAlgorithm.ADD, "training"),
    ("r0c1", "bottleneck", BlendAlgorithm.GATE, "blending"),
    ("r0c2", "conv_small", BlendAlgorithm.ADD, "fossilized"),
)


class _PlainSlot(SeedSlot):
    """A slot without an envelope: the reference's state dict holds only tensors."""

    get_extra_state = nn.Module.get_extra_state
    set_extra_state = nn.Module.set_extra_state


def _new_model() -> MorphogeneticModel:
    return MorphogeneticModel(CNNHost(10), gates=QualityGates("permissive"))


def _germinate(model: MorphogeneticModel) -> None:
    for slot_id, blueprint, algorithm, _ in SEEDS:
        model.slot(slot_id).germinate(blueprint, algorithm=algorithm, ramp_epochs=4)


def _grown_model() -> MorphogeneticModel:
    torch.manual_seed(0)
    model = _new_model()
    _germinate(model)
    for slot_id, _, _, stage in SEEDS:
        slot = model.slot(slot_id)
        slot.advance()
        if stage == "training":
            continue
        slot.record_accuracy(50.0)
        slot.advance()
        slot.step_epoch()
        if stage == "blending":
            continue
        for _ in range(3):
            slot.step_epoch()
        slot.advance()
        slot.record_counterfactual(2.0)
        slot.advance()
    return model


def _plain(model: nn.Module) -> nn.Module:
    """Switch ``model``'s slots to envelope-free slots (in place; returns ``model``)."""
    for module in model.modules():
        if isinstance(module, SeedSlot):
            module.__class__ = _PlainSlot
    return model


def _to_file(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _from_file(data: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(data), weights_only=True)


def _load(model: nn.Module, state_dict: dict[str, Any]) -> None:
    """``model.load_state_dict``; for the envelope-free reference, torch's own (a
    ``MorphogeneticModel``'s is ``load_checkpoint``, which requires every slot's envelope)."""
    if any(isinstance(m, _PlainSlot) for m in model.modules()):
        nn.Module.load_state_dict(model, state_dict)
    else:
        model.load_state_dict(state_dict)


def _round_trip(model: nn.Module) -> None:
    _load(model, _from_file(_to_file(model)))


def in_place() -> Measurement:
    model = _grown_model()
    plain = _plain(_grown_model())
    n = sum(p.numel() for p in model.parameters())
    return compare(
        lambda: _round_trip(model),
        lambda: _round_trip(plain),
        repeats=21,
        number=5,
        warmup=3,
        detail=f"{len(model.slot_ids)} slots, 3 seeds, {n:,} params, {len(_to_file(model)):,} bytes",
    )


def alternating() -> Measurement:
    """Round trips that alternate between two checkpoints whose lifecycles differ."""
    early, late = _grown_model(), _grown_model()
    for slot_id in late.slot_ids:
        late.slot(slot_id).step_epoch()  # ramps and clocks move: every envelope differs
    files = [_to_file(early), _to_file(late)]
    plain_files = [_to_file(_plain(_grown_model())), _to_file(_plain(late))]
    model, plain = _grown_model(), _plain(_grown_model())
    state = {"case": 0, "reference": 0}

    def case() -> None:
        state["case"] ^= 1
        model.load_state_dict(_from_file(files[state["case"]]))

    def reference() -> None:
        state["reference"] ^= 1
        _load(plain, _from_file(plain_files[state["reference"]]))

    return compare(
        case, reference, repeats=21, number=4, warmup=2, detail="each load changes every slot's lifecycle"
    )


def fresh_model() -> Measurement:
    model = _grown_model()
    data = _to_file(model)
    plain_data = _to_file(_plain(_grown_model()))

    def with_envelopes() -> None:
        load_checkpoint(_new_model(), _from_file(data))

    def by_hand() -> None:
        target = _plain(_new_model())
        _germinate(target)
        target.load_state_dict(_from_file(plain_data), strict=False)

    return compare(
        with_envelopes, by_hand, repeats=15, number=2, warmup=2, detail="seeds rebuilt from envelopes"
    )


#: The many-seed restore: a model of this many blocks (a 64-channel 3x3 convolution each, at
#: the cnn topology's reference width) with a slot injected after every convolution, each
#: slot holding a seed.
MANY = 64
WIDTH = 64


def _many_host() -> nn.Module:
    return nn.Sequential(
        *(nn.Sequential(nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.ReLU()) for _ in range(MANY))
    )


def _many_targets() -> list[InjectionTarget]:
    return [InjectionTarget(f"{i}.0", "cnn", dim=WIDTH, slot_id=f"s{i}") for i in range(MANY)]


def _many_model() -> nn.Module:
    model = _many_host()
    inject_slots(model, _many_targets(), gates=QualityGates("permissive"))
    return model


def _blueprint(i: int) -> str:
    return "conv_light" if i % 2 else "norm"


def many_seeds() -> Measurement:
    """A fresh model with 64 seeds rebuilt from envelopes vs the same model (host and slots)
    with the 64 seed modules built by hand and its tensors loaded; both read their file."""
    torch.manual_seed(0)
    grown = _many_model()
    for i, slot in enumerate(get_injection(grown).slots.values()):
        slot.germinate(_blueprint(i), ramp_epochs=2)
        slot.advance()
    data = _to_file(grown)
    # The same model saved without envelopes: a state_dict as torch saves it (with its
    # _metadata), so both files cost torch.load the same apart from the envelopes.
    plain_data = _to_file(_plain(grown))

    def with_envelopes() -> None:
        load_checkpoint(_many_model(), _from_file(data))

    def by_hand() -> None:
        host = _plain(_many_model())  # the same structure, slots without envelopes
        seeds = nn.ModuleDict(
            {
                t.resolved_id: nn.ModuleDict({"seed": create_blueprint("cnn", _blueprint(i), WIDTH)})
                for i, t in enumerate(_many_targets())
            }
        )
        state = _from_file(plain_data)
        host.load_state_dict({k: v for k, v in state.items() if ".seed." not in k})
        seeds.load_state_dict({k.removeprefix("esper_slots."): v for k, v in state.items() if ".seed." in k})

    before, after = _per_seed(with_envelopes, by_hand)
    return compare(
        with_envelopes,
        by_hand,
        repeats=9,
        number=1,
        warmup=2,
        detail=f"{MANY} seeds, fresh model each time; +{(before - after) * 1e3 / MANY:.3f} ms per seed",
    )


def _per_seed(case: Any, reference: Any) -> tuple[float, float]:
    """Median seconds of one call of ``case`` and of ``reference`` (for the per-seed figure)."""
    import statistics
    import time

    times: list[list[float]] = [[], []]
    for _ in range(5):
        for i, fn in enumerate((case, reference)):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


BENCHMARKS = [
    Benchmark("checkpoint: save+load with envelopes / plain state_dict (3 seeds)", "<= 1.2", in_place),
    Benchmark("checkpoint: load alternating checkpoints / plain state_dict", "<= 1.2", alternating),
    Benchmark("checkpoint: restore into a fresh model / germinate by hand + load", "<= 1.2", fresh_model),
    Benchmark(
        f"checkpoint: restore {MANY} seeds into a fresh model / build by hand + load", "<= 1.2", many_seeds
    ),
]
