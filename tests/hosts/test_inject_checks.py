"""What inject_slots, remove_slots and evaluate_injected check, kind by kind.

Each kind comes from a new user's report (the reported case is the test named ``..._report``):
a dim the target layer contradicts, default slot ids for numeric paths, removing slots that
hold seeds, unknown slot options, and model inputs that are not one tensor.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parameter import is_lazy

from esper_core._inject_probe import declared_width
from esper_core._slot_ids import SLOT_ID_RE, default_slot_id
from esper_core._slot_options import slot_option_names
from esper_core.errors import HostError
from esper_core.gates import QualityGates
from esper_core.hosts import CNNHost
from esper_core.inject import (
    SLOTS_ATTRIBUTE,
    InjectionTarget,
    alpha_overrides,
    evaluate_injected,
    get_injection,
    inject_slots,
    remove_slots,
)
from esper_core.model import MorphogeneticModel
from esper_core.slot_state import SlotConfig
from esper_core.stages import LIVE, SeedStage

from .conftest import drive


def _copied(value: Any) -> Any:
    # A lazy layer's parameter cannot be cloned before it is initialised; a slot's extra state is text.
    return value.clone() if isinstance(value, torch.Tensor) and not is_lazy(value) else value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and not is_lazy(a):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a is b or a == b


def _untouched(model: nn.Module) -> dict[str, Any]:
    """What a refused call must leave alone: every tensor, the instance forwards, the injection."""
    return {
        "state": {k: _copied(v) for k, v in model.state_dict().items()},
        "forwards": {name: vars(m).get("forward") for name, m in model.named_modules()},
        "injection": get_injection(model),
        "slots": getattr(model, SLOTS_ATTRIBUTE, None),
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["state"].keys() == b["state"].keys()
        and all(_equal(a["state"][k], b["state"][k]) for k in a["state"])
        and a["forwards"] == b["forwards"]
        and a["injection"] is b["injection"]
        and a["slots"] is b["slots"]
    )


# ---- 1. a dim the target layer contradicts ----------------------------------------------------------------


def test_wrong_dim_on_a_conv_without_example_input_is_refused_at_injection_report() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
    before = _untouched(net)
    with pytest.raises(
        HostError, match=r"dim 16 given for '0' does not match its Conv2d: out_channels is 8.*pass dim=8"
    ):
        inject_slots(net, [InjectionTarget("0", "cnn", dim=16, slot_id="c0")])
    assert _same(before, _untouched(net))


# (layer, topology, its width on the topology's feature axis, an input for it)
DECLARING: dict[str, tuple[Any, str, int, Any]] = {
    "Conv2d": (lambda: nn.Conv2d(3, 8, 1), "cnn", 8, lambda: torch.randn(2, 3, 4, 4)),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(3, 6, 2), "cnn", 6, lambda: torch.randn(2, 3, 4, 4)),
    "LazyConv2d": (lambda: nn.LazyConv2d(5, 1), "cnn", 5, lambda: torch.randn(2, 3, 4, 4)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(7), "cnn", 7, lambda: torch.randn(2, 7, 4, 4)),
    "InstanceNorm2d": (lambda: nn.InstanceNorm2d(7), "cnn", 7, lambda: torch.randn(2, 7, 4, 4)),
    "GroupNorm": (lambda: nn.GroupNorm(2, 6), "cnn", 6, lambda: torch.randn(2, 6, 4, 4)),
    "Linear": (lambda: nn.Linear(4, 10), "transformer", 10, lambda: torch.randn(2, 3, 4)),
    "Bilinear": (lambda: nn.Bilinear(4, 4, 9), "transformer", 9, lambda: (torch.randn(2, 3, 4),) * 2),
    "LayerNorm": (lambda: nn.LayerNorm(6), "transformer", 6, lambda: torch.randn(2, 3, 6)),
    "RMSNorm": (lambda: nn.RMSNorm(6), "transformer", 6, lambda: torch.randn(2, 3, 6)),
    "Embedding": (lambda: nn.Embedding(20, 11), "transformer", 11, lambda: torch.randint(0, 20, (2, 3))),
}


class Holder(nn.Module):
    """A user's model with the layer under test as its child ``layer``."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, *x: torch.Tensor) -> Any:
        return self.layer(*x)


