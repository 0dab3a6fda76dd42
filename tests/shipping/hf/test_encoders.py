"""Encoders (BERT, ViT) from small configs: ModelOutput and tuple targets, a conv merge, fold."""

from __future__ import annotations

import pytest
import torch

from esper_core.alpha import BlendAlgorithm
from esper_core.folding import FoldAction, fold, plan_fold
from esper_core.inject import InjectionTarget, inject_slots

from ..conftest import grow


@pytest.mark.parametrize("train", [False, True])
def test_bert_with_model_output_and_tuple_targets_folds_exactly(permissive, train: bool) -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=50,
        max_position_embeddings=32,
    )
    model = BertModel(config)
    targets = [
        InjectionTarget("encoder", "transformer", slot_id="encoder", output="last_hidden_state"),
        InjectionTarget("encoder.layer.0.attention", "transformer", slot_id="attention", output=0),
    ]
    slots = inject_slots(model, targets, example_input=torch.randint(0, 50, (1, 5)), gates=permissive)
    grow(slots["encoder"], "mlp", seed=1)
    grow(slots["attention"], "norm", algorithm=BlendAlgorithm.GATE, seed=2)
    model.train(train)
    ids = torch.randint(0, 50, (2, 9))
    torch.manual_seed(3)
    expected = model(ids)
    folded = fold(model)
    torch.manual_seed(3)
    got = folded(ids)
    assert torch.equal(got.last_hidden_state, expected.last_hidden_state)
    assert torch.equal(got.pooler_output, expected.pooler_output)


def test_vit_patch_projection_merges_an_affine_conv_seed(permissive) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=16,
        patch_size=4,
        num_labels=3,
    )
    model = ViTForImageClassification(config)
    path = "vit.embeddings.patch_embeddings.projection"  # a Conv2d: (B, 32, 4, 4) feature maps
    slots = inject_slots(model, {path: "cnn"}, example_input=torch.randn(1, 3, 16, 16), gates=permissive)
    grow(slots[path.replace(".", "_")], "ship_affine_conv", seed=1)
    model.eval()
    (step,) = plan_fold(model, merge="all")
    assert step.action is FoldAction.MERGE
    folded = fold(model, merge="all")
    assert type(folded.get_submodule(path)) is torch.nn.Conv2d
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(folded(x).logits, model(x).logits, rtol=1e-5, atol=1e-5)
