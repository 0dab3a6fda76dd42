"""A grown Llama (transformers): LoRA seeds merge into its nn.Linear layers, giving back a plain
LlamaForCausalLM that save_pretrained/from_pretrained handle alone; tuple targets fold exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from esper_core.alpha import BlendAlgorithm
from esper_core.errors import FoldError
from esper_core.folding import fold
from esper_core.inject import InjectionTarget, inject_slots

from ..conftest import grow
from .conftest import VOCAB

LORA_TARGETS = ["model.layers.0.mlp.down_proj", "model.layers.1.self_attn.o_proj"]


def test_merged_lora_seeds_give_back_the_plain_llama(llama, permissive, tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    model = llama()
    slots = inject_slots(
        model,
        dict.fromkeys(LORA_TARGETS, "transformer"),
        gates=permissive,
        example_input=torch.randint(0, VOCAB, (1, 4)),
    )
    grow(slots["model_layers_0_mlp_down_proj"], "lora", seed=1)
    grow(slots["model_layers_1_self_attn_o_proj"], "lora_large", seed=2)
    model.eval()
    folded = fold(model, merge="all")
    plain = llama(seed=9)
    assert [type(m) for m in folded.modules()] == [type(m) for m in plain.modules()]
    assert folded.state_dict().keys() == plain.state_dict().keys()
    ids = torch.randint(0, VOCAB, (2, 7))
    expected = model(ids).logits
    torch.testing.assert_close(folded(ids).logits, expected, rtol=1e-5, atol=1e-5)
    # the merged model is an ordinary transformers model: its own save/load is enough
    folded.save_pretrained(tmp_path)
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(ids).logits, folded(ids).logits, rtol=0, atol=0)


def test_merge_all_names_a_seed_that_cannot_merge(llama, permissive) -> None:
    model = llama()
    targets = [InjectionTarget("model.layers.0.self_attn", "transformer", slot_id="attn", output=0)]
    slots = inject_slots(model, targets, example_input=torch.randint(0, VOCAB, (1, 4)), gates=permissive)
    grow(slots["attn"], "lora")
    with pytest.raises(
        FoldError,
        match=r"'attn': the layer there \(transformers\.models\.llama\.modeling_llama\.LlamaAttention\) is not one that merges",
    ):
        fold(model, merge="all")


@pytest.mark.parametrize("train", [False, True])
def test_tuple_and_block_targets_fold_exactly(llama, permissive, train: bool) -> None:
    model = llama(attention_dropout=0.1)
    targets = [
        InjectionTarget("model.layers.0.self_attn", "transformer", slot_id="attn", output=0),
        InjectionTarget("model.layers.1", "transformer", slot_id="block"),
    ]
    slots = inject_slots(model, targets, example_input=torch.randint(0, VOCAB, (1, 4)), gates=permissive)
    grow(slots["attn"], "mlp_small", seed=1)
    grow(slots["block"], "attention", algorithm=BlendAlgorithm.GATE, seed=2)
    model.train(train)
    folded = fold(model)
    ids = torch.randint(0, VOCAB, (2, 7))
    torch.manual_seed(4)
    expected = model(ids).logits
    torch.manual_seed(4)
    assert torch.equal(folded(ids).logits, expected)