@pytest.mark.parametrize("name", list(DECLARING))
def test_every_declaring_layer_checks_a_given_dim_and_accepts_its_own(name: str) -> None:
    make, topology, width, example = DECLARING[name]
    model = Holder(make())
    before = _untouched(model)
    with pytest.raises(HostError) as info:
        inject_slots(model, [InjectionTarget("layer", topology, dim=width + 3)])
    message = str(info.value)
    assert f"dim {width + 3} given for 'layer'" in message and f"is {width}" in message
    assert f"pass dim={width}" in message
    assert _same(before, _untouched(model))
    # A contradicting dim is refused before the probe runs, with or without an example input.
    with pytest.raises(HostError, match=f"dim {width + 3} given for 'layer'"):
        inject_slots(model, [InjectionTarget("layer", topology, dim=width + 3)], example_input=example())
    assert _same(before, _untouched(model))
    slots = inject_slots(model, [InjectionTarget("layer", topology, dim=width)], example_input=example())
    assert slots["layer"].dim == width  # the probe agrees with the declared width


def test_declared_width_reads_only_layers_that_declare_one() -> None:
    assert declared_width(nn.Conv1d(2, 5, 1)) == ("out_channels", 5, "channels")
    assert declared_width(nn.Linear(2, 3)) == ("out_features", 3, "last")
    assert declared_width(nn.LayerNorm((4, 6))) == ("normalized_shape[-1]", 6, "last")
    for other in (nn.Sequential(nn.Conv2d(1, 4, 1)), nn.ReLU(), nn.Identity(), nn.LazyBatchNorm2d()):
        assert declared_width(other) is None  # a container, no width, an uninitialised lazy layer


def test_a_layer_whose_declared_axis_is_not_the_feature_axis_is_not_second_guessed(
    permissive: QualityGates,
) -> None:
    """A Conv1d's out_channels is axis 1; a transformer slot's feature axis is the last one
    (here the conv's length axis), so the given dim is the length and must be accepted."""
    torch.manual_seed(0)
    model = Holder(nn.Conv1d(4, 8, 1))
    x = torch.randn(2, 4, 5)  # the conv outputs (2, 8, 5): a (B, T, D) tensor with D = 5
    slots = inject_slots(model, [InjectionTarget("layer", "transformer", dim=5)], gates=permissive)
    slots["layer"].germinate("toy_linear")
    drive(slots["layer"], SeedStage.BLENDING)
    slots["layer"].step_epoch()
    assert model(x).shape == (2, 8, 5)


def test_a_container_target_is_not_read_for_a_width(permissive: QualityGates) -> None:
    """A container declares nothing (its last layer need not be its output): its dim is taken
    as given, and here it is right although its first layer declares another width."""
    body = nn.Sequential(nn.Conv2d(3, 16, 1), nn.Conv2d(16, 4, 1))
    slots = inject_slots(Holder(body), [InjectionTarget("layer", "cnn", dim=4)], gates=permissive)
    assert slots["layer"].dim == 4


# ---- 2. default slot ids ---------------------------------------------------------------------------------


def test_numeric_paths_get_valid_default_slot_ids_report() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU())
    slots = inject_slots(model, {"0": "cnn"}, example_input=torch.zeros(1, 1, 2, 2))
    assert list(slots) == ["_0"] and slots["_0"].dim == 4


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("layers.0.mlp", "layers_0_mlp"),  # a path that was valid before keeps its id
        ("stem", "stem"),
        ("0", "_0"),
        ("3.conv", "_3_conv"),
        ("blocks.my-layer", "blocks_my_layer"),
        ("", "_root"),
        ("é.x", "__x"),
        ("a" * 300, "_" + "a" * 127),
    ],
)
def test_default_slot_id(path: str, expected: str) -> None:
    assert default_slot_id(path) == expected
    assert SLOT_ID_RE.match(expected) and len(expected) <= 128


def test_the_default_id_of_an_identifier_path_is_unchanged() -> None:
    """Checkpoints and fixtures name slots by the old default: dots replaced by underscores."""
    for path in ("features", "layer1.0.conv2", "transformer.h.1.mlp.c_proj", "_private.x9"):
        assert default_slot_id(path) == path.replace(".", "_")


