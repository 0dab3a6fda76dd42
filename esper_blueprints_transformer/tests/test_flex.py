"""FlexAttention seed: kernel choice, SDPA equivalence, the block-mask cache, compilation."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from esper_blueprints_transformer import (
    BlockMaskCache,
    causal_mask_mod,
    uses_flex_attention,
)
from esper_core.errors import OptionError

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def _no_grad(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(x)


def test_kernel_predicate():
    plain = torch.zeros(1, 1, 2, 2)
    assert uses_flex_attention(plain) is True
    assert uses_flex_attention(plain.clone().requires_grad_(True)) is False
    assert uses_flex_attention(torch.zeros(1, 1, 2, 2, device="meta")) is False
    with FlopCounterMode(display=False):  # eager CPU Flex cannot run under a dispatch mode
        assert uses_flex_attention(plain) is False


def test_training_forward_uses_sdpa_and_no_grad_forward_uses_flex(build, scramble, sequence, dim):
    module = scramble(build("flex_attention"))
    module(sequence(dim))  # grad enabled and weights require grad: SDPA, no mask needed
    assert len(module.block_masks) == 0
    _no_grad(module, sequence(dim))
    assert module.block_masks.lengths() == (6,)
    for param in module.parameters():
        param.requires_grad_(False)
    module(sequence(dim, seq_len=4))  # frozen weights: nothing needs a backward, Flex runs
    assert module.block_masks.lengths() == (6, 4)


@pytest.mark.parametrize(("n_head", "seq_len"), [(1, 1), (2, 5), (4, 128), (8, 200)])
def test_flex_and_sdpa_paths_agree_in_fp32(build, scramble, sequence, dim, n_head, seq_len):
    module = scramble(build("flex_attention", n_head=n_head), scale=0.5)
    x = sequence(dim, seq_len=seq_len, batch=3)
    flex_out = _no_grad(module, x)
    assert module.block_masks.lengths() == (seq_len,)
    sdpa_out = module(x)
    torch.testing.assert_close(flex_out, sdpa_out.detach(), rtol=0, atol=1e-5)
    # The output really depends on attention (proj is not zero), so agreement means something.
    assert (flex_out - x).abs().max() > 1e-2


def test_same_parameters_and_state_dict_as_attention(build, scramble, sequence, dim):
    flex, attention = scramble(build("flex_attention")), build("attention")
    flex_sd, attention_sd = flex.state_dict(), attention.state_dict()
    assert list(flex_sd) == list(attention_sd) == ["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]
    assert {k: v.shape for k, v in flex_sd.items()} == {k: v.shape for k, v in attention_sd.items()}
    attention.load_state_dict(flex_sd)
    x = sequence(dim)
    assert torch.equal(attention(x), flex(x))  # the SDPA path is the attention blueprint exactly
    torch.testing.assert_close(_no_grad(flex, x), _no_grad(attention, x), rtol=0, atol=1e-5)


def test_cache_is_a_bounded_lru(build, sequence, dim):
    module = build("flex_attention")
    capacity = module.block_masks.capacity
    assert capacity == 8
    for seq_len in range(1, capacity + 2):
        _no_grad(module, sequence(dim, seq_len=seq_len))
    assert module.block_masks.lengths() == tuple(range(2, capacity + 2))  # 1 was evicted
    _no_grad(module, sequence(dim, seq_len=2))  # a hit refreshes 2
    _no_grad(module, sequence(dim, seq_len=40))  # the next miss evicts 3, the stalest
    assert module.block_masks.lengths() == (*range(4, capacity + 2), 2, 40)
    assert len(module.block_masks) == capacity


def test_cache_hit_returns_the_same_mask_and_every_mask_shares_one_mask_function():
    cache = BlockMaskCache(capacity=3)
    cpu = torch.device("cpu")
    first = cache.get(5, cpu, torch.float32)
    assert cache.get(5, cpu, torch.float32) is first
    masks = [cache.get(n, cpu, torch.float32) for n in (6, 7, 5)]
    # B3-TFM-02: one module-level function, never a per-miss closure.
    assert all(mask.mask_mod is causal_mask_mod for mask in [first, *masks])


def test_cache_capacity_is_validated():
    for bad in (0, -1, 2.0, True):
        with pytest.raises(OptionError, match="capacity"):
            BlockMaskCache(capacity=bad)


def test_cache_cleared_on_dtype_change(build, sequence, dim):
    module = build("flex_attention")
    _no_grad(module, sequence(dim, seq_len=3))
    module.double()
    assert len(module.block_masks) == 0
    _no_grad(module, sequence(dim, seq_len=3, dtype=torch.float64))
    assert module.block_masks.context == (torch.device("cpu"), torch.float64)
    module.to(torch.bfloat16)
    assert len(module.block_masks) == 0


def test_cache_cleared_when_a_parent_module_moves(build, sequence, dim):
    module = build("flex_attention")
    parent = nn.Sequential(nn.Identity(), module)
    _no_grad(parent, sequence(dim, seq_len=3))
    assert len(module.block_masks) == 1
    parent.to(torch.float64)
    assert len(module.block_masks) == 0


def test_cache_cleared_on_device_change(build, sequence, dim):
    module = build("flex_attention")
    _no_grad(module, sequence(dim, seq_len=3))
    module.to("meta")
    assert len(module.block_masks) == 0
    cache = BlockMaskCache()
    cache.get(3, torch.device("cpu"), torch.float32)
    cache.get(4, torch.device("cpu"), torch.float32)
    cache.get(4, torch.device("meta"), torch.float32)
    assert cache.lengths() == (4,) and cache.context == (torch.device("meta"), torch.float32)


def test_cache_cleared_when_autocast_changes_the_compute_dtype(build, scramble, sequence, dim):
    """Autocast leaves the weights in fp32 (no ``_apply``) but changes the dtype attention sees."""
    module = scramble(build("flex_attention"))
    _no_grad(module, sequence(dim, seq_len=3))
    _no_grad(module, sequence(dim, seq_len=4))
    assert module.block_masks.lengths() == (3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _no_grad(module, sequence(dim, seq_len=5))
    assert out.dtype == torch.float32  # the residual keeps the input's dtype
    assert module.block_masks.lengths() == (5,)
    assert module.block_masks.context == (torch.device("cpu"), torch.bfloat16)
    _no_grad(module, sequence(dim, seq_len=5))
    assert module.block_masks.context == (torch.device("cpu"), torch.float32)
    assert module.block_masks.lengths() == (5,)


def test_flex_path_returns_a_plain_tensor(build, scramble, sequence, dim):
    """B3-TFM-03: no tuple form is requested, so ``attend`` yields one tensor on both paths."""
    module = scramble(build("flex_attention"))
    x = sequence(dim)
    q, k, v = (torch.randn(2, 4, 6, 2) for _ in range(3))
    with torch.no_grad():
        flex_heads = module.attend(q, k, v)
    sdpa_heads = module.attend(q.requires_grad_(True), k, v)
    assert type(flex_heads) is torch.Tensor and type(sdpa_heads) is torch.Tensor
    assert flex_heads.shape == sdpa_heads.shape == q.shape
    assert _no_grad(module, x).shape == x.shape


def test_compile_fullgraph_on_the_cpu_training_path(build, scramble, sequence, dim):
    torch._dynamo.reset()
    module = scramble(build("flex_attention"))
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    x = sequence(dim).requires_grad_(True)
    out = compiled(x)
    out.sum().backward()
    assert torch.equal(out, module(x))
    assert len(module.block_masks) == 0  # the compiled SDPA path never touches the cache


def test_compile_fullgraph_on_the_flex_path_builds_the_mask_in_graph(build, scramble, sequence, dim):
    """Under ``no_grad`` on CPU the compiled seed runs FlexAttention with an in-graph mask."""
    torch._dynamo.reset()
    module = scramble(build("flex_attention"))
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    x = sequence(dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _no_grad(compiled, x)
    torch.testing.assert_close(out, module(x).detach(), rtol=0, atol=1e-5)
    assert len(module.block_masks) == 0
