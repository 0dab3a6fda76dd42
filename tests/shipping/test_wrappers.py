"""Every public function that takes a model, with each wrapper PyTorch users put around one.

The kind (user report, wave 2): ``torch.compile``'s ``OptimizedModule`` (also nested with DDP),
``DistributedDataParallel`` and ``DataParallel`` hold the model as ``_orig_mod``/``.module``
and share its parameters but not its ``__dict__``, where ``inject_slots`` records what it
attached. Lookups see through the wrapper (``esper_core._wrappers``); changes to the
parameter set are made on the compiled module under ``torch.compile`` and refused under a
data-parallel wrapper. DDP is real: a one-rank gloo group on a file store, torn down after
this module.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from esper_core import DDPRewrapper, QualityGates
from esper_core.checkpoint import load_checkpoint
from esper_core.distributed import DistributedLifecycle
from esper_core.errors import CheckpointError, FoldError, HostError
from esper_core.folding import FoldedSeed, fold, plan_fold
from esper_core.hosts import TransformerHost
from esper_core.inject import alpha_overrides, evaluate_injected, get_injection, inject_slots, remove_slots
from esper_core.model import MorphogeneticModel
from esper_core.seed_checkpoint import fingerprint, load_seeds, read_seeds, save_seeds
from esper_core.slot import SeedSlot
from esper_core.stages import SeedStage

X = torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 3, (4, 5), generator=torch.Generator().manual_seed(2))


def score(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out.argmax(-1) == target).float().mean(-1)


def fossilize(slot: SeedSlot) -> None:
    slot.advance()
    slot.record_accuracy(50.0)
    slot.advance()
    while slot.alpha < 1:
        slot.step_epoch()
    slot.advance()
    slot.record_counterfactual(1.0)
    slot.advance()
    assert slot.stage is SeedStage.FOSSILIZED


def host(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def grow(model: nn.Module) -> SeedSlot:
    """Inject at ``"0"`` of ``model`` (a wrapper or not) and fossilize a seed with weights that matter."""
    slot = inject_slots(model, {"0": "transformer"}, example_input=X, gates=QualityGates("permissive"))["_0"]
    slot.germinate("mlp_small")
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(3))
    fossilize(slot)
    return slot


def grown() -> nn.Sequential:
    net = host()
    grow(net)
    return net.eval()


@pytest.fixture(scope="module")
def process_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real one-rank gloo group (enough to build a real DistributedDataParallel)."""
    assert not dist.is_initialized()
    store = tmp_path_factory.mktemp("gloo") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _compile(m: nn.Module) -> nn.Module:
    return torch.compile(m, backend="eager")  # type: ignore[return-value]


WRAPPERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "compile": _compile,
    "DataParallel": nn.DataParallel,
    "DDP": DDP,
    "compile(DDP)": lambda m: _compile(DDP(m)),
    "DDP(compile)": lambda m: DDP(_compile(m)),
}
#: The expression that reaches the model inside each wrapper, as the messages write it.
ACCESS = {
    "compile": "model._orig_mod",
    "DataParallel": "model.module",
    "DDP": "model.module",
    "compile(DDP)": "model._orig_mod.module",
    "DDP(compile)": "model.module._orig_mod",
}
PARALLEL = ["DataParallel", "DDP", "compile(DDP)", "DDP(compile)"]


@pytest.fixture(params=list(WRAPPERS))
def wrap(request: pytest.FixtureRequest) -> tuple[str, Callable[[nn.Module], nn.Module]]:
    if "DDP" in request.param:
        request.getfixturevalue("process_group")
    return request.param, WRAPPERS[request.param]


@pytest.fixture(params=PARALLEL)
def parallel(request: pytest.FixtureRequest) -> tuple[str, Callable[[nn.Module], nn.Module]]:
    if "DDP" in request.param:
        request.getfixturevalue("process_group")
    return request.param, WRAPPERS[request.param]