def test_every_child_name_torch_accepts_gets_a_usable_slot_id() -> None:
    names = ["0", "12", "conv-1", "a b", "üx", "x" * 200, "_", "9lives"]
    model = nn.Sequential()
    for name in names:
        model.add_module(name, nn.Identity())
    x = torch.randn(1, 2, 3, 3)
    slots = inject_slots(model, dict.fromkeys(names, "cnn"), example_input=x)
    assert len(slots) == len(names) and all(SLOT_ID_RE.match(s) for s in slots)
    assert torch.equal(model(x), x)
    inject_root = nn.Sequential(nn.Conv2d(2, 3, 1))
    assert list(inject_slots(inject_root, {"": "cnn"}, example_input=x)) == ["_root"]


def test_a_bad_explicit_slot_id_says_how_to_fix_it() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 1))
    before = _untouched(model)
    for bad, fixed in (("a.b", "a_b"), ("1st", "_1st"), ("s" * 200, "_" + "s" * 127)):
        with pytest.raises(HostError) as info:
            inject_slots(model, [InjectionTarget("0", "cnn", dim=4, slot_id=bad)])
        assert f"slot_id={fixed!r}" in str(info.value) and "not starting with a digit" in str(info.value)
    with pytest.raises(HostError, match=r"\['s'\] repeated\): give the targets distinct"):
        inject_slots(model, [InjectionTarget("0", "cnn", 4, "s"), InjectionTarget("", "cnn", 4, "s")])
    assert _same(before, _untouched(model))


# ---- 3. remove_slots and seeds ---------------------------------------------------------------------------


class TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x)))


def _grown(stage: SeedStage) -> tuple[nn.Module, nn.ModuleDict]:
    torch.manual_seed(0)
    model = TwoConvs()
    slots = inject_slots(model, {"a": "cnn", "b": "cnn"}, example_input=torch.zeros(1, 3, 4, 4),
                         gates=QualityGates("permissive"), embargo_epochs=1)  # fmt: skip
    slots["b"].germinate("toy_conv")
    if stage in (SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.DORMANT):
        slots["b"].prune("test", "tester")
        while slots["b"].stage is not stage:
            slots["b"].step_epoch()
    else:
        drive(slots["b"], stage)
    return model, slots


def test_remove_slots_refuses_to_throw_a_fossilized_seed_away_report() -> None:
    model, slots = _grown(SeedStage.FOSSILIZED)
    before = _untouched(model)
    with pytest.raises(HostError) as info:
        remove_slots(model)
    message = str(info.value)
    assert "'b' (FOSSILIZED)" in message and "'a'" not in message
    assert "esper_core.fold(model)" in message and "remove_slots(model, discard_seeds=True)" in message
    assert _same(before, _untouched(model)) and slots["b"].stage is SeedStage.FOSSILIZED


@pytest.mark.parametrize("stage", sorted(LIVE, key=int), ids=lambda s: s.name)
def test_every_live_stage_keeps_its_seed_unless_discarded(stage: SeedStage) -> None:
    model, slots = _grown(stage)
    x = torch.randn(2, 3, 4, 4)
    before = _untouched(model)
    with pytest.raises(HostError, match=rf"'b' \({stage.name}\)"):
        remove_slots(model)
    assert _same(before, _untouched(model))
    for bad in (1, "yes", None):
        with pytest.raises(HostError, match="discard_seeds must be True or False"):
            remove_slots(model, discard_seeds=bad)  # type: ignore[arg-type]
    assert _same(before, _untouched(model))
    removed = remove_slots(model, discard_seeds=True)
    assert removed is slots and removed["b"].stage is stage  # the caller still has the seed
    assert get_injection(model) is None and not hasattr(model, SLOTS_ATTRIBUTE)
    torch.manual_seed(0)
    assert torch.equal(model(x), TwoConvs()(x))


@pytest.mark.parametrize("stage", [SeedStage.DORMANT, SeedStage.PRUNED, SeedStage.EMBARGOED], ids=str)
def test_slots_without_a_seed_come_off_without_asking(stage: SeedStage) -> None:
    model, slots = _grown(stage)
    assert slots["b"].stage is stage and slots["b"].seed is None
    assert remove_slots(model) is slots and get_injection(model) is None


