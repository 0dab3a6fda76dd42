"""A small convolutional classifier host with slots before and after every pooling step.

Because a slot sits on both sides of each pool, the same channel count occurs at two
spatial sizes, so every CNN blueprint must work at any ``H, W >= 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from esper_core.hosts.base import HostError, InjectionPoint, SegmentedHost

__all__ = ["CNNHost", "ConvBlock", "cnn_host_param_count"]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HostError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def cnn_host_param_count(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    n_blocks: int = 3,
    base_channels: int = 32,
    kernel_size: int = 3,
) -> int:
    """Closed-form parameter count of :class:`CNNHost` (bias-free convs, BatchNorm, linear head)."""
    total, c_in = 0, in_channels
    for i in range(n_blocks):
        c_out = base_channels * 2**i
        total += kernel_size * kernel_size * c_in * c_out + 2 * c_out
        c_in = c_out
    return total + c_in * num_classes + num_classes


class ConvBlock(nn.Module):
    """Conv (no bias; BatchNorm supplies the shift) -> BatchNorm -> ReLU, shape-preserving in H, W."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class CNNHost(SegmentedHost):
    """``n_blocks`` conv blocks with channels ``base * 2**i``, max-pooling after the first ``pool_layers``.

    Slot ``r0c{i}`` sits after block ``i`` and before its pool; ``r1c{i}`` sits after that
    pool (only for pooled blocks). Execution order interleaves them: ``r0c0, r1c0, r0c1, ...``.
    Activations are kept channels_last by default, which seeds must preserve.
    """

    topology_name = "cnn"

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        n_blocks: int = 3,
        base_channels: int = 32,
        pool_layers: int | None = None,
        kernel_size: int = 3,
        memory_format: torch.memory_format = torch.channels_last,
    ) -> None:
        super().__init__()
        _check_int("num_classes", num_classes, 1)
        _check_int("in_channels", in_channels, 1)
        _check_int("n_blocks", n_blocks, 1)
        _check_int("base_channels", base_channels, 1)
        pool_layers = n_blocks if pool_layers is None else pool_layers
        _check_int("pool_layers", pool_layers, 0)
        if pool_layers > n_blocks:
            raise HostError(f"pool_layers must be in [0, n_blocks={n_blocks}], got {pool_layers}")
        if _check_int("kernel_size", kernel_size, 1) % 2 == 0:
            raise HostError(f"kernel_size must be odd (to keep H, W), got {kernel_size}")
        if memory_format not in (torch.channels_last, torch.contiguous_format):
            raise HostError(
                f"memory_format must be torch.channels_last or torch.contiguous_format, got {memory_format}"
            )
        self.config = {
            "num_classes": num_classes,
            "in_channels": in_channels,
            "n_blocks": n_blocks,
            "base_channels": base_channels,
            "kernel_size": kernel_size,
        }
        self.memory_format = memory_format
        widths = [base_channels * 2**i for i in range(n_blocks)]
        self.blocks = nn.ModuleList(
            ConvBlock(c_in, c_out, kernel_size)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2, 2)
        self.classifier = nn.Linear(widths[-1], num_classes)
        placed: list[tuple[InjectionPoint, int]] = []
        for i, block in enumerate(self.blocks):
            self._ops.append(block)
            placed.append(
                (InjectionPoint(f"r0c{i}", "cnn", widths[i], len(placed), "pre_pool"), len(self._ops) - 1)
            )
            if i < pool_layers:
                self._ops.append(self.pool)
                placed.append(
                    (
                        InjectionPoint(f"r1c{i}", "cnn", widths[i], len(placed), "post_pool"),
                        len(self._ops) - 1,
                    )
                )
        self._set_points(placed)
        if memory_format == torch.channels_last:
            self.to(memory_format=torch.channels_last)

    def _enter(self, x: Tensor) -> Tensor:
        channels = self.config["in_channels"]
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != channels or not x.is_floating_point():
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise HostError(f"CNNHost expects floating images (B, {channels}, H, W); got {got}")
        return x.contiguous(memory_format=self.memory_format)

    def _exit(self, h: Tensor) -> Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
