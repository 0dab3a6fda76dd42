"""Blend operators and the causal per-sample gate."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from esper_core.blend import INITIAL_GATE, BlendAlgorithm, BlendGate, blend
from esper_core.errors import LifecycleError
from esper_core.registry import get_topology

ALGOS = list(BlendAlgorithm)


def _inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    host = torch.randn(3, 4, 5, 6, generator=g).to(dtype)
    seed = torch.randn(3, 4, 5, 6, generator=g).to(dtype)
    gate = torch.rand(3, 1, 1, 1, generator=g).to(dtype)
    return host, seed, gate


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("a", [0.0, 0.3, 1.0])
def test_identity_when_seed_equals_host(algorithm: BlendAlgorithm, a: float) -> None:
    host, _, gate = _inputs()
    out = blend(algorithm, host, host.clone(), torch.tensor(a), gate)
    assert torch.equal(out, host)


@pytest.mark.parametrize("algorithm", ALGOS)
def test_identity_at_alpha_zero(algorithm: BlendAlgorithm) -> None:
    host, seed, gate = _inputs()
    assert torch.equal(blend(algorithm, host, seed, torch.tensor(0.0), gate), host)


def test_formulas() -> None:
    host, seed, gate = _inputs(torch.float64)
    a = torch.full((3, 1, 1, 1), 0.4, dtype=torch.float64)
    torch.testing.assert_close(blend(BlendAlgorithm.ADD, host, seed, a), host + a * (seed - host))
    torch.testing.assert_close(
        blend(BlendAlgorithm.MULTIPLY, host, seed, a), host * (1 + a * torch.tanh(seed - host))
    )
    torch.testing.assert_close(
        blend(BlendAlgorithm.GATE, host, seed, a, gate), host + a * gate * (seed - host)
    )


def test_multiply_reference_blocks_host_gradient_through_the_modulation() -> None:
    host, seed, _gate = _inputs(torch.float64)
    host.requires_grad_(True)
    ref = host.detach()
    a = torch.tensor(0.5, dtype=torch.float64)
    out = blend(BlendAlgorithm.MULTIPLY, host, seed, a, reference=ref)
    out.sum().backward()
    torch.testing.assert_close(host.grad, 1 + a * torch.tanh(seed - ref))


def test_alpha_is_clamped_and_gate_required() -> None:
    host, seed, _gate = _inputs()
    assert torch.equal(blend(BlendAlgorithm.ADD, host, seed, torch.tensor(3.0)), seed)
    assert torch.equal(blend(BlendAlgorithm.ADD, host, seed, torch.tensor(-1.0)), host)
    with pytest.raises(LifecycleError, match="gate"):
        blend(BlendAlgorithm.GATE, host, seed, torch.tensor(0.5))


class _CountCasts(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.casts = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in (torch.Tensor.to, torch.Tensor.type):
            self.casts += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("algorithm", ALGOS)
def test_casts_only_when_dtypes_differ(algorithm: BlendAlgorithm) -> None:
    host, seed, gate = _inputs()
    with _CountCasts() as mode:
        blend(algorithm, host, seed, torch.tensor(0.5), gate)
    assert mode.casts == 0
    with _CountCasts() as mode:
        out = blend(algorithm, host.to(torch.bfloat16), seed, torch.tensor(0.5), gate)
    assert mode.casts >= 1
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("algorithm", ALGOS)
def test_memory_format_of_host_is_kept(algorithm: BlendAlgorithm) -> None:
    host, seed, gate = _inputs()
    host = host.to(memory_format=torch.channels_last)
    out = blend(algorithm, host, seed, torch.tensor(0.5), gate)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("algorithm", ALGOS)
def test_compiles_fullgraph(algorithm: BlendAlgorithm) -> None:
    host, seed, gate = _inputs()
    compiled = torch.compile(blend, fullgraph=True, backend="eager")
    torch.testing.assert_close(
        compiled(algorithm, host, seed, torch.tensor(0.25), gate),
        blend(algorithm, host, seed, torch.tensor(0.25), gate),
    )


def test_gate_initial_value_is_exact_for_both_topologies() -> None:
    for name, dim in (("cnn", 8), ("transformer", 12)):
        topo = get_topology(name)
        module = BlendGate.for_topology(topo, dim)
        x = topo.example_input(dim, batch=3)
        g = module(x)
        assert g.shape == ((3, 1, 1, 1) if name == "cnn" else (3, x.shape[1], 1))
        assert torch.all(g == INITIAL_GATE)


def test_gate_is_causal_along_the_sequence() -> None:
    torch.manual_seed(0)
    topo = get_topology("transformer")
    module = BlendGate.for_topology(topo, 8)
    torch.nn.init.normal_(module.out.weight)  # a trained gate, not the constant birth value
    x = topo.example_input(8, batch=2, extent=(7,))
    changed = x.clone()
    changed[:, 4:] += 5.0 * torch.randn_like(changed[:, 4:])
    before, after = module(x), module(changed)
    assert torch.equal(before[:, :4], after[:, :4])
    assert not torch.equal(before[:, 4:], after[:, 4:])


def test_gate_is_per_sample_for_images() -> None:
    module = BlendGate(6, ndim=4, feature_axis=1)
    torch.nn.init.normal_(module.out.weight)
    x = torch.randn(2, 6, 3, 3)
    y = x.clone()
    y[1] += 3.0
    assert torch.equal(module(x)[0], module(y)[0])
    assert not torch.equal(module(x)[1], module(y)[1])


def test_gate_learns_from_the_first_step() -> None:
    module = BlendGate(6, ndim=4, feature_axis=1)
    module(torch.randn(2, 6, 3, 3)).sum().backward()
    assert module.out.weight.grad is not None and module.out.weight.grad.abs().sum() > 0


def test_gate_validates_input() -> None:
    with pytest.raises(LifecycleError):
        BlendGate(0, ndim=4, feature_axis=1)
    with pytest.raises(LifecycleError, match="4-d"):
        BlendGate(6, ndim=4, feature_axis=1)(torch.randn(2, 6, 3))