# ---- 4. slot options -------------------------------------------------------------------------------------


def test_unknown_slot_options_are_named_with_the_accepted_ones_report() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 1))
    before = _untouched(model)
    with pytest.raises(HostError) as info:
        inject_slots(model, {"0": "cnn"}, example_input=torch.zeros(1, 1, 2, 2), embargo=3)
    assert "inject_slots: unknown slot option(s) ['embargo']" in str(info.value)
    assert "'embargo_epochs'" in str(info.value)
    assert _same(before, _untouched(model))
    host = CNNHost(10, n_blocks=1, base_channels=4)
    host_before = {k: v.clone() for k, v in host.state_dict().items()}
    with pytest.raises(HostError, match=r"MorphogeneticModel: unknown slot option\(s\) \['embargo'\]"):
        MorphogeneticModel(host, embargo=3)
    with pytest.raises(HostError, match=r"slot options \['dim'\] come from the host's injection points"):
        MorphogeneticModel(host, dim=8)
    assert all(torch.equal(v, host_before[k]) for k, v in host.state_dict().items())


def test_the_accepted_slot_options_are_the_slot_settings_and_each_one_works() -> None:
    identity = {"slot_id", "topology", "dim"}
    settings = [f.name for f in attrs.fields(SlotConfig) if f.name not in identity]
    assert sorted(slot_option_names()) == sorted(settings)
    valid = {
        "gates": QualityGates("permissive"),
        "embargo_epochs": 2,
        "auto_advance": (),
        "isolate_blending": False,
        "activity_decay": 0.25,
        "max_seed_params": 10_000,
    }
    assert set(valid) == set(slot_option_names())
    for name, value in valid.items():
        model = nn.Sequential(nn.Conv2d(1, 4, 1))
        inject_slots(model, {"0": "cnn"}, example_input=torch.zeros(1, 1, 2, 2), **{name: value})
        MorphogeneticModel(CNNHost(10, n_blocks=1, base_channels=4), **{name: value})


# ---- 5. inputs that are not one tensor -------------------------------------------------------------------