# ---- lookups see through every wrapper -------------------------------------------------------


def test_lookups_see_through_the_wrapper(wrap) -> None:  # type: ignore[no-untyped-def]
    _, build = wrap
    net = grown()
    wrapped = build(net)
    assert get_injection(wrapped) is get_injection(net) is not None
    assert plan_fold(wrapped) == plan_fold(net)
    assert fingerprint(wrapped) == fingerprint(net)
    assert DistributedLifecycle(wrapped).slot_ids == ("_0",)
    with torch.no_grad():
        grown_out = net(X)
        with alpha_overrides(wrapped, {"_0": torch.zeros(())}):
            without_seed = net(X)
        with alpha_overrides(net, {"_0": torch.zeros(())}):
            assert torch.equal(net(X), without_seed)
    assert (grown_out - without_seed).abs().max() > 1e-2  # the override reached the slot


def test_evaluate_injected_sees_through_the_wrapper(wrap) -> None:  # type: ignore[no-untyped-def]
    _, build = wrap
    net = grown()
    wrapped = build(net)
    batches = [(X, Y), (X[:2], Y[:2])]
    assert evaluate_injected(wrapped, batches, score) == evaluate_injected(net, batches, score)


def test_fold_returns_the_plain_module_inside_the_wrapper(wrap) -> None:  # type: ignore[no-untyped-def]
    _, build = wrap
    net = grown()
    wrapped = build(net)
    folded = fold(wrapped)
    assert type(folded) is nn.Sequential  # not compiled, not wrapped
    assert isinstance(folded[0], FoldedSeed)
    with torch.no_grad():
        assert torch.equal(folded(X), net(X))
    assert get_injection(wrapped) is get_injection(net) is not None  # a copy was folded


