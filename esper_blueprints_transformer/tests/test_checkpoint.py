"""Activation checkpointing in the MLP seeds: same outputs and gradients, less stored state."""

from __future__ import annotations

import pytest
import torch


def _pair(build, scramble, name):
    plain = scramble(build(name, checkpoint=False))
    checkpointed = build(name, checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    return plain.train(), checkpointed.train()


@pytest.mark.parametrize("name_", ["mlp_small", "mlp"])
def test_checkpointing_gives_the_same_outputs_and_gradients(name_, build, scramble, sequence, dim):
    plain, checkpointed = _pair(build, scramble, name_)
    results = []
    for module in (plain, checkpointed):
        x = sequence(dim).requires_grad_(True)
        out = module(x)
        (out.square() * torch.linspace(0.5, 1.5, dim)).sum().backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters()}
        results.append((out.detach(), x.grad.clone(), grads))
    (out_a, gx_a, grads_a), (out_b, gx_b, grads_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)
    torch.testing.assert_close(gx_b, gx_a, rtol=1e-6, atol=1e-7)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-6, atol=1e-7)
        assert grads_a[name].abs().sum() > 0


def test_checkpointing_recomputes_in_training_only(build, sequence, dim):
    """Observable effect: with checkpointing, ``fc1`` runs again during backward."""
    module = build("mlp", checkpoint=True)
    calls: list[int] = []
    module.fc1.register_forward_hook(lambda *_: calls.append(1))

    def run() -> int:
        calls.clear()
        out = module(sequence(dim))
        if out.requires_grad:
            out.sum().backward()
        return len(calls)

    assert run() == 2  # training: forward, then recomputation in backward
    module.eval()
    assert run() == 1  # eval: plain path
    module.train()
    with torch.no_grad():
        assert run() == 1  # nothing to recompute without autograd
    module.use_checkpoint = False
    assert run() == 1


def test_checkpointed_mlp_compiles_fullgraph(build, scramble, sequence, dim):
    torch._dynamo.reset()
    module = scramble(build("mlp", checkpoint=True)).train()
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    x = sequence(dim).requires_grad_(True)
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, module(x), rtol=0, atol=0)
