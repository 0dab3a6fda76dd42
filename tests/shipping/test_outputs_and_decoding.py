"""Targets that return tuples or mappings, and the cached-decoding guard (fast tier, toy models)."""

from __future__ import annotations

import copy
import pickle
from collections import OrderedDict, namedtuple

import pytest
import torch
from torch import nn

from esper_core._decoding import cached_length, install_guards
from esper_core._outputs import describe_output, replace_output, select_output
from esper_core.alpha import BlendAlgorithm
from esper_core.errors import HostError
from esper_core.folding import fold
from esper_core.inject import InjectionTarget, inject_slots, remove_slots
from esper_core.stages import SeedStage

from .conftest import grow

S = SeedStage
Pair = namedtuple("Pair", ["hidden", "weights"])


@pytest.mark.parametrize(
    ("out", "key"),
    [
        ((torch.ones(2), None, torch.zeros(1)), 0),
        ([torch.zeros(1), torch.ones(2)], 1),
        (Pair(torch.ones(2), None), "hidden"),
        (Pair(torch.ones(2), None), 0),
        ({"a": None, "b": torch.ones(2)}, 0),  # the i-th field that is set, as ModelOutput indexes
        (OrderedDict(a=torch.zeros(1), b=torch.ones(2)), "b"),
    ],
)
def test_select_and_replace_keep_the_output_type(out, key) -> None:  # type: ignore[no-untyped-def]
    selected = select_output(out, key, where="m")
    assert torch.equal(selected, torch.ones(2))
    new = replace_output(out, key, torch.full((2,), 5.0))
    assert type(new) is type(out)
    assert torch.equal(select_output(new, key, where="m"), torch.full((2,), 5.0))
    assert torch.equal(select_output(out, key, where="m"), torch.ones(2))  # the original is untouched
    others = [v for v in (out.values() if isinstance(out, dict) else out)]
    news = [v for v in (new.values() if isinstance(new, dict) else new)]
    assert sum(a is not b for a, b in zip(others, news, strict=True)) == 1


@pytest.mark.parametrize(
    ("out", "key", "message"),
    [
        ((torch.ones(1), None), 1, "output=1 is None, not a Tensor"),
        ((torch.ones(1),), 3, "has no element output=3"),
        ({"a": torch.ones(1)}, "b", "has no element output='b'"),
        ((torch.ones(1),), "hidden", "has no element output='hidden'"),
        (torch.ones(1), 0, "has no element output=0"),
        ((torch.ones(2, 3), None), None, r"returned tuple\(Tensor\(2, 3\), None\).*pass output="),
    ],
)
def test_select_names_the_module_and_the_structure(out, key, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HostError, match=message):
        select_output(out, key, where="target 'layer'")