def test_save_seeds_writes_the_file_of_the_module_inside(wrap, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, build = wrap
    net = grown()
    save_seeds(build(net), tmp_path / "wrapped.pt")
    save_seeds(net, tmp_path / "plain.pt")
    a, b = read_seeds(tmp_path / "wrapped.pt"), read_seeds(tmp_path / "plain.pt")
    assert (a.kind, a.host, a.targets) == (b.kind, b.host, b.targets)
    assert a.host.cls == "torch.nn.modules.container.Sequential"
    assert list(a.state_dict) == list(b.state_dict)
    for key, value in a.state_dict.items():
        assert (
            torch.equal(value, b.state_dict[key])
            if isinstance(value, torch.Tensor)
            else value == b.state_dict[key]
        )


# ---- changes: made inside torch.compile, refused under data parallelism -------------------------


def test_inject_into_a_compiled_handle_grows_the_compiled_module() -> None:
    net = host()
    compiled = _compile(net)
    with torch.no_grad():
        before = compiled(X)
    slot = grow(compiled)
    assert [name for name, _ in compiled.named_children()] == ["_orig_mod"]
    assert net.esper_slots["_0"] is slot
    assert "esper_slots._0._extra_state" in net.state_dict()  # what load_checkpoint's advice saves
    with torch.no_grad():
        after = compiled(X)  # Dynamo guards on the instance forward: recompiled with the seed
        assert torch.allclose(after, net(X), atol=1e-6)
    assert (after - before).abs().max() > 1e-2
    assert remove_slots(compiled, discard_seeds=True)["_0"] is slot
    assert not hasattr(net, "esper_slots") and get_injection(compiled) is None
    with torch.no_grad():
        assert torch.allclose(compiled(X), before, atol=1e-6)


def test_data_parallel_wrappers_refuse_changes_and_change_nothing(parallel, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kind, build = parallel
    name = "DataParallel" if kind == "DataParallel" else "DistributedDataParallel"
    fresh = host()
    params = [id(p) for p in fresh.parameters()]
    with pytest.raises(HostError, match=rf"refused, because {name} .*inject_slots\({ACCESS[kind]}, \.\.\.\)"):
        inject_slots(build(fresh), {"0": "transformer"}, example_input=X)
    assert [id(p) for p in fresh.parameters()] == params and not hasattr(fresh, "esper_slots")

    net = grown()
    save_seeds(net, tmp_path / "seeds.pt")
    with pytest.raises(HostError, match=rf"remove_slots\({ACCESS[kind]}, \.\.\.\)"):
        remove_slots(build(net), discard_seeds=True)
    assert get_injection(net) is not None
    with pytest.raises(HostError, match=rf"load_seeds\({ACCESS[kind]}, \.\.\.\)"):
        load_seeds(build(fresh), tmp_path / "seeds.pt")
    assert get_injection(fresh) is None


def test_load_seeds_into_a_compiled_host_returns_the_handle(tmp_path: Path) -> None:
    net = grown()
    save_seeds(net, tmp_path / "seeds.pt")
    fresh = host()
    compiled = _compile(fresh)
    assert load_seeds(compiled, tmp_path / "seeds.pt", gates=QualityGates("permissive")) is compiled
    assert fresh.esper_slots["_0"].stage is SeedStage.FOSSILIZED
    with torch.no_grad():
        assert torch.allclose(compiled.eval()(X), net(X), atol=1e-6)


def test_load_checkpoint_names_the_module_inside_a_wrapper() -> None:
    net = grown()
    compiled = _compile(net)
    load_checkpoint(compiled, compiled.state_dict())  # the handle's own keys: accepted
    with pytest.raises(CheckpointError, match=r"load_checkpoint\(model._orig_mod, state_dict\)"):
        load_checkpoint(compiled, net.state_dict())


def test_wrapped_hosts_and_wrappers_are_refused_where_the_grown_model_must_be_wrapped(process_group) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    th = TransformerHost(vocab_size=30, n_embd=16, n_head=2, n_layer=2, block_size=16)
    with pytest.raises(HostError, match=r"host\._orig_mod\) .*torch\.compile\(MorphogeneticModel\(host\)\)"):
        MorphogeneticModel(_compile(th))
    with pytest.raises(HostError, match=r"DistributedDataParallel\(MorphogeneticModel\(host\)\)"):
        MorphogeneticModel(DDP(th))
    with pytest.raises(HostError, match=r"DDPRewrapper builds .* Pass the model inside it \(module.module\)"):
        DDPRewrapper(DDP(host()))


def test_a_compiled_morphogenetic_model_folds_and_saves(tmp_path: Path) -> None:
    torch.manual_seed(0)
    th = TransformerHost(vocab_size=30, n_embd=16, n_head=2, n_layer=2, block_size=16)
    model = MorphogeneticModel(th, gates=QualityGates("permissive"))
    slot_id = model.slot_ids[0]
    model.slot(slot_id).germinate("mlp_small")
    fossilize(model.slot(slot_id))
    compiled = _compile(model.eval())
    ids = torch.randint(0, 30, (2, 8))
    assert plan_fold(compiled) == plan_fold(model)
    with torch.no_grad():
        assert torch.equal(fold(compiled)(ids), model(ids))
    save_seeds(compiled, tmp_path / "m.pt")
    assert read_seeds(tmp_path / "m.pt").kind == "morphogenetic"


# ---- the reported instances --------------------------------------------------------------------


def test_reported_compiled_handle_evaluates_and_folds() -> None:
    """(a) of the report: evaluate_injected and fold raised "OptimizedModule has no ... slots"."""
    net = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 3))
    inject_slots(net, {"0": "transformer"}, example_input=X, gates=QualityGates("permissive"))
    compiled = _compile(net)
    evaluation = evaluate_injected(compiled, [(X, Y)], score)
    assert evaluation == evaluate_injected(net, [(X, Y)], score)
    assert evaluation.samples == 4 and evaluation.contributions == {}
    assert type(fold(compiled)) is nn.Sequential


