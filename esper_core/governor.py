"""A safety net for training: a seed that produces non-finite numbers is pruned, not trained on.

The :class:`Governor` is called once per training step, with a ``replay`` closure that
reruns the step's forward and returns its loss. When the loss, or after backward any
gradient, is not finite it skips the step (no gradient reaches the optimizer), restores the
buffers the bad forward may have polluted (BatchNorm running statistics), finds which seed
is responsible and prunes it with the reason recorded in its lifecycle events. Training
then continues with the next batch. A step is only ever applied when everything is finite,
so the host's parameters are never touched by a bad step.

**Attribution covers forward and backward.** Only when something is wrong, the step is
replayed (under a forked RNG, with hooks that are removed afterwards):

* forward, non-finite loss: (1) a seed whose parameters are not finite; else (2) the first
  slot whose output is non-finite while its input is finite; else (3) an overflow further
  down the host: each blended-in seed is ablated in turn (a forward hook makes its slot
  return its input, i.e. alpha 0) and a seed whose ablation makes the replay finite is the
  culprit (several together if only their joint ablation helps, then the smallest such
  set). When the replay stays non-finite with every seed ablated, the host caused it and
  no seed is pruned.
* backward, non-finite gradients: the forward and backward are replayed with tensor hooks
  on every live slot's input and output. A seed is the culprit when the gradient arriving
  at its output is finite but the one it sends to the host (its input) or to its own
  parameters is not. A non-finite gradient that arrives from downstream is the host's.
  Without ``replay`` only a non-finite gradient confined to one seed's own parameters can
  be attributed.

**A seed that cannot be pruned is an error, never a stall.** A FOSSILIZED seed is part of
the model; when it is the culprit (for example its weights became NaN) the governor
raises :class:`~esper_core.errors.GovernorError` naming slot, seed and blueprint: reload
the last good checkpoint. So do non-finite host parameters, and ``max_skipped_steps``
consecutive skipped steps with nobody to prune, so training never silently stops learning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from esper_core.errors import GovernorError, HostError, LifecycleError
from esper_core.model import live_stages
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

__all__ = ["Governor", "Verdict"]

#: Stages whose seed changes the forward output (TRAINING is straight-through: it does not).
_BLENDED = frozenset({SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED})
_RUNS = frozenset({SeedStage.TRAINING}) | _BLENDED


@attrs.frozen
class Verdict:
    """What the governor concluded about one step: ``ok`` means apply the optimizer step."""

    ok: bool
    pruned: tuple[str, ...] = ()
    reason: str = ""


def _finite(tensors: Iterable[Tensor | None]) -> bool:
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return True
    # One host sync for all tensors instead of one per tensor.
    return bool(torch.stack([torch.isfinite(t.detach()).all().cpu() for t in tensors]).all())


def _tensors(result: Any) -> list[Tensor]:
    """The tensors in what a replay returned (a tensor, a sequence, a mapping, a ModelOutput)."""
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, Mapping):
        return [t for v in result.values() for t in _tensors(v)]
    if isinstance(result, (list, tuple)):
        return [t for v in result for t in _tensors(v)]
    return []


@contextlib.contextmanager
def _hooks(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _rng_devices(model: nn.Module) -> list[Any]:
    return sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)


class Governor:
    """Watches ``model`` (the whole network, slots included) and its ``slots``.

    ``max_skipped_steps`` (an int >= 1) bounds the consecutive steps that may be skipped
    without pruning anyone before :class:`~esper_core.errors.GovernorError` is raised.
    """

    def __init__(
        self,
        model: nn.Module,
        slots: Mapping[str, SeedSlot],
        *,
        initiator: str = "governor",
        max_skipped_steps: int = 20,
    ) -> None:
        if (
            isinstance(max_skipped_steps, bool)
            or not isinstance(max_skipped_steps, int)
            or max_skipped_steps < 1
        ):
            raise HostError(f"max_skipped_steps must be an int >= 1, got {max_skipped_steps!r}")
        self.model = model
        self.slots = dict(slots.items())
        self.initiator = initiator
        self.max_skipped_steps = max_skipped_steps
        self.interventions: list[Verdict] = []
        slot_buffers = {id(b) for slot in self.slots.values() for b in slot.buffers()}
        self._buffers = [b for b in model.buffers() if id(b) not in slot_buffers]
        self._snapshot = [b.detach().clone() for b in self._buffers]
        self._skipped = 0
        self._loss_ok_pending = False

    # ---- buffers ----------------------------------------------------------------------------

    def _save(self) -> None:
        with torch.no_grad():
            for saved, buffer in zip(self._snapshot, self._buffers, strict=True):
                saved.copy_(buffer)

    def _restore(self) -> None:
        with torch.no_grad():
            for buffer, saved in zip(self._buffers, self._snapshot, strict=True):
                buffer.copy_(saved)

    # ---- the two checks ---------------------------------------------------------------------

    def check_loss(self, loss: Tensor, replay: Callable[[], Any]) -> Verdict:
        """Call after the forward and before backward; ``replay()`` reruns that forward.

        ``replay`` should return the loss (the model output works too when the non-finite
        value appears there); whatever tensors it returns are checked for finiteness. A
        finite ``loss`` refreshes the buffer snapshot and returns ``ok``; a non-finite one
        restores the buffers, finds and prunes the culprit and returns ``ok=False``.
        Raises :class:`~esper_core.errors.GovernorError` when the culprit cannot be pruned
        (FOSSILIZED) or nobody can be pruned for ``max_skipped_steps`` steps in a row.
        """
        if self._loss_ok_pending:  # the previous step was applied
            self._skipped = 0
        if bool(torch.isfinite(loss.detach()).all()):
            self._save()
            self._loss_ok_pending = True
            return Verdict(ok=True)
        self._loss_ok_pending = False
        self._restore()
        try:
            culprits, how = self._diagnose_forward(replay)
        finally:
            self._restore()
        return self._act(culprits, f"non-finite loss {loss.detach().float().sum().item()}", how)

    def check_gradients(self, replay: Callable[[], Any] | None = None) -> Verdict:
        """Call after backward and before ``optimizer.step()``.

        All finite: ``ok``. Otherwise every gradient is dropped (set to ``None``), buffers
        are restored, the culprit is found by replaying forward and backward with
        ``replay()`` (which must return the loss; a non-scalar is summed) and pruned, and
        ``ok=False`` is returned. Raises :class:`~esper_core.errors.GovernorError` as
        :meth:`check_loss` does.
        """
        params = [p for p in self.model.parameters() if p.grad is not None]
        if _finite(p.grad for p in params):
            self._loss_ok_pending = False
            self._skipped = 0
            return Verdict(ok=True)
        self._loss_ok_pending = False
        seed_ids = {id(p) for slot in self.slots.values() for p in slot.seed_parameters()}
        host_bad = not _finite(p.grad for p in params if id(p) not in seed_ids)
        confined = [s for s in self._live() if not _finite(p.grad for p in self.slots[s].seed_parameters())]
        culprits: list[str] | None = None
        how = ""
        if replay is not None:
            self._restore()
            try:
                culprits = self._diagnose_backward(replay)
            finally:
                self._clear_grads()
                self._restore()
            if culprits:
                how = "its backward turned a finite gradient non-finite"
            elif culprits is not None:
                how = "the gradient turned non-finite in the host, not in a seed"
        if culprits is None:  # no replay, or the replay did not reproduce it
            culprits = [] if host_bad else confined
            how = "non-finite gradients only in its own parameters" if culprits else ""
            if host_bad and replay is None:
                how = "host gradients are non-finite; pass replay= to check_gradients to find the seed"
        self._clear_grads()
        self._restore()
        return self._act(culprits, "non-finite gradients", how)

    # ---- diagnosis ----------------------------------------------------------------------------

    def _live(self) -> list[str]:
        return [s for s, slot in self.slots.items() if slot.stage in live_stages() and slot.seed is not None]

    def _clear_grads(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def _replay(self, replay: Callable[[], Any], *, grad: bool) -> Any:
        with torch.random.fork_rng(devices=_rng_devices(self.model)), torch.set_grad_enabled(grad):
            return replay()

    def _diagnose_forward(self, replay: Callable[[], Any]) -> tuple[list[str], str]:
        live = self._live()
        broken = [s for s in live if not _finite(self.slots[s].seed_parameters())]
        if broken:
            return broken, "its parameters are not finite"
        first: list[str] = []

        def watch(slot_id: str) -> Callable[..., None]:
            def hook(_module: nn.Module, args: tuple, output: Any) -> None:
                if not first and _finite(_tensors(args[:1])) and not _finite(_tensors(output)):
                    first.append(slot_id)

            return hook

        running = [s for s in live if self.slots[s].stage in _RUNS]
        with _hooks([self.slots[s].register_forward_hook(watch(s)) for s in running]):
            self._replay(replay, grad=False)
        if first:
            return first, "its output is non-finite for a finite input"
        return self._ablate(replay, [s for s in live if self.slots[s].stage in _BLENDED])

    def _finite_without(self, replay: Callable[[], Any], ablated: list[str]) -> bool:
        """Replay with the seeds of ``ablated`` removed (their slots return their input)."""
        handles = [self.slots[s].register_forward_hook(lambda _m, args, _out: args[0]) for s in ablated]
        with _hooks(handles):
            result = self._replay(replay, grad=False)
        self._restore()
        values = _tensors(result)
        return bool(values) and _finite(values)

    def _ablate(self, replay: Callable[[], Any], blended: list[str]) -> tuple[list[str], str]:
        how = "an overflow downstream of its finite output (finite without this seed)"
        for slot_id in blended:
            if self._finite_without(replay, [slot_id]):
                return [slot_id], how
        if len(blended) < 2 or not self._finite_without(replay, blended):
            return [], "the forward is non-finite with every seed removed: the host caused it"
        needed = list(blended)
        for slot_id in blended:  # shrink to a smallest set whose joint ablation is finite
            trial = [s for s in needed if s != slot_id]
            if self._finite_without(replay, trial):
                needed = trial
        return needed, "an overflow downstream of these seeds' finite outputs (finite without them)"

    def _diagnose_backward(self, replay: Callable[[], Any]) -> list[str] | None:
        """Culprits from a replayed forward + backward; ``None`` if it was not reproduced."""
        live = [s for s in self._live() if self.slots[s].stage in _RUNS]
        grads_out: dict[str, bool] = {s: True for s in live}
        grads_in: dict[str, bool] = {s: True for s in live}

        def record(table: dict[str, bool], slot_id: str) -> Callable[[Tensor], None]:
            def hook(grad: Tensor) -> None:
                table[slot_id] = table[slot_id] and _finite([grad])

            return hook

        def watch(slot_id: str) -> Callable[..., None]:
            def hook(_module: nn.Module, args: tuple, output: Any) -> None:
                h = args[0] if args else None
                if isinstance(output, Tensor) and output.requires_grad:
                    output.register_hook(record(grads_out, slot_id))
                if isinstance(h, Tensor) and h.requires_grad and h is not output:
                    h.register_hook(record(grads_in, slot_id))

            return hook

        self._clear_grads()
        with _hooks([self.slots[s].register_forward_hook(watch(s)) for s in live]):
            result = self._replay(replay, grad=True)
            values = [t for t in _tensors(result) if t.requires_grad]
            if not values:
                return None
            loss = values[0] if values[0].dim() == 0 else values[0].sum()
            if not _finite([loss]):
                return None
            loss.backward()
        if _finite(p.grad for p in self.model.parameters()):
            return None
        return [
            s
            for s in live
            if grads_out[s]
            and (not grads_in[s] or not _finite(p.grad for p in self.slots[s].seed_parameters()))
        ]

    # ---- acting -------------------------------------------------------------------------------

    def _act(self, culprits: list[str], symptom: str, how: str) -> Verdict:
        pruned, stuck = [], []
        for slot_id in culprits:
            slot = self.slots[slot_id]
            try:
                slot.prune(f"governor: {symptom}: {how}", self.initiator)
                pruned.append(slot_id)
            except LifecycleError:
                stuck.append(slot_id)
        if pruned:
            reason = f"{symptom}; pruned {pruned} ({how})"
        else:
            reason = f"{symptom}; no seed responsible, step skipped" + (f" ({how})" if how else "")
        verdict = Verdict(ok=False, pruned=tuple(pruned), reason=reason)
        self.interventions.append(verdict)
        if stuck:
            names = ", ".join(
                f"slot {s!r} (seed {self.slots[s].seed_id!r}, blueprint {self.slots[s].blueprint!r}, "
                f"{self.slots[s].stage.name})"
                for s in stuck
            )
            raise GovernorError(
                f"{symptom}: caused by {names}, which cannot be pruned ({how}). A fossilized seed is part "
                "of the model: reload the last good checkpoint (and lower the learning rate) to go on"
            )
        bad_host = [n for n, p in self.model.named_parameters() if not _finite([p])]
        if bad_host:
            raise GovernorError(
                f"{symptom}: host parameters {bad_host[:5]} are not finite; the governor cannot repair the "
                "host: reload the last good checkpoint"
            )
        self._skipped = 0 if pruned else self._skipped + 1
        if self._skipped >= self.max_skipped_steps:
            recent = [v.reason for v in self.interventions[-3:]]
            raise GovernorError(
                f"{self._skipped} consecutive training steps were skipped with no seed to prune "
                f"(max_skipped_steps={self.max_skipped_steps}); training is not progressing. Last reasons: {recent}"
            )
        return verdict
