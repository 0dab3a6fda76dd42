"""Hosts: exact parameter counts, routing between injection points, bad input."""

from __future__ import annotations

import pytest
import torch

from esper_core.hosts import (
    CNNHost,
    HostError,
    HostProtocol,
    TransformerHost,
    cnn_host_param_count,
    transformer_host_param_count,
    unique_param_count,
)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"num_classes": 7, "in_channels": 1, "n_blocks": 2, "base_channels": 5},
        {"n_blocks": 4, "base_channels": 3, "kernel_size": 5, "pool_layers": 2},
    ],
)
def test_cnn_param_count_is_exact(config: dict) -> None:
    host = CNNHost(**config)
    counted = {k: v for k, v in config.items() if k != "pool_layers"}
    assert cnn_host_param_count(**counted) == _numel(host) == host.host_param_count()


def test_cnn_default_count_matches_the_reference_host() -> None:
    # The earlier implementation's default host (3 -> 32, 64, 128; 10 classes) had 94,762 parameters.
    assert CNNHost().host_param_count() == 94_762


@pytest.mark.parametrize(
    "config",
    [
        {"vocab_size": 50, "n_embd": 16, "n_head": 2, "n_layer": 2, "block_size": 8},
        {"vocab_size": 11, "n_embd": 24, "n_head": 3, "n_layer": 4, "block_size": 5, "num_segments": 2},
    ],
)
def test_transformer_param_count_is_exact_with_tied_head(config: dict) -> None:
    host = TransformerHost(**config)
    assert host.head.weight is host.tok_emb.weight
    counted = {k: v for k, v in config.items() if k in ("vocab_size", "n_embd", "n_layer", "block_size")}
    assert transformer_host_param_count(**counted) == _numel(host) == unique_param_count(host)


def test_cnn_has_slots_before_and_after_each_pool() -> None:
    host = CNNHost(in_channels=1, n_blocks=3, base_channels=4, pool_layers=2)
    points = host.injection_points()
    assert [p.slot_id for p in points] == ["r0c0", "r1c0", "r0c1", "r1c1", "r0c2"]
    assert [p.surface for p in points] == ["pre_pool", "post_pool", "pre_pool", "post_pool", "pre_pool"]
    assert [p.dim for p in points] == [4, 4, 8, 8, 16]
    assert [p.order for p in points] == list(range(5))
    host.eval()
    h = torch.randn(2, 1, 8, 8)
    shapes, prev = [], None
    for p in points:
        h = host.forward_segment(h, prev, p.slot_id)
        assert h.is_contiguous(memory_format=torch.channels_last)
        shapes.append(tuple(h.shape))
        prev = p.slot_id
    assert shapes == [(2, 4, 8, 8), (2, 4, 4, 4), (2, 8, 4, 4), (2, 8, 2, 2), (2, 16, 2, 2)]


@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_routing_through_every_point_equals_forward(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "cnn":
        host, x = CNNHost(in_channels=1, base_channels=4), torch.randn(3, 1, 8, 8)
    else:
        host, x = (
            TransformerHost(30, n_embd=16, n_head=2, n_layer=4, block_size=8),
            torch.randint(0, 30, (3, 6)),
        )
    assert isinstance(host, HostProtocol)
    host.eval()
    expected = host(x)
    for stop in host.execution_order():
        mid = host.forward_segment(x, None, stop)
        assert torch.equal(host.forward_segment(mid, stop, None), expected)
    h, prev = x, None
    for stop in host.execution_order():
        h, prev = host.forward_segment(h, prev, stop), stop
    assert torch.equal(host.forward_segment(h, prev, None), expected)
    assert torch.equal(host.forward_segment(x, None, None), expected)


def test_transformer_is_causal() -> None:
    torch.manual_seed(0)
    host = TransformerHost(20, n_embd=16, n_head=4, n_layer=2, block_size=10).eval()
    x = torch.randint(0, 20, (2, 10))
    y = x.clone()
    y[:, 6:] = (y[:, 6:] + 1) % 20
    assert torch.equal(host(x)[:, :6], host(y)[:, :6])
    assert not torch.equal(host(x)[:, 6:], host(y)[:, 6:])


def test_unknown_slot_and_backward_route_are_clear_errors() -> None:
    host = CNNHost(in_channels=1, base_channels=4)
    with pytest.raises(HostError, match=r"'r9c9'.*r0c0"):
        host.forward_segment(torch.randn(1, 1, 8, 8), None, "r9c9")
    with pytest.raises(HostError, match="backwards from 'r0c1' to 'r1c0'"):
        host.forward_segment(torch.randn(1, 4, 4, 4), "r0c1", "r1c0")
    with pytest.raises(HostError, match="backwards"):
        host.forward_segment(torch.randn(1, 4, 4, 4), "r0c1", "r0c1")


def test_transformer_rejects_too_long_sequences() -> None:
    host = TransformerHost(5, n_embd=8, n_head=2, n_layer=1, block_size=4)
    with pytest.raises(HostError, match="sequence length 5 exceeds block_size 4"):
        host(torch.zeros(1, 5, dtype=torch.long))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: CNNHost(n_blocks=0), "n_blocks must be an int >= 1, got 0"),
        (lambda: CNNHost(pool_layers=4), r"pool_layers must be in \[0, n_blocks=3\], got 4"),
        (lambda: CNNHost(kernel_size=2), "kernel_size must be odd"),
        (lambda: TransformerHost(n_embd=10, n_head=3), r"n_embd \(10\) must be divisible by n_head \(3\)"),
        (
            lambda: TransformerHost(n_layer=3, num_segments=2),
            r"n_layer \(3\) must be divisible by num_segments",
        ),
    ],
)
def test_bad_host_configuration(factory: object, message: str) -> None:
    with pytest.raises(HostError, match=message):
        factory()
