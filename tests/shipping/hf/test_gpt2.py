"""A grown GPT-2 (transformers) end to end: targets of every output kind, the labels= loss,
fold, export to a process without Esper, save_pretrained/from_pretrained, seed-only files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from esper_core import hf
from esper_core.alpha import BlendAlgorithm
from esper_core.errors import CheckpointError
from esper_core.folding import FoldAction, FoldedSeed, fold, plan_fold
from esper_core.inject import InjectionTarget, inject_slots, remove_slots
from esper_core.seed_checkpoint import load_seeds, save_seeds
from esper_core.stages import SeedStage

from ..conftest import grow, run_without_esper
from .conftest import VOCAB, Logits

S = SeedStage
# One target of each kind: a block (returns a tensor), an attention layer (returns a tuple),
# a Conv1D projection (where a LoRA seed merges) and the base model (returns a ModelOutput).
TARGETS = [
    InjectionTarget("transformer.h.0", "transformer", slot_id="block"),
    InjectionTarget("transformer.h.1.attn", "transformer", slot_id="attn", output=0),
    InjectionTarget("transformer.h.1.mlp.c_proj", "transformer", slot_id="proj"),
    InjectionTarget("transformer", "transformer", slot_id="final", output="last_hidden_state"),
]


def _grown(gpt2, permissive):  # type: ignore[no-untyped-def]
    model = gpt2()
    slots = inject_slots(model, TARGETS, example_input=torch.randint(0, VOCAB, (1, 4)), gates=permissive)
    grow(slots["block"], "mlp", seed=1)
    grow(slots["attn"], "norm", algorithm=BlendAlgorithm.MULTIPLY, seed=2)
    grow(slots["proj"], "lora", seed=3)
    grow(slots["final"], "attention", seed=4)
    return model, slots


def test_every_kind_of_target_gets_its_dim_and_changes_the_logits(gpt2, permissive) -> None:
    plain = gpt2().eval()
    model, slots = _grown(gpt2, permissive)
    assert {s: slots[s].dim for s in slots} == {"block": 32, "attn": 32, "proj": 32, "final": 32}
    ids = torch.randint(0, VOCAB, (2, 7))
    model.eval()
    out = model(ids)
    assert type(out).__name__ == "CausalLMOutputWithCrossAttentions"
    assert not torch.allclose(out.logits, plain(ids).logits)
    remove_slots(model, discard_seeds=True)
    torch.testing.assert_close(model(ids).logits, plain(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("train", [False, True])
def test_grown_gpt2_folds_with_equal_outputs(gpt2, permissive, train: bool) -> None:
    model, _slots = _grown(gpt2, permissive)
    model.train(train)
    folded = fold(model)
    assert type(folded).__name__ == "GPT2LMHeadModel"
    assert isinstance(folded.transformer, FoldedSeed) and isinstance(folded.transformer.h[0], FoldedSeed)
    ids = torch.randint(0, VOCAB, (2, 7))
    torch.manual_seed(11)  # GPT-2's dropout draws the same numbers in both
    expected = model(ids).logits
    torch.manual_seed(11)
    assert torch.equal(folded(ids).logits, expected)


def test_merge_auto_folds_the_lora_seed_into_the_conv1d(gpt2, permissive) -> None:
    model, _slots = _grown(gpt2, permissive)
    model.eval()
    steps = {s.slot_id: s for s in plan_fold(model, merge="auto")}
    assert steps["proj"].action is FoldAction.MERGE
    assert {steps[s].action for s in ("block", "attn", "final")} == {FoldAction.WRAP}
    folded = fold(model, merge="auto")
    assert type(folded.transformer.base_layer.h[1].mlp.c_proj).__name__ == "Conv1D"
    ids = torch.randint(0, VOCAB, (2, 7))
    torch.testing.assert_close(folded(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)


def test_folded_gpt2_exports_and_runs_without_esper_or_transformers(gpt2, permissive, tmp_path: Path) -> None:
    model, _slots = _grown(gpt2, permissive)
    folded = Logits(fold(model, merge="auto")).eval()
    ids = torch.randint(0, VOCAB, (2, 7))
    with torch.no_grad():
        expected = folded(ids)
    torch.testing.assert_close(expected, model.eval()(ids).logits, rtol=1e-5, atol=1e-5)
    torch.export.save(torch.export.export(folded, (ids,)), tmp_path / "model.pt2")
    torch.save(ids, tmp_path / "input.pt")
    torch.save(expected, tmp_path / "expected.pt")
    done = run_without_esper(
        "import torch\n"
        "program = torch.export.load('model.pt2').module()\n"
        "got = program(torch.load('input.pt', weights_only=True))\n"
        "expected = torch.load('expected.pt', weights_only=True)\n"
        "torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)\n"
        "print('equal', tuple(got.shape))\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "equal (2, 7, 64)" in done.stdout


def test_labels_loss_reaches_the_seeds_and_matches_the_logits(gpt2, permissive) -> None:
    model = gpt2()
    slots = inject_slots(model, TARGETS[:2], example_input=torch.randint(0, VOCAB, (1, 4)), gates=permissive)
    grow(slots["block"], "mlp", target=S.BLENDING, seed=1)
    slots["block"].step_epoch()  # alpha > 0: the seed's output reaches the loss
    grow(slots["attn"], "lora", target=S.TRAINING, seed=2)  # straight-through: learns as if added
    model.train()
    ids = torch.randint(0, VOCAB, (3, 9))
    torch.manual_seed(0)
    out = model(input_ids=ids, labels=ids)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    for name in ("block", "attn"):
        grads = [p.grad for p in slots[name].seed_parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    assert model.transformer.wte.weight.grad.abs().sum() > 0
    # a few steps on the loss train host and seeds together
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_save_pretrained_and_from_pretrained_keep_the_lifecycle(gpt2, permissive, tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    model = gpt2()
    slots = inject_slots(model, TARGETS[:2], example_input=torch.randint(0, VOCAB, (1, 4)), gates=permissive)
    grow(slots["block"], "mlp", target=S.BLENDING, seed=1)
    slots["block"].step_epoch()  # mid-ramp
    grow(slots["attn"], "attention", seed=2)
    hf.save_pretrained(model, tmp_path)
    assert {"config.json", "model.safetensors", hf.SEEDS_FILENAME} <= {p.name for p in tmp_path.iterdir()}

    # the host directory is a plain transformers model: no missing or unexpected keys
    _plain, info = GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info

    loaded = hf.from_pretrained(GPT2LMHeadModel, tmp_path, slot_options={"gates": permissive})
    assert type(loaded) is GPT2LMHeadModel
    for name in ("block", "attn"):
        assert loaded.esper_slots[name].state == slots[name].state
    ids = torch.randint(0, VOCAB, (2, 6))
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    for m in (model, loaded):
        m.esper_slots["block"].step_epoch()
    assert loaded.esper_slots["block"].alpha == model.esper_slots["block"].alpha

    with pytest.raises(CheckpointError, match=r"has no esper_seeds\.pt"):
        hf.from_pretrained(GPT2LMHeadModel, tmp_path / "missing")


def test_seed_only_checkpoint_is_small_beside_the_host(gpt2, permissive, tmp_path: Path) -> None:
    model = gpt2(n_layer=4, n_embd=64)
    targets = [InjectionTarget(f"transformer.h.{i}.mlp.c_proj", "transformer") for i in range(4)]
    slots = inject_slots(model, targets, gates=permissive, example_input=torch.randint(0, VOCAB, (1, 3)))
    for i, slot in enumerate(slots.values()):
        grow(slot, "lora", target=S.HOLDING if i % 2 else S.FOSSILIZED, seed=i)
    save_seeds(model, tmp_path / "seeds.pt")
    full = io.BytesIO()
    torch.save(model.state_dict(), full)
    seeds_bytes = (tmp_path / "seeds.pt").stat().st_size
    assert seeds_bytes < 0.1 * full.getbuffer().nbytes, (seeds_bytes, full.getbuffer().nbytes)

    fresh = load_seeds(gpt2(n_layer=4, n_embd=64), tmp_path / "seeds.pt", gates=permissive)
    ids = torch.randint(0, VOCAB, (2, 6))
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(ids).logits, model(ids).logits, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="check_host_weights=False"):
        load_seeds(gpt2(seed=1, n_layer=4, n_embd=64), tmp_path / "seeds.pt")
