"""Shipping a grown model on an accelerator: fold, merge, seed-only files, cached decoding, export.

Runs on CUDA when torch sees a GPU (else on the CPU, as a dry run) with a GPT-2 built from a
small config (``transformers`` is needed, nothing is downloaded). On a machine without the
repository installed, install it first without touching its torch::

    python3 -m pip install --no-deps --no-build-isolation -e . -e ./esper_blueprints_cnn \
        -e ./esper_blueprints_transformer
    python3 scripts/device_check_shipping.py

Prints one line per check and exits non-zero on the first failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from esper_core import InjectionTarget, fold, inject_slots, load_seeds, save_seeds
from esper_core.errors import HostError
from esper_core.gates import QualityGates


def fossilize(slot) -> None:  # type: ignore[no-untyped-def]
    slot.advance()
    slot.record_accuracy(40.0)
    slot.advance()
    while slot.alpha < 1.0:
        slot.step_epoch()
    slot.advance()
    slot.record_counterfactual(2.0)
    slot.advance()
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.normal_(0.0, 0.05)


def gpt2(device: torch.device) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        vocab_size=128,
        n_positions=128,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).to(device).eval()


def main() -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'dry run'})")
    gates = QualityGates("permissive")
    model = gpt2(device)
    targets = [
        InjectionTarget("transformer.h.0.mlp.c_proj", "transformer", slot_id="proj"),
        InjectionTarget("transformer.h.1", "transformer", slot_id="block"),
    ]
    slots = inject_slots(
        model, targets, example_input=torch.randint(0, 128, (1, 8), device=device), gates=gates
    )
    slots["proj"].germinate("lora", ramp_epochs=2)
    slots["block"].germinate("flex_attention", ramp_epochs=2)
    for slot in slots.values():
        fossilize(slot)
    ids = torch.randint(1, 128, (4, 32), device=device)
    with torch.no_grad():
        grown = model(ids).logits
        assert torch.equal(fold(model)(ids).logits, grown)
        print("fold: equal logits")
        torch.testing.assert_close(fold(model, merge="auto")(ids).logits, grown, rtol=1e-4, atol=1e-4)
        print("fold(merge='auto'): lora merged into the Conv1D, logits within 1e-4")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seeds.pt")
        save_seeds(model, path)
        on_cpu = load_seeds(gpt2(torch.device("cpu")), path, gates=gates)
        with torch.no_grad():
            torch.testing.assert_close(on_cpu(ids.cpu()).logits, grown.cpu(), rtol=1e-4, atol=1e-4)
        print(f"seed-only file from {device} loads on the CPU ({os.path.getsize(path)} bytes)")

        prompt = ids[:, :6]
        try:
            model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4)
            raise AssertionError("cached decoding with a flex_attention seed was not refused")
        except HostError:
            print("generate(use_cache=True) with a flex_attention seed: refused")
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, use_cache=False)
        print("generate(use_cache=False): runs")

        class Logits(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
                return self.inner(input_ids=input_ids, use_cache=False).logits

        folded = Logits(fold(model, merge="auto")).eval()
        with torch.no_grad():
            expected = folded(ids)
        torch.export.save(torch.export.export(folded, (ids,)), os.path.join(tmp, "model.pt2"))
        torch.save((ids, expected), os.path.join(tmp, "check.pt"))
        # -S: no site processing, so the editable install's .pth files (how this interpreter sees
        # Esper) are never read; torch comes from site-packages, put on sys.path by hand.
        check = (
            "import sys, importlib.util\n"
            f"sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
            "assert importlib.util.find_spec('esper_core') is None\n"
            "import torch\n"
            "ids, expected = torch.load('check.pt', weights_only=True)\n"
            "got = torch.export.load('model.pt2').module()(ids)\n"
            "torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)\n"
            "print('exported program on', got.device, 'equal without Esper')\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", check],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        print(done.stdout.strip() or done.stderr[-2000:])
        if done.returncode != 0:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