class Attention(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(h), h.mean(-1)


class Block(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.attn = Attention(d)
        self.mlp = nn.Linear(d, d)

    def forward(self, h: torch.Tensor, past_key_values: object = None) -> torch.Tensor:
        a, _weights = self.attn(h)
        return h + self.mlp(torch.tanh(a))


class Decoder(nn.Module):
    """The shape of a Hugging Face decoder: every level takes ``past_key_values``."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, d)
        self.block = Block(d)
        self.head = nn.Linear(d, 20)

    def forward(self, ids: torch.Tensor, past_key_values: object = None) -> dict[str, torch.Tensor]:
        return {"logits": self.head(self.block(self.emb(ids), past_key_values=past_key_values))}


class Cache:
    def __init__(self, n: int) -> None:
        self.n = n

    def get_seq_length(self) -> int:
        return self.n


def test_a_slot_on_a_tuple_element(permissive) -> None:
    torch.manual_seed(0)
    net = Decoder()
    with pytest.raises(HostError, match=r"returns tuple\(Tensor\(1, 3, 8\), Tensor\(1, 3\)\).*output=0"):
        inject_slots(net, {"block.attn": "transformer"}, example_input=torch.randint(0, 20, (1, 3)))
    with pytest.raises(HostError, match="output must be None"):
        inject_slots(net, [InjectionTarget("block.attn", "transformer", dim=8, output=-1)])
    slots = inject_slots(
        net,
        [InjectionTarget("block.attn", "transformer", output=0)],
        example_input=torch.randint(0, 20, (1, 3)),
        gates=permissive,
    )
    assert slots["block_attn"].dim == 8
    ids = torch.randint(0, 20, (2, 5))
    before = net(ids)["logits"]
    grow(slots["block_attn"], "ship_mlp")
    net.eval()
    h = net.emb(ids)
    attn_out, weights = net.block.attn(h)
    plain_out, plain_weights = Attention.forward(net.block.attn, h)
    assert torch.equal(weights, plain_weights)  # the other element is untouched
    assert torch.equal(attn_out, slots["block_attn"](plain_out))
    assert not torch.allclose(net(ids)["logits"], before)


def _decoder_with(permissive, blueprint: str, stage: S = S.FOSSILIZED, **kw) -> tuple[Decoder, nn.ModuleDict]:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = Decoder()
    slots = inject_slots(
        net, {"block.mlp": "transformer"}, example_input=torch.randint(0, 20, (1, 3)), gates=permissive
    )
    grow(slots["block_mlp"], blueprint, target=stage, **kw)
    return net.eval(), slots


def test_a_seed_that_mixes_positions_refuses_a_cached_step(permissive) -> None:
    net, _slots = _decoder_with(permissive, "ship_mix", S.BLENDING)
    ids = torch.randint(0, 20, (2, 4))
    net(ids)
    net(ids, past_key_values=Cache(0))  # the first step of generate(): an empty cache
    with pytest.raises(
        HostError,
        match=r"cached decoding refused at 'the model'.*holds 4 earlier.*'block_mlp' \(BLENDING\): blueprint transformer:ship_mix mixes positions.*use_cache=False",
    ):
        net(ids[:, :1], past_key_values=Cache(4))
    # only the outermost module is guarded: inner layers see the cache while the pass fills it
    net.block(net.emb(ids), Cache(2))
    assert not net.block._forward_pre_hooks


@pytest.mark.parametrize(
    ("blueprint", "stage", "algorithm", "refused"),
    [
        ("ship_mlp", S.FOSSILIZED, BlendAlgorithm.ADD, None),
        ("ship_mlp", S.HOLDING, BlendAlgorithm.MULTIPLY, None),
        ("ship_mlp", S.BLENDING, BlendAlgorithm.GATE, "GATE blend gate averages over earlier positions"),
        ("ship_undeclared", S.FOSSILIZED, BlendAlgorithm.ADD, "does not declare position_wise=True"),
        ("ship_mix", S.TRAINING, BlendAlgorithm.ADD, None),  # straight-through: the host's output exactly
        ("ship_mix", S.GERMINATED, BlendAlgorithm.ADD, None),
    ],
)
def test_which_seeds_refuse(
    permissive, blueprint: str, stage: S, algorithm: BlendAlgorithm, refused: str | None
) -> None:
    net, _slots = _decoder_with(permissive, blueprint, stage, algorithm=algorithm)
    ids = torch.randint(0, 20, (2, 1))
    if refused is None:
        net(ids, past_key_values=Cache(3))
    else:
        with pytest.raises(HostError, match=refused):
            net(ids, past_key_values=Cache(3))


def test_guards_follow_copies_and_come_off_with_the_slots(permissive) -> None:
    net, slots = _decoder_with(permissive, "ship_mix", S.GERMINATED)
    copied = copy.deepcopy(net)
    pickled = pickle.loads(pickle.dumps(net))
    grow_ids = torch.randint(0, 20, (1, 1))
    slots["block_mlp"].prune("test", "test")  # the original's seed is gone ...
    for other in (copied, pickled):  # ... the copies' are not: their guards ask their own slots
        slot = other.esper_slots["block_mlp"]
        slot.advance(S.TRAINING)
        slot.record_accuracy(50.0)
        slot.advance(S.BLENDING)
        with pytest.raises(HostError, match="refused"):
            other(grow_ids, past_key_values=Cache(2))
    net(grow_ids, past_key_values=Cache(2))
    remove_slots(copied, discard_seeds=True)
    copied(grow_ids, past_key_values=Cache(2))
    assert all(not m._forward_pre_hooks for m in copied.modules())


def test_a_folded_model_keeps_the_guard_only_for_seeds_that_mix(permissive) -> None:
    mixing, _ = _decoder_with(permissive, "ship_mix")
    folded = fold(mixing)
    with pytest.raises(
        HostError, match=r"folded seed 'block_mlp': blueprint transformer:ship_mix mixes positions"
    ):
        folded(torch.randint(0, 20, (1, 1)), past_key_values=Cache(3))
    wise, _ = _decoder_with(permissive, "ship_mlp")
    folded = fold(wise)
    folded(torch.randint(0, 20, (1, 1)), past_key_values=Cache(3))
    assert not folded._forward_pre_hooks and not folded.block._forward_pre_hooks


def test_cached_length_reads_the_cache_formats() -> None:
    assert cached_length(None) == 0
    assert cached_length(Cache(7)) == 7
    assert cached_length(()) == 0
    assert cached_length(((torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4)),)) == 5
    assert cached_length(object()) == 1  # unknown: counted as non-empty, so the guard errs on refusing


def test_modules_without_a_cache_argument_get_no_guard() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    assert install_guards(net, ["0", "1"], []) == ()


def test_describe_output_is_short() -> None:
    assert (
        describe_output((torch.ones(2, 3), None, [torch.ones(1)]))
        == "tuple(Tensor(2, 3), None, list(Tensor(1,)))"
    )
