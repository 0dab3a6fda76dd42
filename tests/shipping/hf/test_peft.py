"""PEFT LoRA models that are grown, folded, merged and unloaded (real ``peft``).

The kind (user report, wave 2): duck-typing code mistook a :class:`FoldedSeed` for the layer
it wraps. PEFT's ``merge_and_unload``/``unload`` replace every module that has a
``base_layer`` by ``module.get_base_layer()`` after ``module.merge()``, and the folded seed
forwarded both to its base layer: the seed was silently dropped. A folded seed now keeps
itself through PEFT's unload protocol and forwards data attributes only. The other order
(``merge_and_unload`` on the injected model, before ``fold``) replaces the LoRA layer the
slot is attached to; every function that would miss the slot says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from esper_core import hf
from esper_core.errors import HostError
from esper_core.folding import FoldedSeed, fold, plan_fold
from esper_core.gates import QualityGates
from esper_core.inject import evaluate_injected, inject_slots, remove_slots
from esper_core.seed_checkpoint import save_seeds
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

pytestmark = pytest.mark.hf

X = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))


def fossilize(slot: SeedSlot, *, seed: int = 3, blueprint: str = "mlp_small") -> None:
    slot.germinate(blueprint)
    with torch.no_grad():
        for p in slot.seed_parameters():  # as if trained
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed))
    slot.advance()
    slot.record_accuracy(50.0)
    slot.advance()
    while slot.alpha < 1:
        slot.step_epoch()
    slot.advance()
    slot.record_counterfactual(1.0)
    slot.advance()
    assert slot.stage is SeedStage.FOSSILIZED


def lora_sequential(*, trained_lora: bool, blueprint: str = "mlp_small") -> nn.Module:
    """The report's model: a LoRA (r=4) on ``0`` of a small MLP, a fossilized seed on the LoRA layer."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    pm = get_peft_model(net, LoraConfig(r=4, target_modules=["0"]))
    if trained_lora:  # LoRA's B starts at zero: give the merge something to merge
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.3, generator=torch.Generator().manual_seed(4))
    slots = inject_slots(
        pm, {"base_model.model.0": "transformer"}, example_input=X[:1], gates=QualityGates("permissive")
    )
    fossilize(slots["base_model_model_0"], blueprint=blueprint)
    return pm.eval()


def _folded_seeds(model: nn.Module) -> list[FoldedSeed]:
    return [m for m in model.modules() if isinstance(m, FoldedSeed)]


