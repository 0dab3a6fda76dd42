"""Hugging Face inputs and layers: tokenizer-style batches, keyword example inputs, Conv1D widths."""

from __future__ import annotations

import pytest
import torch

from esper_core.errors import HostError
from esper_core.inject import InjectionTarget, alpha_overrides, evaluate_injected, get_injection, inject_slots

from ..conftest import grow
from .conftest import VOCAB


def _bert_classifier():  # type: ignore[no-untyped-def]
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=32,
        num_labels=3,
    )
    return BertForSequenceClassification(config).eval()


def _encoding(batch: int, length: int):  # type: ignore[no-untyped-def]
    """What a tokenizer returns for padded text: a BatchEncoding (a mapping) of ids and mask."""
    from transformers import BatchEncoding

    ids = torch.randint(1, VOCAB, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[: batch // 2, length - 2 :] = 0
    return BatchEncoding({"input_ids": ids, "attention_mask": mask})


def _accuracy(out, y: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return (out.logits.argmax(-1) == y).float()


@pytest.mark.parametrize("form", ["BatchEncoding", "dict", "tuple"])
def test_bert_evaluates_tokenizer_batches_with_counterfactuals(permissive, form: str) -> None:
    model = _bert_classifier()
    slots = inject_slots(
        model,
        {"bert.encoder.layer.1": "transformer"},
        example_input=_encoding(1, 5),  # model(**encoding)
        gates=permissive,
    )
    slot_id = "bert_encoder_layer_1"
    assert slots[slot_id].dim == 32
    grow(slots[slot_id], "mlp", seed=1)
    encoding = _encoding(6, 7)
    ids, mask = encoding["input_ids"], encoding["attention_mask"]
    with torch.no_grad():
        y = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
    y[:2] = (y[:2] + 1) % 3
    inputs = {"BatchEncoding": encoding, "dict": dict(encoding), "tuple": (ids, mask)}[form]
    evaluation = evaluate_injected(model, [(inputs, y)], _accuracy)
    with torch.no_grad():
        main = _accuracy(model(input_ids=ids, attention_mask=mask), y).mean().item() * 100
        with alpha_overrides(model, {slot_id: torch.zeros(())}):
            off = _accuracy(model(input_ids=ids, attention_mask=mask), y).mean().item() * 100
    assert evaluation.samples == 6 and evaluation.score == pytest.approx(main)
    assert evaluation.contributions[slot_id] == pytest.approx(main - off)


def test_a_wrong_dim_on_a_gpt2_conv1d_is_refused_without_a_probe(gpt2) -> None:
    model = gpt2()
    path = "transformer.h.1.mlp.c_proj"  # transformers' Conv1D, nf = n_embd = 32
    with pytest.raises(
        HostError, match=r"dim 48 given for 'transformer.h.1.mlp.c_proj' does not match its Conv1D: nf is 32"
    ):
        inject_slots(model, [InjectionTarget(path, "transformer", dim=48)])
    assert get_injection(model) is None
    slots = inject_slots(model, [InjectionTarget(path, "transformer", dim=32)])
    assert slots["transformer_h_1_mlp_c_proj"].dim == 32


def test_a_bad_tokenizer_batch_is_described_by_shape(permissive) -> None:
    model = _bert_classifier()
    inject_slots(
        model, {"bert.encoder.layer.1": "transformer"}, example_input=_encoding(1, 5), gates=permissive
    )
    encoding = _encoding(4, 5)
    with pytest.raises(HostError) as info:
        evaluate_injected(model, [(encoding, torch.zeros(3, dtype=torch.long))], _accuracy)
    message = str(info.value)
    assert "kwargs['input_ids'] is Tensor(4, 5) torch.int64" in message and "batch size 3" in message
    assert "tensor(" not in message
