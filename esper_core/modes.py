"""Switch a module to eval mode for one pass and give every submodule its own mode back.

``module.eval()`` followed by ``module.train(was_training)`` is not a round trip: ``train``
sets the same flag on every submodule, so a frozen backbone whose BatchNorm layers the user
put in eval comes back in training mode (its running statistics start to drift) and dropout
comes back on in frozen transformer blocks. Every pass of the library that needs eval mode
(validation, probe forwards) goes through :func:`eval_mode`, which records each submodule's
own flag and writes exactly those flags back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["eval_mode", "module_modes", "restore_modes"]


def module_modes(module: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every submodule of ``module`` (itself included, shared ones once) with its ``training`` flag."""
    return [(m, m.training) for m in module.modules()]


def restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Write back flags recorded by :func:`module_modes`.

    The flags are assigned, not set through ``train()``: ``train(mode)`` recurses into the
    children and would overwrite the modes recorded for them.
    """
    for m, mode in modes:
        m.training = mode


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``module`` and all its submodules are in eval mode; afterwards (also
    after an exception) each submodule has exactly the mode it had before.

    Submodules added inside the block keep whatever mode they were given.
    """
    modes = module_modes(module)
    try:
        module.eval()
        yield module
    finally:
        restore_modes(modes)