class Tokens(nn.Module):
    """A Hugging Face-style classifier: ``forward(input_ids, attention_mask=None)``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = F.gelu(self.mix(self.embed(input_ids)))
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return self.head(pooled)


def _score(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(-1) == y).float()


def _tokens(permissive: QualityGates, example: Any) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = Tokens().eval()
    slots = inject_slots(model, {"mix": "transformer"}, example_input=example, gates=permissive)
    slots["mix"].germinate("toy_linear")
    drive(slots["mix"], SeedStage.HOLDING)
    with torch.no_grad():
        for p in slots["mix"].seed_parameters():
            p.normal_(0, 0.5)
    ids = torch.randint(0, 30, (6, 5))
    mask = torch.ones(6, 5, dtype=torch.long)
    mask[:3, 3:] = 0
    return model, ids, mask


@pytest.mark.parametrize("form", ["mapping", "tuple", "list"])
def test_evaluate_injected_takes_keyword_and_positional_inputs_report(permissive, form: str) -> None:
    ids = torch.randint(0, 30, (2, 5))
    examples = {
        "mapping": {"input_ids": ids, "attention_mask": torch.ones(2, 5, dtype=torch.long)},
        "tuple": (ids, torch.ones(2, 5, dtype=torch.long)),
        "list": [ids, torch.ones(2, 5, dtype=torch.long)],
    }
    model, ids, mask = _tokens(permissive, examples[form])
    assert model.esper_slots["mix"].dim == 8
    y = model(ids, mask).argmax(-1)
    y[0] = (y[0] + 1) % 3  # not every prediction right
    inputs: Any = {
        "mapping": {"input_ids": ids, "attention_mask": mask},
        "tuple": (ids, mask),
        "list": [ids, mask],
    }[form]
    evaluation = evaluate_injected(model, [(inputs, y)], _score)
    with torch.no_grad():
        main = _score(model(ids, mask), y).mean().item() * 100
        with alpha_overrides(model, {"mix": torch.zeros(())}):
            off = _score(model(ids, mask), y).mean().item() * 100
    assert evaluation.score == pytest.approx(main) and evaluation.samples == 6
    assert evaluation.contributions["mix"] == pytest.approx(main - off)


def test_flags_pass_through_and_bad_inputs_are_described_not_printed(permissive) -> None:
    ids = torch.randint(0, 30, (2, 5))
    model, ids, _mask = _tokens(permissive, {"input_ids": ids, "attention_mask": None})
    y = torch.zeros(6, dtype=torch.long)
    evaluate_injected(model, [({"input_ids": ids, "attention_mask": None}, y)], _score)
    before = _untouched(model)
    secret = torch.full((6, 5), 123456.0)
    bad_batches = [
        ([((ids, secret[:4]), y)], r"input args\[1\] is Tensor\(4, 5\) torch.float32; every input"),
        ([({"input_ids": ids, "extra": [secret]}, y)], r"input kwargs\['extra'\] is list\(Tensor\(6, 5\)\)"),
        ([(secret.to_sparse(), y)], r"is Tensor\(6, 5\) torch.float32 sparse_coo"),
        (
            [(ids, secret.to_sparse())],
            r"targets must be a dense Tensor.*got Tensor\(6, 5\) torch.float32 sparse",
        ),
        ([({3: secret}, y)], r"inputs must be a Tensor .*; got dict\(3=Tensor\(6, 5\)\)"),
        ([(object(), y)], r"inputs must be a Tensor .*wrap one argument"),
        ([(ids, y, y)], r"each batch must be a pair \(inputs, targets\); got tuple\(Tensor\(6, 5\)"),
        ([secret], r"each batch must be a pair \(inputs, targets\); got Tensor\(6, 5\) torch.float32"),
        (secret, r"each batch must be a pair"),  # a tensor iterates over its rows
    ]
    for batches, needle in bad_batches:
        with pytest.raises(HostError, match=needle) as info:
            evaluate_injected(model, batches, _score)
        assert "123456" not in str(info.value) and "tensor(" not in str(info.value)
    assert _same(before, _untouched(model))


def test_inject_slots_takes_a_mapping_example_input_and_describes_a_failing_one() -> None:
    torch.manual_seed(0)
    model = Tokens()
    ids = torch.randint(0, 30, (2, 5))
    before = _untouched(model)
    with pytest.raises(HostError) as info:
        inject_slots(model, {"mix": "transformer"}, example_input={"input_ids": ids.float() + 0.123})
    message = str(info.value)
    assert re.search(r"example_input dict\(input_ids=Tensor\(2, 5\)\) failed", message), message
    assert "0.123" not in message and "tensor(" not in message
    with pytest.raises(HostError, match=r"example_input must be a Tensor .*; got 3 \(wrap one argument"):
        inject_slots(model, {"mix": "transformer"}, example_input=3)
    assert _same(before, _untouched(model))
    slots = inject_slots(model, {"mix": "transformer"}, example_input={"input_ids": ids})
    assert slots["mix"].dim == 8


def test_morphogenetic_model_evaluate_takes_one_tensor_and_says_so() -> None:
    model = MorphogeneticModel(CNNHost(10, n_blocks=1, base_channels=4))
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    assert model.evaluate([(x, y)], _score).samples == 2
    with pytest.raises(HostError, match=r"inputs must be one Tensor here .*got tuple\(Tensor\(2, 3, 8, 8\)"):
        model.evaluate([((x,), y)], _score)


# ---- 6. a target called twice per forward ----------------------------------------------------------------


def test_a_target_called_twice_per_forward_applies_its_slot_twice(permissive: QualityGates) -> None:
    """Documented in inject_slots and the user guide: inject at a module that runs once."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.block(x))

    model = Twice()
    slots = inject_slots(
        model, {"block": "transformer"}, example_input=torch.zeros(1, 2, 4), gates=permissive
    )
    slots["block"].germinate("toy_linear")
    drive(slots["block"], SeedStage.HOLDING)
    calls: list[str] = []
    slots["block"].register_forward_hook(lambda *_a: calls.append("block"))
    model(torch.zeros(1, 2, 4))
    assert calls == ["block", "block"]
