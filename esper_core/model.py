"""A host network with seed slots at its injection points.

:class:`MorphogeneticModel` owns no lifecycle logic: it threads activations through the
host's segments and the slots in execution order, answers parameter-count questions
exactly, and measures every live seed's counterfactual contribution in one fused
validation pass (the batch is repeated once per configuration and each slot gets a
per-sample alpha override, so K configurations cost one forward of K times the batch).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from esper_core._batches import Inputs, described, read_batch
from esper_core._checks import check_bool, check_float, check_int, check_mapping, check_members, shown
from esper_core._placement import host_placement, place_slots
from esper_core._slot_options import check_slot_options
from esper_core._wrappers import unwrap
from esper_core.hosts.base import HostError, HostProtocol
from esper_core.modes import eval_mode
from esper_core.registry import get_topology
from esper_core.slot import SeedSlot
from esper_core.stages import LIVE, PROBATION, SeedStage

__all__ = ["Evaluation", "MorphogeneticModel", "contribution_configs", "evaluate_slots", "live_stages"]

_LIVE = LIVE


def live_stages() -> frozenset[SeedStage]:
    """Stages in which a slot holds a seed module and pays rent: :data:`esper_core.stages.LIVE`."""
    return LIVE


def _contributions(value: object) -> Mapping[str, float]:
    items = check_mapping("contributions", value, error=HostError)
    return MappingProxyType(
        {
            slot_id: check_float(
                f"contributions[{shown(slot_id)}]", v, minimum=-100.0, maximum=100.0, unit=" percentage points",
                error=HostError,
            )
            for slot_id, v in items.items()
        }
    )  # fmt: skip


@attrs.frozen
class Evaluation:
    """One validation pass: the model's score (percent) and each measured seed's contribution.

    ``contributions[slot_id]`` is ``score(all seeds as they are) - score(that seed's alpha at 0)``
    in percentage points; slots without a seed blended in (alpha 0) are absent. Every field
    is checked on construction (:class:`HostError`): ``score`` in [0, 100], contributions in
    [-100, 100], ``samples`` an int >= 0.
    """

    score: float = attrs.field(
        converter=lambda v: check_float(
            "score", v, minimum=0.0, maximum=100.0, unit=" percent", error=HostError
        )
    )
    contributions: Mapping[str, float] = attrs.field(converter=_contributions, factory=dict)
    samples: int = attrs.field(
        default=0, converter=lambda v: check_int("samples", v, maximum=2**53, error=HostError)
    )


def contribution_configs(alphas: Sequence[float]) -> list[list[float]]:
    """Per-configuration alphas for a leave-one-out ablation of ``alphas``.

    Row 0 keeps every alpha; row ``i + 1`` sets slot ``i`` to 0. Pure, so it is tested alone.
    """
    rows = [list(alphas)]
    for i in range(len(alphas)):
        row = list(alphas)
        row[i] = 0.0
        rows.append(row)
    return rows


class MorphogeneticModel(nn.Module):
    """``host`` plus one :class:`~esper_core.slot.SeedSlot` per requested injection point.

    ``slots`` names the injection points to equip (default: all of them); ``slot_options``
    are passed to every ``SeedSlot``: ``gates``, ``embargo_epochs``, ``auto_advance``,
    ``isolate_blending``, ``activity_decay`` and ``max_seed_params``. Any other keyword,
    and ``slot_id``, ``topology`` or ``dim`` (they come from the host), raises
    :class:`HostError` naming it and listing the accepted ones; a bad option value raises
    :class:`~esper_core.errors.LifecycleError` naming it. The slots are
    ``self.slots``, an ``nn.ModuleDict`` from slot id to ``SeedSlot`` in execution order.
    They take the host's device, floating dtype and memory format (so seeds are built to
    match) and follow ``.to(...)`` afterwards. With no seed germinated the output is exactly the host's output.
    A ``host`` inside ``torch.compile``/DDP/``DataParallel`` raises :class:`HostError`: wrap
    the ``MorphogeneticModel`` instead.
    """

    def __init__(self, host: nn.Module, slots: Collection[str] | None = None, **slot_options: Any) -> None:
        super().__init__()
        seen = unwrap(host) if isinstance(host, nn.Module) else None
        if seen is not None and seen.wrappers:
            raise HostError(
                f"host is a {seen.describe()}: MorphogeneticModel runs its host segment by segment "
                f"(host.forward_segment), which a wrapper's forward never sees. Pass the host itself "
                f"({seen.access.replace('model', 'host', 1)}) and wrap the grown model instead: "
                "torch.compile(MorphogeneticModel(host)), DistributedDataParallel(MorphogeneticModel(host))"
            )
        if not isinstance(host, HostProtocol):
            raise HostError(
                f"host must implement HostProtocol (topology, injection_points, forward_segment); "
                f"got {type(host).__name__}"
            )
        check_slot_options(
            slot_options,
            caller="MorphogeneticModel",
            identity="come from the host's injection points (host.injection_points())",
        )
        self.host = host
        points = {p.slot_id: p for p in host.injection_points()}
        wanted = list(points) if slots is None else list(check_members("slots", slots, str, error=HostError))
        unknown = [s for s in wanted if s not in points]
        if unknown or len(set(wanted)) != len(wanted):
            raise HostError(
                f"unknown or repeated slot ids {shown(unknown or wanted, 200)}; this host has {list(points)}"
            )
        self._order = tuple(s for s in points if s in wanted)
        self._topology = get_topology(host.topology)
        self.slots = nn.ModuleDict(
            {
                s: SeedSlot(s, topology=points[s].topology, dim=points[s].dim, **slot_options)
                for s in self._order
            }
        )
        place_slots(self.slots, host_placement(host))  # the host's device, dtype and memory format

    @property
    def topology(self) -> str:
        return self._topology.name

    @property
    def slot_ids(self) -> tuple[str, ...]:
        """Equipped slot ids, in execution order."""
        return self._order

    def slot(self, slot_id: str) -> SeedSlot:
        """The slot ``slot_id``; :class:`HostError` lists the equipped ones."""
        if not isinstance(slot_id, str) or slot_id not in self.slots:
            raise HostError(f"unknown slot id {shown(slot_id)}; this model has slots {list(self._order)}")
        return self.slots[slot_id]

    # ----------------------------------------------------------------------------- forward

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_alphas(x, {})

    def forward_with_alphas(self, x: Tensor, overrides: Mapping[str, Tensor]) -> Tensor:
        """Forward with a per-sample alpha for some slots (shape ``topology.alpha_shape(N)``).

        Every override is checked before anything runs (a host layer in training mode updates
        its running statistics): :class:`HostError` names the slot and what is accepted.
        """
        overrides = check_mapping("overrides", overrides, error=HostError)
        for slot_id, alpha in overrides.items():
            self.slot(slot_id)
            expected = self._topology.alpha_shape(x.shape[0])
            ok = isinstance(alpha, Tensor) and alpha.layout is torch.strided and alpha.is_floating_point()
            if not ok or tuple(alpha.shape) != expected or alpha.device != x.device:
                got = f"{alpha.dtype} {tuple(alpha.shape)} on {alpha.device}" if ok else described(alpha)
                raise HostError(
                    f"alpha override for {slot_id!r}: got {got}; accepted: a dense floating tensor of shape "
                    f"{expected} on {x.device}"
                )
        route = [s for s in self._order if s in overrides or self.slots[s].seed is not None]
        if not route:
            return self.host(x)
        h, prev = x, None
        for slot_id in route:
            h = self.host.forward_segment(h, prev, slot_id)
            h = self.slots[slot_id](h, overrides.get(slot_id))
            prev = slot_id
        return self.host.forward_segment(h, prev, None)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """``nn.Module.load_state_dict``, all or nothing: :func:`esper_core.checkpoint.load_checkpoint`.

        Every key (host and slots), shape, dtype kind, layout, device and envelope is checked
        first; a bad checkpoint raises :class:`~esper_core.errors.CheckpointError` naming the
        key and the whole model is exactly as before.
        """
        from esper_core.checkpoint import load_checkpoint

        return load_checkpoint(self, state_dict, strict=strict, assign=assign)

    # --------------------------------------------------------------------------- lifecycle

    def germinate(self, slot_id: str, blueprint: str, **kwargs: Any) -> None:
        """Germinate ``blueprint`` in ``slot_id`` (keyword arguments go to ``SeedSlot.germinate``)."""
        self.slot(slot_id).germinate(blueprint, **kwargs)

    def prune(self, slot_id: str, reason: str, initiator: str = "user") -> None:
        self.slot(slot_id).prune(reason, initiator)

    def step_epoch(self) -> None:
        """Advance every slot's epoch clock (alpha ramps, cooldowns), as the lifecycle expects."""
        for slot_id in self._order:
            self.slots[slot_id].step_epoch()

    def live_slots(self) -> list[str]:
        """Slots holding a seed (germinated to fossilized), in execution order."""
        return [s for s in self._order if self.slots[s].stage in _LIVE]

    # ---------------------------------------------------------------------------- counting

    @property
    def host_param_count(self) -> int:
        """Host parameters, tied tensors once, regardless of ``requires_grad``."""
        return sum(p.numel() for p in {id(p): p for p in self.host.parameters()}.values())

    def seed_param_count(self, stages: Collection[SeedStage] = _LIVE) -> int:
        """Seed (and gate) parameters of the slots whose stage is in ``stages`` (SeedStage members)."""
        check_members("stages", stages, SeedStage, accepted="SeedStage members", error=HostError)
        return sum(
            sum(p.numel() for p in self.slots[s].seed_parameters())
            for s in self._order
            if self.slots[s].stage in stages
        )

    @property
    def active_seed_param_count(self) -> int:
        """Parameters of seeds still on probation (germinated to holding)."""
        return self.seed_param_count(PROBATION)

    @property
    def fossilized_param_count(self) -> int:
        """Parameters of seeds that became a permanent part of the model."""
        return self.seed_param_count({SeedStage.FOSSILIZED})

    @property
    def total_param_count(self) -> int:
        return self.host_param_count + self.seed_param_count()

    # -------------------------------------------------------------------------- evaluation

    def evaluate(
        self,
        batches: Iterable[tuple[Tensor, Tensor]],
        score: Callable[[Tensor, Tensor], Tensor],
        *,
        counterfactual: bool = True,
    ) -> Evaluation:
        """Score the model on ``batches`` and, in the same pass, every blended seed's contribution.

        ``batches`` yields pairs ``(x, target)``: ``x`` the host's input tensor, ``target`` a
        tensor with the same batch size on dim 0. ``score(output, target)`` returns
        per-element scores (for example 1.0 for a correct prediction); the reported numbers
        are their mean in percent. A bad batch or score raises :class:`HostError` describing
        the value by type and shape.
        """
        return evaluate_slots(
            self,
            lambda inputs, overrides: self.forward_with_alphas(inputs.args[0], overrides),
            {s: self.slots[s] for s in self._order},
            batches,
            score,
            alpha_shape=lambda _slot_id, n: self._topology.alpha_shape(n),
            counterfactual=counterfactual,
            single_tensor=True,
        )


