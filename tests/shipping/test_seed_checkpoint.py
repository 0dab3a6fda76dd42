"""Seed-only checkpoints: small files that put the grown slots back on a fresh copy of the host."""

from __future__ import annotations

import io
from pathlib import Path

import attrs
import pytest
import torch

from esper_core.alpha import BlendAlgorithm
from esper_core.errors import CheckpointError, HostError
from esper_core.hosts import CNNHost
from esper_core.inject import get_injection, inject_slots
from esper_core.model import MorphogeneticModel
from esper_core.seed_checkpoint import SEEDS_FORMAT, load_seeds, read_seeds, save_seeds
from esper_core.stages import SeedStage

from .conftest import grow
from .test_fold import TinyNet

S = SeedStage


def _host() -> CNNHost:
    torch.manual_seed(0)
    return CNNHost(num_classes=5, n_blocks=2, base_channels=8)


def _grown_model(permissive) -> MorphogeneticModel:  # type: ignore[no-untyped-def]
    model = MorphogeneticModel(_host(), gates=permissive, embargo_epochs=3)
    grow(model.slot("r0c0"), "ship_noisy_conv", seed=1)
    grow(model.slot("r1c0"), "ship_affine_conv", target=S.BLENDING, algorithm=BlendAlgorithm.GATE, seed=2)
    model.slot("r0c1").germinate("ship_noisy_conv")
    model.prune("r0c1", "test", "test")
    model.step_epoch()  # r0c1 EMBARGOED, r1c0 mid-ramp
    return model


def test_morphogenetic_seeds_round_trip_onto_a_fresh_host(permissive, tmp_path: Path) -> None:
    model = _grown_model(permissive).eval()
    path = tmp_path / "seeds.pt"
    save_seeds(model, path)
    loaded = load_seeds(_host(), path, gates=permissive, embargo_epochs=3)
    assert isinstance(loaded, MorphogeneticModel)
    loaded.eval()
    for slot_id in model.slot_ids:
        assert loaded.slot(slot_id).state == model.slot(slot_id).state
    x = torch.randn(2, 3, 12, 12)
    assert torch.equal(loaded(x), model(x))
    # the lifecycle continues identically: the ramp and the embargo clock
    for _ in range(3):
        model.step_epoch()
        loaded.step_epoch()
    assert loaded.slot("r1c0").alpha == model.slot("r1c0").alpha
    assert loaded.slot("r0c1").stage is model.slot("r0c1").stage


def test_injected_seeds_are_small_and_round_trip(permissive, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyNet()
    host_state = {k: v.clone() for k, v in net.state_dict().items()}
    slots = inject_slots(net, {"body.1.conv": "cnn"}, example_input=torch.randn(1, 3, 8, 8), gates=permissive)
    grow(slots["body_1_conv"], "ship_affine_conv", target=S.HOLDING)
    net.eval()
    path = tmp_path / "seeds.pt"
    save_seeds(net, path)
    full = io.BytesIO()
    torch.save(net.state_dict(), full)
    assert path.stat().st_size < 0.6 * full.getbuffer().nbytes  # 72 seed values beside a 1.4k-parameter host
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == SEEDS_FORMAT and raw["kind"] == "injected"
    assert all(not k.startswith(("stem", "body.0", "head")) for k in raw["state_dict"])

    fresh = TinyNet()
    fresh.load_state_dict(host_state)
    assert load_seeds(fresh, path, gates=permissive) is fresh
    fresh.eval()
    assert fresh.esper_slots["body_1_conv"].state == slots["body_1_conv"].state
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(fresh(x), net(x))


def test_a_different_host_is_refused_and_left_untouched(permissive, tmp_path: Path) -> None:
    model = _grown_model(permissive)
    path = tmp_path / "seeds.pt"
    save_seeds(model, path)
    other = _host()
    with torch.no_grad():
        other.classifier.bias.add_(1.0)
    with pytest.raises(CheckpointError, match="check_host_weights=False"):
        load_seeds(other, path, gates=permissive)
    loaded = load_seeds(other, path, gates=permissive, check_host_weights=False)
    assert loaded.slot("r0c0").stage is S.FOSSILIZED
    with pytest.raises(
        CheckpointError,
        match=r"CNNHost is not the host the seeds were saved from: \d[\d,]* parameters against",
    ):
        load_seeds(CNNHost(num_classes=5, n_blocks=2, base_channels=16), path)
    with pytest.raises(
        CheckpointError, match=r"saved from a esper_core\.hosts\.cnn\.CNNHost; this host is a .*TinyNet"
    ):
        load_seeds(TinyNet(), path)
    with pytest.raises(HostError, match="without slots"):
        load_seeds(loaded, path)


def test_a_bad_seed_tensor_leaves_the_host_without_slots(permissive, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyNet()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    slots = inject_slots(net, {"stem": "cnn"}, example_input=torch.randn(1, 3, 8, 8), gates=permissive)
    grow(slots["stem"], "ship_affine_conv")
    path = tmp_path / "seeds.pt"
    save_seeds(net, path)
    seeds = read_seeds(path)
    broken = dict(seeds.state_dict)
    broken["stem.seed.conv.weight"] = torch.zeros(8, 8, 2, 1)
    fresh = TinyNet()
    fresh.load_state_dict(state)
    with pytest.raises(CheckpointError, match=r"stem\.seed\.conv\.weight.*shape"):
        load_seeds(fresh, attrs.evolve(seeds, state_dict=broken), gates=permissive)
    assert get_injection(fresh) is None and not hasattr(fresh, "esper_slots")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other"), "'format': got 'other'"),
        (lambda d: d.update(version=9), "'version': got 9; accepted: 1"),
        (lambda d: d.update(kind="adapter"), "'kind': got 'adapter'"),
        (lambda d: d["host"].pop("weights"), "'host.weights' is missing"),
        (lambda d: d["slots"][0].update(dim="8"), r"'slots\[0\]\.dim': got '8'; accepted: int"),
        (lambda d: d["slots"][0].update(output=True), r"'slots\[0\]\.output'"),
        (lambda d: d.update(state_dict=[]), "'state_dict': got"),
    ],
)
def test_malformed_files_are_refused_naming_the_field(
    permissive, tmp_path: Path, change, message: str
) -> None:  # type: ignore[no-untyped-def]
    model = _grown_model(permissive)
    path = tmp_path / "seeds.pt"
    save_seeds(model, path)
    data = torch.load(path, weights_only=True)
    change(data)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=message):
        read_seeds(path)


def test_files_torch_cannot_read_safely_and_models_without_slots_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "seeds.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a seed-only checkpoint"):
        read_seeds(path)
    with pytest.raises(HostError, match="no seed slots"):
        save_seeds(TinyNet(), tmp_path / "x.pt")


def test_a_file_torch_cannot_read_safely_is_not_advised_to_be_read_unsafely(tmp_path) -> None:
    """torch's message suggests ``weights_only=False`` (running the file's code): not repeated."""
    from esper_core.errors import CheckpointError
    from esper_core.seed_checkpoint import read_seeds

    path = tmp_path / "seeds.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"expected a file written by esper_core\.save_seeds") as info:
        read_seeds(path)
    assert "weights_only` set to `False" not in str(info.value) and "False" not in str(info.value)