def _no_peft_layers(model: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return not any(isinstance(m, BaseTunerLayer) for m in model.modules())


def test_reported_merge_and_unload_after_fold_keeps_the_seed() -> None:
    """The report's instance: 0 FoldedSeeds and max|diff| 0.1668 after merge_and_unload."""
    pm = lora_sequential(trained_lora=False)
    with torch.no_grad():
        ref = pm(X)
        merged = fold(pm).eval().merge_and_unload()
        (seed,) = _folded_seeds(merged)
        assert type(seed.base_layer) is nn.Linear and _no_peft_layers(merged)
        assert torch.equal(merged(X), ref)  # LoRA's B is zero: the merge adds exactly nothing


def test_merge_and_unload_merges_the_lora_inside_the_folded_seed() -> None:
    pm = lora_sequential(trained_lora=True)
    with torch.no_grad():
        ref = pm(X)
        folded = fold(pm).eval()
        assert torch.equal(folded(X), ref)
        merged = folded.merge_and_unload()
        (seed,) = _folded_seeds(merged)
        assert type(seed.base_layer) is nn.Linear and _no_peft_layers(merged)
        assert (merged(X) - ref).abs().max() < 1e-5  # one rounding of PEFT's own merge
        without_seed = merged[2](merged[1](seed.base_layer(X)))
        assert (ref - without_seed).abs().max() > 1e-2  # the seed is what keeps the output


def test_unload_after_fold_keeps_the_seed_and_drops_the_adapter() -> None:
    pm = lora_sequential(trained_lora=True)
    with torch.no_grad():
        with pm.disable_adapter():  # the slot runs, the LoRA does not
            ref = pm(X)
        unloaded = fold(pm).eval().unload()
        assert len(_folded_seeds(unloaded)) == 1 and _no_peft_layers(unloaded)
        assert torch.equal(unloaded(X), ref)


def test_merge_and_unload_before_fold_is_named_by_every_function_that_would_miss_the_seed(
    tmp_path: Path,
) -> None:
    pm = lora_sequential(trained_lora=True)
    pm.merge_and_unload()  # replaces the LoRA layer the slot is attached to, in pm itself
    match = (
        r"target 'base_model\.model\.0' of slot 'base_model_model_0' was replaced after inject_slots: "
        r"the peft\.tuners\.lora\.layer\.Linear the slot is attached to is now a torch\.nn\.Linear there"
        r".*folded = esper_core\.fold\(model\); folded\.merge_and_unload\(\)"
    )
    y = torch.zeros(2, 5, dtype=torch.long)
    for call in (
        lambda: evaluate_injected(pm, [(X, y)], lambda out, t: (out.argmax(-1) == t).float().mean(-1)),
        lambda: fold(pm),
        lambda: save_seeds(pm, tmp_path / "seeds.pt"),
        lambda: remove_slots(pm),
    ):
        with pytest.raises(HostError, match=match):
            call()


def test_merge_reason_names_peft_lora_layer_by_its_qualified_class() -> None:
    pm = lora_sequential(trained_lora=False, blueprint="lora")  # a seed that merges into a Linear
    (step,) = plan_fold(pm, merge="auto")
    assert step.reason == (
        "the layer there (peft.tuners.lora.layer.Linear) is not one that merges: torch.nn.Linear, "
        "torch.nn.Conv1d/2d/3d or transformers' Conv1D, each with its class's own forward"
    )


def test_folded_seed_on_a_lora_layer_forwards_no_peft_method() -> None:
    (seed,) = _folded_seeds(fold(lora_sequential(trained_lora=False)))
    assert seed.weight is seed.base_layer.weight  # data is read through
    for name in ("merge", "unmerge", "get_base_layer", "set_adapter"):
        assert not hasattr(seed, name), name
    with pytest.raises(
        AttributeError, match=r"method 'merge' of its base layer \(peft\.tuners\.lora\.layer\.Linear\)"
    ):
        seed.merge()  # type: ignore[operator]


def test_gpt2_with_lora_grows_folds_and_merges(gpt2: Callable[..., nn.Module]) -> None:
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(gpt2(), LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(5))
    ids = torch.randint(1, 64, (2, 12), generator=torch.Generator().manual_seed(6))
    slots = inject_slots(
        pm,
        {"base_model.model.transformer.h.0.mlp": "transformer"},
        example_input={"input_ids": ids},
        gates=QualityGates("permissive"),
    )
    fossilize(slots["base_model_model_transformer_h_0_mlp"])
    pm.eval()
    with torch.no_grad():
        ref = pm(input_ids=ids, use_cache=False).logits
        merged = fold(pm).eval().merge_and_unload()
        assert type(merged).__name__ == "GPT2LMHeadModel" and _no_peft_layers(merged)
        assert len(_folded_seeds(merged)) == 1
        assert (merged(input_ids=ids, use_cache=False).logits - ref).abs().max() < 1e-4


def test_save_pretrained_of_a_compiled_model_writes_the_plain_model(
    gpt2: Callable[..., nn.Module], tmp_path: Path
) -> None:
    from transformers import GPT2LMHeadModel

    model = gpt2()
    compiled = torch.compile(model, backend="eager")
    ids = torch.randint(1, 64, (2, 12), generator=torch.Generator().manual_seed(6))
    slots = inject_slots(
        compiled,
        {"transformer.h.0.mlp": "transformer"},
        example_input={"input_ids": ids},
        gates=QualityGates("permissive"),
    )
    fossilize(slots["transformer_h_0_mlp"])
    hf.save_pretrained(compiled, tmp_path)  # keys without "_orig_mod.": loads into the plain class
    plain = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert not any(k.startswith("_orig_mod") for k in plain.state_dict())
    loaded = hf.from_pretrained(GPT2LMHeadModel, tmp_path, slot_options={"gates": QualityGates("permissive")})
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