@torch.no_grad()
def evaluate_slots(
    module: nn.Module,
    run: Callable[[Inputs, Mapping[str, Tensor]], Any],
    slots: Mapping[str, SeedSlot],
    batches: Iterable[tuple[Any, Tensor]],
    score: Callable[[Any, Tensor], Tensor],
    *,
    alpha_shape: Callable[[str, int], tuple[int, ...]],
    counterfactual: bool = True,
    single_tensor: bool = False,
) -> Evaluation:
    """The fused leave-one-out pass behind :meth:`MorphogeneticModel.evaluate`.

    Each batch is read by :func:`esper_core._batches.read_batch` (``single_tensor``: its
    inputs must be one tensor); every input tensor and the targets are repeated once per
    configuration. ``run(inputs, overrides)`` is a forward that honours per-slot alpha
    overrides; ``module`` is
    put in eval mode for the pass (per-sample statistics, so repeating the batch K times
    gives each configuration exactly what a separate pass would) and afterwards every
    submodule gets back its own mode (see :func:`esper_core.modes.eval_mode`).
    Only seeds that are blended in (alpha > 0) are ablated: a seed at alpha 0 cannot change
    the output, so its contribution is unmeasured rather than zero.
    """
    counterfactual = check_bool("counterfactual", counterfactual, error=HostError)
    if not callable(score):
        raise HostError(f"score must be a callable score(output, target) -> Tensor, got {shown(score)}")
    try:
        batches = iter(batches)
    except TypeError:
        raise HostError(
            f"batches must be an iterable of (inputs, targets) pairs, got {described(batches)}"
        ) from None
    measured = [s for s, slot in slots.items() if counterfactual and slot.seed is not None and slot.alpha > 0]
    rows = torch.tensor(contribution_configs([float(slots[s].alpha) for s in measured]), dtype=torch.float32)
    k = rows.shape[0]
    totals = torch.zeros(k, dtype=torch.float64)
    count = 0
    with eval_mode(module):
        for batch in batches:
            inputs, y, b = read_batch(batch, single_tensor=single_tensor)
            device = next((v.device for _n, v in inputs.named() if isinstance(v, Tensor)), y.device)
            yk = y.repeat(k, *([1] * (y.ndim - 1)))
            overrides = {
                slot_id: rows[:, j].to(device).repeat_interleave(b).view(alpha_shape(slot_id, k * b))
                for j, slot_id in enumerate(measured)
            }
            output = run(inputs.repeated(k), overrides)
            try:
                result = score(output, yk)
            except Exception as exc:  # the caller's function: reported as ours, naming it
                raise HostError(f"score(output, target) raised {type(exc).__name__}: {exc}") from exc
            scores = _scores(result, k, b)
            totals += scores.sum(dim=1).cpu()
            count += scores.shape[1]
    if count == 0:
        raise HostError("evaluate() needs at least one non-empty batch; got none")
    # Means of scores in [0, 1]: clamped so that rounding cannot leave [0, 100] percent.
    percent = (100.0 * totals / count).clamp(0.0, 100.0).tolist()
    return Evaluation(
        score=percent[0],
        contributions={s: percent[0] - percent[j + 1] for j, s in enumerate(measured)},
        samples=count,
    )


def _scores(result: object, k: int, b: int) -> Tensor:
    """``score``'s result as a float64 ``(k, -1)`` tensor, checked: real, batch first, values in [0, 1]."""
    ok = (
        isinstance(result, Tensor)
        and result.layout is torch.strided
        and not result.is_complex()
        and result.dim() >= 1
        and result.shape[0] == k * b
    )
    if not ok:
        got = f"{result.dtype} {tuple(result.shape)}" if isinstance(result, Tensor) else shown(result)
        raise HostError(
            f"score(output, target) must return a real tensor of per-sample scores in [0, 1] with the batch "
            f"first ({k * b} rows here); got {got}"
        )
    assert isinstance(result, Tensor)
    scores = result.reshape(k, -1).double()
    if scores.numel():
        low, high = torch.aminmax(scores)
        if not (bool(low >= 0.0) and bool(high <= 1.0)):  # NaN fails both
            raise HostError(
                f"score(output, target) must return per-sample scores in [0, 1] (e.g. 1.0 for a correct "
                f"prediction; the evaluation reports their mean in percent); got values in [{low:.4g}, {high:.4g}]"
            )
    return scores
