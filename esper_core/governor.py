"""A safety net for training: a seed that produces non-finite numbers is pruned, not trained on.

The :class:`Governor` is called once per training step. When the loss (or, after backward,
any gradient) is not finite it skips the step, restores the buffers the bad forward
may have polluted (BatchNorm running statistics downstream of the seed), finds which
seed is responsible and prunes it with the reason recorded in its lifecycle events.
Training then simply continues with the next batch. A step is only ever applied when
everything is finite, so the host's parameters are never touched by a bad step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import attrs
import torch
from torch import Tensor, nn

from esper_core.errors import LifecycleError
from esper_core.model import live_stages
from esper_core.slot import SeedSlot

__all__ = ["Governor", "Verdict"]


@attrs.frozen
class Verdict:
    """What the governor concluded about one step: ``ok`` means apply the optimizer step."""

    ok: bool
    pruned: tuple[str, ...] = ()
    reason: str = ""


def _finite(tensors: Iterable[Tensor]) -> bool:
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return True
    # One host sync for all tensors instead of one per tensor (a norm could overflow to inf).
    return bool(torch.stack([torch.isfinite(t.detach()).all().cpu() for t in tensors]).all())


class Governor:
    """Watches ``model`` (the whole network, slots included) and its ``slots``."""

    def __init__(
        self, model: nn.Module, slots: Mapping[str, SeedSlot], *, initiator: str = "governor"
    ) -> None:
        self.model = model
        self.slots = dict(slots.items())
        self.initiator = initiator
        self.interventions: list[Verdict] = []
        slot_buffers = {id(b) for slot in self.slots.values() for b in slot.buffers()}
        self._buffers = [b for b in model.buffers() if id(b) not in slot_buffers]
        self._snapshot = [b.detach().clone() for b in self._buffers]

    def _save(self) -> None:
        with torch.no_grad():
            for saved, buffer in zip(self._snapshot, self._buffers, strict=True):
                saved.copy_(buffer)

    def _restore(self) -> None:
        with torch.no_grad():
            for buffer, saved in zip(self._buffers, self._snapshot, strict=True):
                buffer.copy_(saved)

    def check_loss(self, loss: Tensor, replay: Callable[[], object]) -> Verdict:
        """Call after the forward and before backward; ``replay()`` reruns that forward.

        A finite loss refreshes the buffer snapshot and returns ``ok``. A non-finite one
        restores the buffers, replays the forward to find the seed whose output turned
        non-finite first, prunes it, and returns ``ok=False`` (skip this step).
        """
        if bool(torch.isfinite(loss.detach()).all()):
            self._save()
            return Verdict(ok=True)
        self._restore()
        culprits = self._diagnose(replay)
        self._restore()
        return self._act(culprits, f"non-finite loss {loss.detach().float().sum().item()}")

    def check_gradients(self) -> Verdict:
        """Call after backward and before ``optimizer.step()``; zeroes grads when they are not finite."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if _finite(p.grad for p in params):
            return Verdict(ok=True)
        culprits = [
            s for s in self._suspects() if not _finite(p.grad for p in self.slots[s].seed_parameters())
        ]
        for p in params:
            p.grad = None
        self._restore()
        return self._act(culprits, "non-finite gradients")

    def _suspects(self) -> list[str]:
        return [s for s, slot in self.slots.items() if slot.stage in live_stages() and slot.seed is not None]

    def _diagnose(self, replay: Callable[[], object]) -> list[str]:
        suspects = self._suspects()
        broken = [s for s in suspects if not _finite(self.slots[s].seed_parameters())]
        if broken:
            return broken
        first: list[str] = []

        def watch(slot_id: str) -> Callable[..., None]:
            def hook(_module: nn.Module, args: tuple, output: Tensor) -> None:
                if not first and _finite(args[:1]) and not _finite([output]):
                    first.append(slot_id)

            return hook

        handles = [self.slots[s].register_forward_hook(watch(s)) for s in suspects]
        try:
            with torch.no_grad():
                replay()
        finally:
            for handle in handles:
                handle.remove()
        return first

    def _act(self, culprits: list[str], symptom: str) -> Verdict:
        pruned = []
        for slot_id in culprits:
            try:
                self.slots[slot_id].prune(f"governor: {symptom} caused by this seed", self.initiator)
                pruned.append(slot_id)
            except LifecycleError:
                continue  # e.g. a fossilized seed: it cannot be pruned, the step is still skipped
        reason = f"{symptom}; pruned {pruned}" if pruned else f"{symptom}; no seed responsible, step skipped"
        verdict = Verdict(ok=False, pruned=tuple(pruned), reason=reason)
        self.interventions.append(verdict)
        return verdict
