"""How an injected slot runs on the output of a submodule it did not write.

:func:`~esper_core.inject.inject_slots` gives each target submodule an **instance-level
``forward``**: :meth:`SlotAttachment.forward`, bound to one :class:`SlotAttachment`, runs the
module's own ``forward`` and then the slot on its output. Three properties follow, and each
is why a forward hook is not used:

* **torch.compile sees it.** Dynamo always guards that a module it inlines has no
  ``forward`` in its instance ``__dict__`` (and, when it has one, on that function's code),
  whereas it skips guards on a module's *empty* hook dicts by default
  (``torch._dynamo.config.skip_nnmodule_hook_guards``). A graph traced before injection -
  on this instance or on another instance of the same class - therefore fails its guards
  once slots are attached, instead of silently running without them. Inside the traced
  forward Dynamo reads the slot's attributes, so germination, pruning and stage changes
  are guarded like any module state.
* **Copies are independent.** The attachment is an ordinary object referenced from the
  module's ``__dict__``, and the installed ``forward`` is a bound method. ``copy.deepcopy``
  rebinds bound methods to the copied object and ``pickle`` / ``torch.save`` store them as
  ``getattr(attachment, "forward")``, so a copy's submodules call the copy's slots. (A
  hook closure is copied by reference and keeps calling the original's slots.)
* **An empty slot is free.** torch's fused inference paths (``nn.TransformerEncoderLayer``,
  and with it ``nn.TransformerEncoder``'s nested-tensor path) turn themselves off when
  *any* forward hook is attached. The instance ``forward`` calls the module's own
  ``forward`` unchanged, fused path included, and adds one attribute test.

While the slot holds a seed, a no-op forward pre-hook (:meth:`SlotAttachment._keep_module_calls`)
is attached to the target too: a fused path computes its whole block without calling its
submodules, so a slot on such a submodule (``layers.0.linear2``) would be skipped. The hook
is installed and removed by slot events and after ``load_state_dict``; an empty slot has
none. A copied model reconnects each attachment to its copied slot
(:meth:`SlotAttachment.connect`), whether or not the slot copies its observers.

**Nested tensors.** ``nn.TransformerEncoder`` (``enable_nested_tensor=True``, the default)
hands its layers a NestedTensor in inference with a ``src_key_padding_mask``. An empty slot
passes it through. A slot with a seed runs on the zero-padded tensor and cuts the result
back to each sequence's length when the tensor is ragged only along the topology's
sequence axis, where seeds must be causal (so padding at the end cannot reach a valid
position); any other NestedTensor raises :class:`~esper_core.errors.HostError` saying what
to change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from esper_core._names import class_name
from esper_core._outputs import OutputKey, replace_output, select_output
from esper_core.errors import HostError, LifecycleError
from esper_core.registry import get_topology

if TYPE_CHECKING:
    from esper_core.slot import SeedSlot
    from esper_core.telemetry import SeedEvent

__all__ = ["SlotAttachment"]


class SlotAttachment:
    """One injected slot on the output of one submodule (see the module doc).

    ``path`` names ``module`` in the model (for messages); ``overrides`` is the injection's
    shared map slot id -> per-sample alpha (:func:`~esper_core.inject.alpha_overrides`);
    ``output`` picks the tensor of the module's output the slot sees (:mod:`esper_core._outputs`).
    Create it with :meth:`attach`, undo it with :meth:`detach`.
    """

    def __init__(
        self,
        path: str,
        module: nn.Module,
        slot: SeedSlot,
        overrides: dict[str, Tensor],
        *,
        output: OutputKey = None,
    ) -> None:
        self.path = path
        self.module = module
        self.slot = slot
        self.slot_id = slot.slot_id
        self.overrides = overrides
        self.output = output
        self.inner: Any = None
        self.breaker: RemovableHandle | None = None
        self.load_hook: RemovableHandle | None = None

    # ---- install / remove ----------------------------------------------------------------------

    def attach(self) -> None:
        """Install the instance ``forward``, the slot observer and the post-load check."""
        # An instance-level forward the module already has (another library's patch, or the
        # attachment of another path to the same module) is kept and called.
        self.inner = self.module.__dict__.get("forward")
        self.module.__dict__["forward"] = self.forward
        self.load_hook = self.slot.register_load_state_dict_post_hook(self.after_load)
        self.connect()

    def connect(self) -> None:
        """Listen to the slot's events (exactly once) and bring the breaker in line with it.

        A copy of the model (``copy.deepcopy``, ``pickle``) calls this again through
        :class:`~esper_core.inject.Injection`: a slot need not carry its observers into a copy,
        and this attachment's observer must be there.
        """
        # Not registered: a fresh attachment, or a copied slot that dropped its observers.
        with contextlib.suppress(LifecycleError):
            self.slot.remove_observer(self.on_event)
        self.slot.add_observer(self.on_event)
        self.sync()

    def installed(self) -> bool:
        """Whether the module's instance ``forward`` is still this attachment's."""
        current = self.module.__dict__.get("forward")
        return getattr(current, "__self__", None) is self and getattr(current, "__func__", None) is (
            SlotAttachment.forward
        )

    def check_in_place(self, model: nn.Module) -> None:
        """:class:`HostError` when ``model``'s submodule at ``path`` is no longer ``module``.

        Replacing a target (``set_submodule``; PEFT's ``merge_and_unload``/``unload``, which put
        each LoRA layer's base layer back in its place) drops this slot from the forward.
        """
        try:
            current: nn.Module | None = model.get_submodule(self.path)
        except AttributeError:
            current = None
        if current is self.module:
            return
        now = "nothing" if current is None else f"a {class_name(current)}"
        raise HostError(
            f"target {self.path!r} of slot {self.slot_id!r} was replaced after inject_slots: the "
            f"{class_name(self.module)} the slot is attached to is now {now} there, so the slot no longer "
            "runs. PEFT's merge_and_unload() and unload() do this to LoRA layers: fold first, then merge "
            "(folded = esper_core.fold(model); folded.merge_and_unload(); docs/shipping.md). Reload this "
            "model from a checkpoint taken before, or detach its slots with remove_slots(model, discard_seeds=True)"
        )

    def detach(self) -> None:
        """Restore the module's previous ``forward`` and remove every hook and observer."""
        if self.inner is None:
            del self.module.__dict__["forward"]
        else:
            self.module.__dict__["forward"] = self.inner
        self._remove_breaker()
        if self.load_hook is not None:
            self.load_hook.remove()
            self.load_hook = None
        self.slot.remove_observer(self.on_event)

    # ---- the fused-path breaker, present only while the slot holds a seed -----------------------------

    def sync(self) -> None:
        """Attach the breaker hook when the slot holds a seed, remove it when it does not."""
        if self.slot.seed is None:
            self._remove_breaker()
        elif self.breaker is None:
            self.breaker = self.module.register_forward_pre_hook(self._keep_module_calls)

    def _remove_breaker(self) -> None:
        if self.breaker is not None:
            self.breaker.remove()
            self.breaker = None

    def _keep_module_calls(self, _module: nn.Module, _args: Any) -> None:
        """Does nothing: its presence makes torch's fused paths call this submodule."""
        return None

    def on_event(self, _event: SeedEvent) -> None:
        self.sync()

    def after_load(self, _module: nn.Module, _incompatible: Any) -> None:
        self.sync()

    # ---- forward -----------------------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module's own forward, then the slot on its output (untouched while empty)."""
        inner = self.inner
        if inner is None:
            out = type(self.module).forward(self.module, *args, **kwargs)
        else:
            out = inner(*args, **kwargs)
        slot = self.slot
        override = self.overrides.get(self.slot_id)
        if slot.seed is None and override is None:
            return out
        h = select_output(out, self.output, where=f"target {self.path!r} (slot {self.slot_id!r})")
        if h.is_nested:
            result = run_on_nested(
                h,
                slot.topology,
                lambda padded: slot(padded, override),
                where=f"slot {self.slot_id!r} at {self.path!r}",
            )
        else:
            result = slot(h, override)
        return out if result is h else replace_output(out, self.output, result)


def run_on_nested(out: Tensor, topology_name: str, run: Callable[[Tensor], Tensor], *, where: str) -> Tensor:
    """``run`` on a NestedTensor ``out`` ragged along ``topology_name``'s causal sequence axis.

    ``run`` maps the zero-padded tensor to a tensor of the same shape (a slot, or a folded
    seed: :mod:`esper_core.folding`). The result has the input's layout and ragged structure (a
    jagged tensor keeps its offsets, so it still combines with tensors derived from the
    input); ``out`` itself is returned when ``run`` returns the padded tensor unchanged.
    Raises :class:`HostError` (naming ``where``) for a NestedTensor ragged along another axis.
    """
    topology = get_topology(topology_name)
    parts = out.unbind()
    if out.layout is torch.jagged:
        ragged = [axis for axis, size in enumerate(out.shape) if not isinstance(size, int)]
    else:
        ragged = [axis + 1 for axis in range(out.dim() - 1) if len({p.shape[axis] for p in parts}) > 1]
    allowed = [] if topology.sequence_axis is None else [topology.sequence_axis % topology.ndim]
    if out.dim() != topology.ndim or not set(ragged) <= set(allowed):
        raise HostError(
            f"{where} received a {out.dim()}-d NestedTensor "
            f"ragged along axes {ragged}; topology {topology.name!r} {topology.layout} accepts a "
            f"NestedTensor only when it is ragged along its causal sequence axis ({allowed or 'none'}). "
            "Give the slot regular tensors, e.g. build nn.TransformerEncoder(..., enable_nested_tensor=False)"
        )
    padded = out.to_padded_tensor(0.0)
    result = run(padded)
    if result is padded:
        return out
    pieces = [result[(i, *(slice(0, n) for n in part.shape))] for i, part in enumerate(parts)]
    if out.layout is torch.jagged and out.lengths() is None:
        axis = ragged[0]
        lengths = [part.shape[axis - 1] for part in parts]
        return torch.nested.nested_tensor_from_jagged(
            torch.cat(pieces, dim=axis - 1),
            offsets=out.offsets(),
            jagged_dim=axis,
            min_seqlen=min(lengths),
            max_seqlen=max(lengths),
        )
    return torch.nested.as_nested_tensor(pieces, layout=out.layout)