def test_reported_inject_into_compiled_handle_then_fold() -> None:
    """(b): slots landed on the wrapper, the inner state_dict had none, and fold raised a bare AssertionError."""
    net = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 3))
    compiled = _compile(net)
    slot = inject_slots(compiled, {"0": "transformer"}, example_input=X, gates=QualityGates("permissive"))[
        "_0"
    ]
    slot.germinate("lora")
    fossilize(slot)
    assert [k for k in net.state_dict() if "esper" in k] == [
        "esper_slots._0._extra_state",
        "esper_slots._0.seed.down.weight",
        "esper_slots._0.seed.up.weight",
    ]
    folded = fold(compiled, merge="auto")  # LoRA merges into the Linear: the original architecture
    assert [type(m) for m in folded] == [nn.Linear, nn.Linear]
    with torch.no_grad():
        assert torch.allclose(folded(X), net(X), atol=1e-6)


class Rebuilt(nn.Sequential):
    """A module whose deep copy is built afresh (its ``__dict__`` entries are not copied)."""

    def __deepcopy__(self, memo: dict) -> Rebuilt:
        return Rebuilt(*(copy.deepcopy(m, memo) for m in self))


def test_fold_of_a_model_whose_copy_loses_its_slots_is_a_clear_error() -> None:
    net = Rebuilt(nn.Linear(16, 16), nn.Linear(16, 3))
    grow(net)
    with pytest.raises(FoldError, match=r"lost its injected slots .* fold\(model, inplace=True\)"):
        fold(net)
    folded = fold(net, inplace=True)
    assert isinstance(folded[0], FoldedSeed)


# ---- a target replaced after injection ---------------------------------------------------------


def test_a_replaced_target_is_named_by_every_function_that_would_miss_its_slot(tmp_path: Path) -> None:
    net = grown()
    net[0] = nn.Linear(16, 16)  # what PEFT's merge_and_unload does to a LoRA layer
    match = r"target '0' of slot '_0' was replaced .* now a torch\.nn\.Linear there.*fold first, then merge"
    for call in (
        lambda: evaluate_injected(net, [(X, Y)], score),
        lambda: fold(net),
        lambda: plan_fold(net),
        lambda: save_seeds(net, tmp_path / "s.pt"),
        lambda: remove_slots(net),
        lambda: alpha_overrides(net, {}).__enter__(),
    ):
        with pytest.raises(HostError, match=match):
            call()
    assert not (tmp_path / "s.pt").exists()
    slots = remove_slots(net, discard_seeds=True)  # the explicit way out
    assert slots["_0"].stage is SeedStage.FOSSILIZED and get_injection(net) is None


# ---- a folded seed forwards data, not methods ------------------------------------------------


def test_folded_seed_reads_data_attributes_of_its_base_layer_but_not_its_methods() -> None:
    folded = fold(grown())
    seed = folded[0]
    assert isinstance(seed, FoldedSeed)
    assert seed.weight is seed.base_layer.weight and seed.in_features == 16
    assert not hasattr(seed, "reset_parameters")  # would reset the base layer, not the folded seed
    with pytest.raises(AttributeError, match=r"method 'extra_repr'|method 'reset_parameters'"):
        seed.reset_parameters()  # type: ignore[operator]
    assert seed.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None) is seed


def test_messages_name_the_wrapper_and_the_paths_inside_it() -> None:
    with pytest.raises(FoldError, match=r"^torch\.nn\.Sequential inside a DataParallel has no seed slots"):
        fold(nn.DataParallel(host()))
    with pytest.raises(HostError, match=r"evaluate_injected: torch\.nn\.Sequential inside a torch\.compile"):
        evaluate_injected(_compile(host()), [(X, Y)], score)
    with pytest.raises(HostError, match=r"'_orig_mod\.0' does not exist .*\(the paths of model\._orig_mod"):
        inject_slots(_compile(host()), {"_orig_mod.0": "transformer"}, example_input=X)
