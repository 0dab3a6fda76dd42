"""Cached decoding equals full decoding for every transformer blueprint, or refuses clearly."""

from __future__ import annotations

import pytest
import torch

import esper_blueprints_transformer
from esper_core.alpha import BlendAlgorithm
from esper_core.errors import HostError
from esper_core.folding import fold
from esper_core.inject import get_injection, inject_slots
from esper_core.registry import get_blueprint
from esper_core.stages import SeedStage

from ..conftest import grow
from .conftest import VOCAB

S = SeedStage
BLUEPRINTS = [spec.name for spec in esper_blueprints_transformer.BLUEPRINTS]


def test_every_pack_blueprint_declares_whether_it_is_position_wise() -> None:
    declared = {name: get_blueprint("transformer", name).position_wise for name in BLUEPRINTS}
    assert None not in declared.values(), declared
    assert {n for n, wise in declared.items() if not wise} == {"attention", "flex_attention"}


def _incremental_logits(model: torch.nn.Module, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    """Logits for positions ``prompt-1 ..`` from a prefill, then one cached token at a time."""
    out = model(input_ids=ids[:, :prompt], use_cache=True)
    logits, cache = [out.logits[:, -1]], out.past_key_values
    for t in range(prompt, ids.shape[1]):
        out = model(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
        logits.append(out.logits[:, -1])
        cache = out.past_key_values
    return torch.stack(logits, dim=1)


def _grown(build, permissive, blueprint: str, algorithm: BlendAlgorithm, stage: S = S.FOSSILIZED):  # type: ignore[no-untyped-def]
    model = build()
    target = "transformer.h.0" if hasattr(model, "transformer") else "model.layers.0"
    slots = inject_slots(
        model, {target: "transformer"}, example_input=torch.randint(0, VOCAB, (1, 4)), gates=permissive
    )
    (slot,) = slots.values()
    grow(slot, blueprint, target=stage, algorithm=algorithm, seed=5)
    return model.eval(), slot


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("blueprint", BLUEPRINTS)
def test_cached_decoding_equals_full_decoding_or_refuses(
    request, permissive, family: str, blueprint: str
) -> None:
    # noop has nothing to learn, so it cannot pass the gate out of TRAINING
    stage = S.TRAINING if blueprint == "noop" else S.FOSSILIZED
    model, slot = _grown(request.getfixturevalue(family), permissive, blueprint, BlendAlgorithm.ADD, stage)
    torch.manual_seed(1)
    ids = torch.randint(1, VOCAB, (2, 9))
    prompt = ids[:, :4]
    mask = torch.ones_like(prompt)
    full_logits = model(input_ids=ids, use_cache=False).logits[:, 3:]
    full_tokens = model.generate(
        prompt, attention_mask=mask, max_new_tokens=5, do_sample=False, use_cache=False
    )
    # the full-decoding greedy tokens are those of the full forward pass, step by step
    assert torch.equal(
        model(input_ids=full_tokens[:, :-1], use_cache=False).logits[:, 3:].argmax(-1), full_tokens[:, 4:]
    )
    if get_blueprint("transformer", blueprint).position_wise:
        torch.testing.assert_close(_incremental_logits(model, ids, 4), full_logits, rtol=1e-4, atol=1e-5)
        cached = model.generate(
            prompt, attention_mask=mask, max_new_tokens=5, do_sample=False, use_cache=True
        )
        assert torch.equal(cached, full_tokens)
        return
    # mixes positions: the cached step refuses, naming the slot and the blueprint, and says what to do
    message = rf"'{slot.slot_id}' \(FOSSILIZED\): blueprint transformer:{blueprint} mixes positions.*use_cache=False"
    with pytest.raises(HostError, match=message):
        model.generate(prompt, attention_mask=mask, max_new_tokens=5, do_sample=False)
    with pytest.raises(HostError, match=message):
        _incremental_logits(model, ids, 4)
    # ... and so does the folded model
    with pytest.raises(
        HostError,
        match=message.replace(rf"'{slot.slot_id}' \(FOSSILIZED\)", rf"folded seed '{slot.slot_id}'"),
    ):
        fold(model).generate(prompt, attention_mask=mask, max_new_tokens=5, do_sample=False)


def test_a_gate_blend_refuses_cached_decoding_even_for_a_position_wise_seed(gpt2, permissive) -> None:
    model, _slot = _grown(gpt2, permissive, "mlp", BlendAlgorithm.GATE, stage=S.HOLDING)
    prompt = torch.randint(1, VOCAB, (1, 4))
    with pytest.raises(HostError, match="GATE blend gate averages over earlier positions"):
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False)
    model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False, use_cache=False
    )


def test_the_refused_difference_is_real(gpt2, permissive) -> None:
    """Without the guard, an attention seed's cached logits differ from the full pass: the reason it refuses."""
    model, _slot = _grown(gpt2, permissive, "attention", BlendAlgorithm.ADD)
    for handle in get_injection(model).guards:
        handle.remove()
    ids = torch.randint(1, VOCAB, (2, 9))
    full = model(input_ids=ids, use_cache=False).logits[:, 3:]
    assert (_incremental_logits(model, ids, 4) - full).abs().max() > 1e-3
