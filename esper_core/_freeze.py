"""Parameters a stage does not use are frozen for that stage, and given back afterwards.

In GERMINATED the seed does not run, in TRAINING the blend gate is unused (the incubator
ignores it), and while alpha ramps down the seed and gate run without autograd. Parameters
that cannot receive a gradient must not require one: ``DistributedDataParallel`` would
otherwise wait for their gradients and stop ("Expected to have finished reduction in the
prior iteration"), and any data-parallel wrapper or optimizer would have to special-case
them. :class:`StageFreeze` sets ``requires_grad=False`` on them and remembers the flag they
had, which it restores as soon as the stage uses them again; a parameter you froze yourself
stays frozen. Parameter counts never depend on the flag.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from esper_core.stages import SeedStage

__all__ = ["StageFreeze", "unused_modules"]


def unused_modules(
    stage: SeedStage, ramping_down: bool, seed: nn.Module | None, gate: nn.Module | None
) -> list:
    """The modules ``forward`` cannot send a gradient to in ``stage`` (pure rule, no side effect)."""
    if stage is SeedStage.GERMINATED or ramping_down:
        return [m for m in (seed, gate) if m is not None]
    if stage is SeedStage.TRAINING:
        return [gate] if gate is not None else []
    return []


class StageFreeze:
    """The parameters a slot froze for its stage, each with the ``requires_grad`` it had before."""

    def __init__(self) -> None:
        self._frozen: dict[int, tuple[nn.Parameter, bool]] = {}

    def update(self, unused: Iterable[nn.Module]) -> None:
        """Freeze exactly the parameters of ``unused``; give every other one its own flag back."""
        wanted = {id(p): p for m in unused for p in m.parameters()}
        for key, (param, flag) in list(self._frozen.items()):
            if key not in wanted:
                param.requires_grad_(flag)
                del self._frozen[key]
        for key, param in wanted.items():
            if key not in self._frozen:
                self._frozen[key] = (param, param.requires_grad)
                param.requires_grad_(False)

    def own_flag(self, param: nn.Parameter) -> bool:
        """Whether ``param`` requires grad by its owner's choice (not counting the stage freeze)."""
        entry = self._frozen.get(id(param))
        return param.requires_grad if entry is None else entry[1]

    # A copy (deepcopy, pickle) of the slot gets new parameter objects: the record travels as
    # (parameter, flag) pairs, which the copy maps to its own parameters, and is keyed again.
    def __getstate__(self) -> list[tuple[nn.Parameter, bool]]:
        return list(self._frozen.values())

    def __setstate__(self, pairs: list[tuple[nn.Parameter, bool]]) -> None:
        self._frozen = {id(param): (param, flag) for param, flag in pairs}
