"""``torch.compile(model, fullgraph=True)`` of a MorphogeneticModel: no graph breaks in any
stage configuration, the compiled model computes what the eager one does, and an alpha
ramp reuses one compiled graph (a stage change may cost one recompilation)."""

from __future__ import annotations

import itertools

import pytest
import torch

from esper_core.blend import BlendAlgorithm
from esper_core.model import MorphogeneticModel
from esper_core.stages import SeedStage

from .conftest import CountingBackend, build_model, drive, example

_S = SeedStage
_B = BlendAlgorithm

#: name -> per-slot (stage, algorithm) for the first slots of the model; others stay DORMANT.
CONFIGURATIONS = {
    "all_dormant": (),
    "training": ((_S.TRAINING, _B.ADD),),
    "blending_add": ((_S.BLENDING, _B.ADD),),
    "blending_multiply": ((_S.BLENDING, _B.MULTIPLY),),
    "blending_gate": ((_S.BLENDING, _B.GATE),),
    "holding": ((_S.HOLDING, _B.ADD),),
    "fossilized": ((_S.FOSSILIZED, _B.ADD),),
    "mixed": ((_S.FOSSILIZED, _B.MULTIPLY), (_S.BLENDING, _B.GATE)),
}


def _configure(topology: str, name: str) -> MorphogeneticModel:
    model = build_model(topology)
    for slot_id, (stage, algorithm) in zip(model.slot_ids, CONFIGURATIONS[name], strict=False):
        drive(model, slot_id, stage, algorithm)
    for slot in model.slots.values():
        if slot.stage is _S.BLENDING:
            slot.step_epoch()  # mid-ramp: 0 < alpha < 1, so the blend really mixes
    return model


def _output_and_grads(model: torch.nn.Module, run: torch.nn.Module, x: torch.Tensor):  # type: ignore[no-untyped-def]
    model.zero_grad(set_to_none=True)
    out = run(x)
    out.float().square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_every_stage_configuration_compiles_in_one_graph(topology: str, name: str) -> None:
    model = _configure(topology, name)
    x = example(topology, seed=5)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1

    torch._dynamo.reset()
    backend = CountingBackend()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    # Eval mode keeps BatchNorm statistics fixed, so both runs see identical modules.
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    model.train()
    got, got_grads = _output_and_grads(model, compiled, x)
    want, want_grads = _output_and_grads(model, model, x)
    torch.testing.assert_close(got, want)
    assert got_grads.keys() == want_grads.keys()
    for key, grad in want_grads.items():
        torch.testing.assert_close(got_grads[key], grad, msg=key)
    assert backend.compilations == 2  # one graph per grad mode / train flag, no more


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_alpha_ramp_reuses_one_graph_and_stage_changes_recompile_at_most_once(topology: str) -> None:
    model = build_model(topology)
    slot_id = model.slot_ids[0]
    slot = drive(model, slot_id, _S.BLENDING, _B.ADD, ramp_epochs=6)
    model.eval()
    x = example(topology, seed=3)
    backend = CountingBackend()
    compiled = torch.compile(model, backend=backend, fullgraph=True)

    outputs = []
    with torch.no_grad():
        while True:
            got = compiled(x)
            torch.testing.assert_close(got, model(x))
            outputs.append(got)
            if slot.schedule.at_rest and slot.alpha == 1.0:
                break
            slot.step_epoch()
        assert len(outputs) == 7  # alpha 0, 1/6, ..., 1
        assert backend.compilations == 1, "the ramp must not recompile"
        # The compiled graph really reads the current amplitude (not a baked-in constant).
        assert not torch.equal(outputs[0], outputs[3])

        counts = [backend.compilations]

        def stage_change(change) -> None:  # type: ignore[no-untyped-def]
            change()
            torch.testing.assert_close(compiled(x), model(x))
            torch.testing.assert_close(compiled(x), model(x))
            counts.append(backend.compilations)

        stage_change(lambda: slot.advance(_S.HOLDING))
        stage_change(lambda: slot.schedule_prune(4, reason="test", initiator="tester"))
        for _ in range(3):  # ramping down: BLENDING, no recompilation
            slot.step_epoch()
            torch.testing.assert_close(compiled(x), model(x))
        assert backend.compilations == counts[-1]
        stage_change(slot.step_epoch)  # the ramp ends: pruned, the seed is gone
    assert slot.stage is _S.PRUNED
    steps = [b - a for a, b in itertools.pairwise(counts)]
    assert all(step <= 1 for step in steps), counts


def test_alpha_buffer_follows_dtype_casts_and_is_not_in_the_state_dict() -> None:
    model = build_model("transformer")
    slot = drive(model, model.slot_ids[0], _S.BLENDING, _B.ADD, ramp_epochs=4)
    slot.step_epoch()
    assert not any("_alpha_value" in key for key in model.state_dict())
    model.double()
    assert slot._alpha_value.dtype == torch.float64
    assert slot._alpha_value.item() == pytest.approx(slot.alpha)
    slot.step_epoch()
    assert slot._alpha_value.item() == pytest.approx(slot.alpha) == pytest.approx(0.5)
    backend = CountingBackend()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x = example("transformer")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
    assert compiled(x).dtype == torch.float64
