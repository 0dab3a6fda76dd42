"""Behaviour every transformer blueprint promises: shape, identity at birth, causality, learning."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from esper_blueprints_transformer import BLUEPRINTS, FlexAttentionSeed
from esper_core import get_blueprint, list_blueprints
from esper_core.registry import plugin_report

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def test_all_eight_register_through_the_entry_point():
    names = ("noop", "norm", "lora", "lora_large", "attention", "mlp_small", "mlp", "flex_attention")
    registered = {spec.name: spec for spec in list_blueprints("transformer")}
    for name in names:
        assert registered[name] == get_blueprint("transformer", name)
    ours = [info for info in plugin_report() if info.distribution == "esper-blueprints-transformer"]
    assert len(ours) == 1 and ours[0].loaded
    assert sorted(ours[0].blueprints) == sorted(f"transformer:{n}" for n in names)
    assert {spec.name for spec in BLUEPRINTS} == set(names)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_shape_dtype_device_preserved(case, build, scramble, sequence, dim, dtype, grad):
    module = scramble(build(case.name, **case.options)).to(dtype)
    x = sequence(dim, dtype=dtype)
    with torch.set_grad_enabled(grad):
        y = module(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_exact_identity_at_birth(case, build, sequence, dim, dtype, grad):
    module = build(case.name, **case.options).to(dtype)
    x = sequence(dim, dtype=dtype, seq_len=5)
    with torch.set_grad_enabled(grad):
        y = module(x)
    # Exact: max |y - x| is 0, not merely small. Any blend of host and seed is then the host.
    assert (y - x).abs().max().item() == 0.0


@pytest.mark.parametrize("dim_", [1, 3])
def test_tiny_widths(dim_, build, sequence):
    for name in ("noop", "norm", "lora", "lora_large", "mlp_small", "mlp"):
        x = sequence(dim_)
        assert torch.equal(build(name, dim_)(x), x)
    for name in ("attention", "flex_attention"):
        x = sequence(dim_)
        assert torch.equal(build(name, dim_, n_head=1)(x), x)


def test_large_width(build, sequence, scramble):
    x = sequence(4096, seq_len=2)
    for module in (build("norm", 4096), build("lora", 4096, rank=16), build("noop", 4096)):
        assert torch.equal(module(x), x)
        assert scramble(module)(x).shape == x.shape


@pytest.mark.parametrize("seq_len", [6, 131])
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_causal_under_future_perturbation(case, build, scramble, sequence, dim, seq_len, grad):
    """Changing tokens after position t leaves outputs up to t unchanged (131 > one 128-block)."""
    module = scramble(build(case.name, **case.options))
    x = sequence(dim, seq_len=seq_len)
    cut = seq_len // 2
    future = x.clone()
    future[:, cut:] = sequence(dim, seq_len=seq_len, seed=7)[:, cut:] * 3.0
    with torch.set_grad_enabled(grad):
        y, y_future = module(x), module(future)
    torch.testing.assert_close(y_future[:, :cut], y[:, :cut], rtol=0, atol=1e-6)
    # The perturbation does reach the output, so the check above is not vacuous.
    assert not torch.allclose(y_future[:, cut:], y[:, cut:])


def test_causal_jacobian(case, build, scramble, sequence, dim):
    """Output at t has exactly zero gradient with respect to every later input position."""
    module = scramble(build(case.name, **case.options))
    seq_len = 7
    for t in range(seq_len):
        x = sequence(dim, seq_len=seq_len).requires_grad_(True)
        module(x)[:, t].sum().backward()
        assert x.grad is not None
        assert torch.count_nonzero(x.grad[:, t + 1 :]) == 0
        assert torch.count_nonzero(x.grad[:, t]) > 0


def test_every_parameter_learns(case, build, sequence, dim):
    """From birth, a few optimiser steps change every parameter tensor."""
    module = build(case.name, **case.options).train()
    params = dict(module.named_parameters())
    if case.name == "noop":
        assert params == {}
        return
    before = {name: p.detach().clone() for name, p in params.items()}
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    x, target = sequence(dim, seed=2), sequence(dim, seed=3)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(module(x), target).backward()
        optimizer.step()
    frozen = [name for name, p in params.items() if torch.equal(p.detach(), before[name])]
    assert frozen == []


def test_flex_seed_trains_on_cpu(build, sequence, dim):
    """FlexAttention has no CPU backward in torch 2.13; the seed still trains there (SDPA path)."""
    module = build("flex_attention")
    assert isinstance(module, FlexAttentionSeed)
    x = sequence(dim).requires_grad_(True)
    module(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert module.proj.weight.grad is not None and module.proj.weight.grad.abs().sum() > 0


def test_registering_the_pack_does_not_import_dynamo():
    """FlexAttention (and with it torch._dynamo) loads only when a flex seed is built."""
    script = (
        "import sys\n"
        "import esper_blueprints_transformer.plugin as plugin\n"
        "specs = []\n"
        "plugin.esper_register_blueprints(specs.append)\n"
        "[spec.build(8) for spec in specs if spec.name != 'flex_attention']\n"
        "assert len(specs) == 8, specs\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "[spec.build(8) for spec in specs if spec.name == 'flex_attention']\n"
        "assert 'torch._dynamo' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
