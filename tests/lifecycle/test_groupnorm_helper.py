"""The GroupNorm channels_last workaround as a public helper (``esper_core.groupnorm``).

The kind: torch 2.13's GroupNorm backward segfaults for every channels_last-like input that
does not require grad (4-d and 5-d, (B, C, 1, 1) maps, slices, one channel; fp32, fp64,
bf16). :class:`GroupNorm` and :func:`guard_groupnorms` must survive every such case with
the values and gradients of the path that works (an input that requires grad), and leave
every other input alone. Crashing cases run in a child process.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn

from esper_core.groupnorm import GroupNorm, groupnorm_input

REPO = Path(__file__).resolve().parents[2]

COMMON = """
import copy, pickle
import torch
from torch import nn
from esper_core.groupnorm import GroupNorm, guard_groupnorms

LAYOUTS = {
    "4d": (lambda: torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last), 4),
    "5d": (lambda: torch.randn(2, 16, 3, 4, 5).to(memory_format=torch.channels_last_3d), 4),
    "1x1": (lambda: torch.randn(2, 16, 1, 1).to(memory_format=torch.channels_last), 4),
    "slice": (lambda: torch.randn(2, 16, 6, 7).to(memory_format=torch.channels_last)[:, :, 1:], 4),
    "one_channel": (lambda: torch.randn(2, 1, 5, 7).to(memory_format=torch.channels_last), 1),
}

def plain_copy(norm, dtype):
    plain = nn.GroupNorm(norm.num_groups, norm.num_channels, eps=norm.eps).to(dtype)
    plain.load_state_dict(norm.state_dict())
    return plain

def check(norm, x, label):
    print(label, flush=True)
    out = norm(x)
    out.float().square().sum().backward()
    with torch.no_grad():  # forward is torch's own, values and strides
        same = plain_copy(norm, x.dtype)(x)
    assert torch.equal(out.detach(), same) and out.stride() == same.stride(), label
    # gradients are those of the path torch gets right: the same input requiring grad
    plain = plain_copy(norm, x.dtype)
    plain(x.detach().clone().requires_grad_(True)).float().square().sum().backward()
    for p, q in zip(norm.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=label)
"""

HELPER_CHILD = COMMON + textwrap.dedent(
    """
    for name, (make, groups) in LAYOUTS.items():
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            torch.manual_seed(0)
            norm = GroupNorm(groups, make().shape[1]).to(dtype)
            with torch.no_grad():
                norm.weight.normal_()
                norm.bias.normal_()
            check(norm, make().to(dtype), f"{name}/{dtype}")
    print("ok")
    """
)

PROTECT_CHILD = COMMON + textwrap.dedent(
    """
    class Seed(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.GroupNorm(4, 16)
            self.inner = nn.Sequential(nn.Conv2d(16, 16, 1), nn.GroupNorm(2, 16))
        def forward(self, x):
            return self.norm(x) + self.inner(x)

    def guards(module):
        return [len(m._forward_pre_hooks) for m in module.modules() if isinstance(m, nn.GroupNorm)]

    seed = Seed()
    assert guard_groupnorms(seed) is seed and guards(seed) == [1, 1]
    assert guards(guard_groupnorms(seed)) == [1, 1]  # idempotent
    x = torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last)
    for label, module in (("protected", seed), ("deepcopy", copy.deepcopy(seed)),
                          ("pickle", pickle.loads(pickle.dumps(seed)))):
        print(label, flush=True)
        module(x).square().sum().backward()
        assert module.norm.weight.grad is not None
    print("frozen_norm", flush=True)
    frozen = guard_groupnorms(nn.GroupNorm(4, 16).requires_grad_(False))
    assert not frozen(x).requires_grad  # a frozen norm is left alone: nothing to differentiate
    print("compile", flush=True)
    norm = GroupNorm(4, 16)
    compiled = torch.compile(norm, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    out.square().sum().backward()
    grad = norm.weight.grad.clone()
    norm.weight.grad = None
    norm(x).square().sum().backward()
    torch.testing.assert_close(norm.weight.grad, grad)
    print("ok")
    """
)


def _child(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ESPER_LOAD_PLUGINS": ""}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_groupnorm_helper_survives_every_crashing_layout_with_the_right_gradients() -> None:
    result = _child(HELPER_CHILD)
    assert result.returncode == 0, (
        f"died with {result.returncode} after {result.stdout.split()[-1:]}: {result.stderr[-2000:]}"
    )
    assert result.stdout.split()[-1] == "ok" and len(result.stdout.split()) == 5 * 3 + 1


def test_guard_groupnorms_copies_and_compile_survive() -> None:
    result = _child(PROTECT_CHILD)
    assert result.returncode == 0, (
        f"died with {result.returncode} after {result.stdout.split()[-1:]}: {result.stderr[-2000:]}"
    )
    assert result.stdout.split() == ["protected", "deepcopy", "pickle", "frozen_norm", "compile", "ok"]


def test_groupnorm_input_changes_only_the_crashing_case() -> None:
    weight = nn.Parameter(torch.ones(8))
    frozen = torch.ones(8)
    cl = torch.randn(2, 8, 3, 3).to(memory_format=torch.channels_last)
    assert groupnorm_input(torch.randn(2, 8, 3, 3), weight) is not None
    contiguous = torch.randn(2, 8, 3, 3)
    assert groupnorm_input(contiguous, weight) is contiguous
    assert groupnorm_input(cl, frozen, None) is cl  # nothing to differentiate: no backward runs
    assert groupnorm_input(cl) is cl
    wants_grad = cl.clone().requires_grad_(True)
    assert groupnorm_input(wants_grad, weight) is wants_grad
    with torch.no_grad():
        assert groupnorm_input(cl, weight) is cl
    fixed = groupnorm_input(cl, None, weight)
    assert fixed is not cl and fixed.requires_grad
    assert fixed.data_ptr() == cl.data_ptr() and fixed.stride() == cl.stride()  # a view: no copy
    (fixed * 3).sum().backward()
    assert weight.grad is None  # the anchor receives nothing from the view


def test_groupnorm_is_a_drop_in_nn_groupnorm() -> None:
    torch.manual_seed(0)
    plain = nn.GroupNorm(4, 16, eps=1e-3)
    ours = GroupNorm(4, 16, eps=1e-3)
    ours.load_state_dict(plain.state_dict())
    assert isinstance(ours, nn.GroupNorm) and list(ours.state_dict()) == list(plain.state_dict())
    x = torch.randn(3, 16, 4, 4)
    assert torch.equal(ours(x), plain(x))
    clone = pickle.loads(pickle.dumps(copy.deepcopy(ours)))
    assert torch.equal(clone(x), plain(x))
