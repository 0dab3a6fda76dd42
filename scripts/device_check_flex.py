"""FlexAttention seeds on a GPU: eager and compiled, fp32 and bf16, against the SDPA seed.

    python3 scripts/device_check_flex.py          # cuda if present, else a CPU dry run

On CPU (where the test suite runs) the ``flex_attention`` blueprint trains through causal
SDPA, because torch has no FlexAttention backward there; on CUDA it always runs FlexAttention.
So this script checks, on the GPU, what the suite cannot:

1. a ``flex_attention`` seed in a ``TransformerHost`` walked GERMINATED -> FOSSILIZED with a
   training step per stage, in fp32 and under bf16 autocast: finite outputs and gradients;
2. the same seed weights in the ``attention`` blueprint (same ``state_dict`` keys) give the
   same outputs and seed gradients (FlexAttention and SDPA compute one function);
3. the host compiled with inductor (FlexAttention's Triton kernel) matches eager, forward and
   backward.

Prints one line per check; exit status 1 on the first failure.
"""

from __future__ import annotations

import sys

import torch

from esper_core.gates import QualityGates
from esper_core.hosts import TransformerHost
from esper_core.model import MorphogeneticModel
from esper_core.stages import SeedStage


def build(device: torch.device, blueprint: str) -> MorphogeneticModel:
    torch.manual_seed(0)
    host = TransformerHost(vocab_size=64, n_embd=64, n_head=4, n_layer=2, block_size=64)
    model = MorphogeneticModel(host, gates=QualityGates("permissive")).to(device)
    slot = next(iter(model.slots.values()))
    slot.germinate(blueprint, ramp_epochs=2)
    with torch.no_grad():  # a non-zero projection, so the seed's output matters
        for p in slot.seed_parameters():
            p.normal_(0.0, 0.05)
    return model


def step(
    model: MorphogeneticModel, tokens: torch.Tensor, autocast: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = model(tokens)
    out.float().square().mean().backward()
    slot = next(iter(model.slots.values()))
    grads = [p.grad.clone() for p in slot.seed_parameters() if p.grad is not None]
    return out.detach().float(), grads


def walk(device: torch.device, autocast: bool) -> str:
    model = build(device, "flex_attention")
    slot = next(iter(model.slots.values()))
    tokens = torch.randint(0, 64, (4, 48), device=device)
    seen = []
    for stage in (SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED):
        if stage is SeedStage.HOLDING:
            while slot.alpha < 1.0:
                slot.step_epoch()
        if stage is SeedStage.BLENDING:
            slot.record_accuracy(40.0)
        if stage is SeedStage.FOSSILIZED:
            slot.record_counterfactual(2.0)
        slot.advance(stage)
        out, grads = step(model, tokens, autocast)
        if not torch.isfinite(out).all() or not all(torch.isfinite(g).all() for g in grads):
            raise AssertionError(f"non-finite output or gradient in {stage.name}")
        seen.append(f"{stage.name}({len(grads)} grads)")
    return "walk " + ("bf16 autocast" if autocast else "fp32") + ": " + ", ".join(seen)


def against_sdpa(device: torch.device) -> str:
    flex, sdpa = build(device, "flex_attention"), build(device, "attention")
    sdpa.load_state_dict(flex.state_dict())
    tokens = torch.randint(0, 64, (4, 48), device=device)
    for model in (flex, sdpa):
        next(iter(model.slots.values())).advance(SeedStage.TRAINING)
    out_f, grads_f = step(flex, tokens, autocast=False)
    out_s, grads_s = step(sdpa, tokens, autocast=False)
    torch.testing.assert_close(out_f, out_s, rtol=1e-4, atol=1e-5)
    for gf, gs in zip(grads_f, grads_s, strict=True):
        torch.testing.assert_close(gf, gs, rtol=1e-3, atol=1e-6)
    return f"flex == sdpa: outputs and {len(grads_f)} seed gradients agree (fp32)"


def compiled(device: torch.device) -> str:
    eager = build(device, "flex_attention")
    next(iter(eager.slots.values())).advance(SeedStage.TRAINING)
    fast = build(device, "flex_attention")
    next(iter(fast.slots.values())).advance(SeedStage.TRAINING)
    fast.load_state_dict(eager.state_dict())
    tokens = torch.randint(0, 64, (4, 48), device=device)
    out_e, grads_e = step(eager, tokens, autocast=False)
    runner = torch.compile(fast, backend="inductor" if device.type == "cuda" else "aot_eager")
    fast.zero_grad(set_to_none=True)
    out_c = runner(tokens)
    out_c.float().square().mean().backward()
    grads_c = [p.grad for p in next(iter(fast.slots.values())).seed_parameters() if p.grad is not None]
    torch.testing.assert_close(out_c.detach().float(), out_e, rtol=1e-3, atol=1e-4)
    for gc, ge in zip(grads_c, grads_e, strict=True):
        torch.testing.assert_close(gc, ge, rtol=1e-2, atol=1e-5)
    return f"compiled == eager: outputs and {len(grads_c)} seed gradients agree"


def main() -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"device {device}, torch {torch.__version__}", flush=True)
    failed = 0
    for check in (
        lambda: walk(device, False),
        lambda: walk(device, True),
        lambda: against_sdpa(device),
        lambda: compiled(device),
    ):
        try:
            print("ok  ", check(), flush=True)
        except Exception as error:
            failed += 1
            print("FAIL", type(error).__name__, error, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
