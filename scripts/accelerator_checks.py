"""Checks that need an accelerator to mean much: dtypes, autocast and torch.compile on a GPU.

    .venv/bin/python scripts/accelerator_checks.py                      # cuda if present, else cpu
    .venv/bin/python scripts/accelerator_checks.py --device cpu --backend aot_eager   # a quick dry run

The test suite runs on CPU (CI has no GPU); this script repeats the kinds of issue 15 items
1 and 4 where they matter most, on one device, and prints one line per check:

1. **dtypes**: for fp16, bf16, fp32 and fp64, a ``MorphogeneticModel`` around ``CNNHost`` and
   ``TransformerHost`` and an injected user model, one GATE seed per model walked from
   GERMINATED to FOSSILIZED with a training step in each stage: seeds, blend gates, outputs
   and gradients on the host's device and in its dtype, all finite.
2. **autocast**: an injected ``nn.TransformerEncoder`` with empty slots under the device's
   autocast returns exactly the plain model's output and dtype (train/eval, grad/no_grad).
3. **compile walk**: ``CNNHost`` compiled once with ``--backend`` (default ``inductor``) and
   walked through every stage (BLENDING ramp, HOLDING, FOSSILIZED, a scheduled prune's
   ramp-down): output and gradients match eager at each step, one compilation per new
   forward configuration, none during a ramp.
4. **CUDA graphs** (cuda only): ``mode="reduce-overhead"``, an inference BLENDING ramp: the
   replayed graph reads the alpha buffer (outputs follow eager at each alpha) with no
   recompilation; then HOLDING.

Exit status 1 when a check fails. TF32 is turned off so that compiled and eager agree closely.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from esper_core.alpha import AlphaMode
from esper_core.blend import BlendAlgorithm
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost, TransformerHost
from esper_core.inject import InjectionTarget, inject_slots
from esper_core.model import MorphogeneticModel
from esper_core.slot import SeedSlot
from esper_core.stages import RUNS_SEED, SeedStage

_S = SeedStage
WALK = (_S.TRAINING, _S.BLENDING, _S.HOLDING, _S.FOSSILIZED)


def _cnn(device: str, dtype: torch.dtype = torch.float32) -> tuple[MorphogeneticModel, torch.Tensor]:
    torch.manual_seed(0)
    model = MorphogeneticModel(
        CNNHost(num_classes=3, n_blocks=2, base_channels=8), gates=QualityGates("permissive")
    )
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return model.to(device=device, dtype=dtype), x.to(device=device, dtype=dtype)


def _step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.float().square().mean().backward()
    return out


def _walk(slot: SeedSlot, each: Callable[[str], None], last: SeedStage = _S.FOSSILIZED) -> None:
    """Advance ``slot`` from GERMINATED to ``last``, calling ``each`` after every change."""
    each("GERMINATED")
    for stage in WALK[: WALK.index(last) + 1]:
        if stage is _S.HOLDING:
            while not (slot.schedule.at_rest and slot.alpha == 1.0):
                slot.step_epoch()
                each(f"ramp {slot.alpha:.2f}")
        if stage is _S.FOSSILIZED:
            slot.record_counterfactual(1.0)
        slot.record_accuracy(50.0)
        assert slot.advance(stage).passed, stage
        each(stage.name)


def check_dtypes(device: str) -> str:
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        torch.manual_seed(0)
        host = TransformerHost(vocab_size=11, n_embd=16, n_head=2, n_layer=2, block_size=8)
        tokens = torch.randint(0, 11, (4, 8), device=device)
        cnn, x = _cnn(device, dtype)
        user = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 3)).to(device=device, dtype=dtype)
        features = torch.randn(4, 5, 6, device=device, dtype=dtype)
        slots = inject_slots(
            user,
            [InjectionTarget("0", "transformer", slot_id="first")],
            example_input=features,
            gates=QualityGates("permissive"),
        )
        cases = [
            (cnn, cnn.slot("r0c0"), "conv_light", x),
            (  # slots created for a host already on the device and in the dtype
                MorphogeneticModel(host.to(device=device, dtype=dtype), gates=QualityGates("permissive")),
                None,
                "mlp_small",
                tokens,
            ),
            (user, slots["first"], "lora", features),
        ]
        for model, slot, blueprint, inputs in cases:
            slot = slot if slot is not None else model.slot(model.slot_ids[0])
            slot.germinate(blueprint, algorithm=BlendAlgorithm.GATE, ramp_epochs=2)

            def each(step: str, model=model, slot=slot, inputs=inputs, dtype=dtype) -> None:  # type: ignore[no-untyped-def]
                out = _step(model, inputs)
                assert out.dtype == dtype and out.device.type == device, (step, out.dtype, out.device)
                assert torch.isfinite(out).all(), step
                for p in slot.seed_parameters():
                    assert p.dtype == dtype and p.device.type == device, (step, p.dtype, p.device)
                    assert p.grad is None or torch.isfinite(p.grad).all(), step

            _walk(slot, each)
    return "fp16, bf16, fp32, fp64 x 3 models x every stage"


def check_autocast(device: str) -> str:
    amp = torch.bfloat16 if device == "cpu" else torch.float16
    x = torch.randn(2, 5, 16, device=device)
    for training in (False, True):
        for grad in (False, True):
            torch.manual_seed(0)
            layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            plain = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).to(device).train(training)
            injected = copy.deepcopy(plain)
            inject_slots(
                injected, {"layers.0": "transformer", "layers.1.linear2": "transformer"}, example_input=x
            )
            with torch.autocast(device, dtype=amp), torch.set_grad_enabled(grad):
                want, got = plain(x), injected(x)
            assert got.dtype == want.dtype and torch.equal(got, want), (training, grad, got.dtype, want.dtype)
    return f"autocast {amp} exact, 4 mode combinations"


class _Counting:
    def __init__(self, inner: str) -> None:
        self.inner = torch._dynamo.lookup_backend(inner)
        self.compilations = 0

    def __call__(self, gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
        self.compilations += 1
        return self.inner(gm, inputs)


def _configuration(model: MorphogeneticModel) -> tuple[Any, ...]:
    rows = []
    for slot in model.slots.values():
        if slot.stage not in RUNS_SEED:
            rows.append((slot.seed is not None,))
        elif slot.stage is _S.TRAINING:
            rows.append((True, "straight-through"))
        else:
            rows.append((True, slot.isolated, slot.schedule.mode is AlphaMode.DOWN, slot.algorithm))
    return tuple(rows)


def check_compile_walk(device: str, backend: str) -> str:
    model, x = _cnn(device)
    counting = _Counting(backend)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counting, fullgraph=True)
    seen: set[tuple[Any, ...]] = set()
    log = []

    def each(step: str) -> None:
        config = _configuration(model)
        expected = int(config not in seen)
        seen.add(config)
        before = counting.compilations
        got = _step_compiled(compiled, model, x)
        got_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        want = _step(model, x).detach()
        want_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        compilations = counting.compilations - before
        log.append(f"{step}: +{compilations}")
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=step)
        assert got_grads.keys() == want_grads.keys(), step
        for name, grad in want_grads.items():
            torch.testing.assert_close(got_grads[name], grad, rtol=1e-3, atol=1e-4, msg=f"{step} {name}")
        assert compilations == expected, log

    with torch._dynamo.config.patch(recompile_limit=64):
        each("dormant")
        first, second = (model.slot(s) for s in model.slot_ids[:2])
        first.germinate("conv_light", ramp_epochs=2)
        _walk(first, each)
        second.germinate("conv_light", algorithm=BlendAlgorithm.GATE, ramp_epochs=2)
        _walk(second, lambda step: each(f"second {step}"), last=_S.HOLDING)
        second.schedule_prune(2, reason="check", initiator="accelerator_checks")
        each("second prune scheduled")
        while second.seed is not None:
            second.step_epoch()
            each(f"second ramp down {second.alpha:.2f}")
    return f"{backend}: {len(log)} steps, {counting.compilations} compilations: " + ", ".join(log)


def _step_compiled(
    compiled: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, x: torch.Tensor
) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    out = compiled(x)
    out.float().square().mean().backward()
    return out.detach().clone()


def check_cuda_graphs(device: str) -> str:
    if device != "cuda":
        return "skipped (cuda only)"
    model, x = _cnn(device)
    slot = model.slot(model.slot_ids[0])
    slot.germinate("conv_light", ramp_epochs=4)
    assert slot.advance(_S.TRAINING).passed
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.add_(torch.randn_like(p) * 0.2)
    slot.record_accuracy(40.0)
    assert slot.advance(_S.BLENDING).passed
    model.eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    counters = torch._dynamo.utils.counters
    outputs = []
    with torch.no_grad():
        for _ in range(3):  # CUDA graphs are recorded after warm-up runs
            compiled(x)
        graphs = counters["stats"]["unique_graphs"]
        while True:
            got = compiled(x).clone()
            torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)
            outputs.append(got)
            if slot.schedule.at_rest and slot.alpha == 1.0:
                break
            slot.step_epoch()
        assert counters["stats"]["unique_graphs"] == graphs, "the ramp recompiled"
        assert not torch.equal(outputs[0], outputs[-1])
        slot.record_accuracy(41.0)
        assert slot.advance(_S.HOLDING).passed
        for _ in range(3):
            torch.testing.assert_close(compiled(x).clone(), model(x), rtol=1e-4, atol=1e-4)
    return f"{len(outputs)} alphas replayed on one graph, HOLDING follows"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend of the compile walk")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, device {args.device}", flush=True)
    checks: list[tuple[str, Callable[[], str]]] = [
        ("dtypes", lambda: check_dtypes(args.device)),
        ("autocast", lambda: check_autocast(args.device)),
        ("compile walk", lambda: check_compile_walk(args.device, args.backend)),
        ("cuda graphs", lambda: check_cuda_graphs(args.device)),
    ]
    failed = 0
    for name, check in checks:
        start = time.monotonic()
        try:
            detail = check()
            print(f"PASS {name} ({time.monotonic() - start:.1f} s): {detail}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - start:.1f} s)\n{traceback.format_exc()}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
