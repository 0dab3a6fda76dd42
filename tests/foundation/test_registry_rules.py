"""The registry's rules, over fake entry points: who wins a name, what a refusal looks like,
provenance, what an unknown blueprint says to install, and allow-list parsing."""

from __future__ import annotations

import attrs
import pytest

from esper_core import registry as reg
from esper_core.errors import (
    BlueprintError,
    PluginLoadWarning,
    RegistryError,
    UnknownBlueprintError,
    UnknownTopologyError,
)
from esper_core.hookspecs import hookimpl
from esper_core.plugins import parse_allow_list
from esper_core.topology import Topology


def _infos() -> dict[str, object]:
    return {info.distribution: info for info in reg.plugin_report()}


@pytest.mark.parametrize("reverse", [False, True])
def test_a_shipped_pack_keeps_its_names_against_a_pack_that_sorts_first(fake_packs, fakes, reverse) -> None:
    shipped = fakes.entry("esper-blueprints-cnn", fakes.blueprints_plugin("s", fakes.scale_spec("depthwise")))
    newcomer = fakes.entry(
        "esper-blueprints-aaa",
        fakes.blueprints_plugin("n", fakes.scale_spec("depthwise"), fakes.scale_spec("aaa_gain")),
    )
    with pytest.warns(PluginLoadWarning, match="cnn:depthwise' refused"):
        fake_packs(*([newcomer, shipped][::-1] if reverse else [newcomer, shipped]))
        reg.get_registry()
    assert reg.provenance("cnn:depthwise").distribution == "esper-blueprints-cnn"
    assert reg.provenance("cnn:aaa_gain").distribution == "esper-blueprints-aaa"
    infos = _infos()
    assert infos["esper-blueprints-cnn"].refused == ()
    (refused,) = infos["esper-blueprints-aaa"].refused
    assert (
        "already registered by esper-blueprints-cnn 1.0" in refused and "esper-blueprints-aaa 1.0" in refused
    )


def test_a_topology_clash_never_displaces_the_core(fake_packs, fakes) -> None:
    mine = Topology(
        name="cnn",
        layout="(B, H, W, C)",
        ndim=4,
        feature_axis=3,
        reference_dim=8,
        description="nhwc",
        example_extent=(2, 2),
    )

    def esper_register_topologies(register):
        register(mine)

    module = fakes.blueprints_plugin("t", fakes.scale_spec("mine"))
    module.esper_register_topologies = hookimpl(esper_register_topologies)
    with pytest.warns(PluginLoadWarning):
        fake_packs(fakes.entry("aaa-topology", module))
        reg.get_registry()
    assert reg.get_topology("cnn").layout == "(B, C, H, W)"
    assert reg.provenance("cnn").distribution == "esper-core"
    assert [s.key for s in reg.list_blueprints()] == []  # cnn:mine targeted the refused topology
    assert len(_infos()["aaa-topology"].refused) == 2


def test_register_after_the_hook_returned_is_an_error(fake_packs, fakes) -> None:
    kept = []

    def esper_register_blueprints(register):
        kept.append(register)

    fake_packs(
        fakes.entry("late", fakes.plugin_module("late", esper_register_blueprints=esper_register_blueprints))
    )
    reg.get_registry()
    with pytest.raises(RegistryError, match="after the registration hook returned"):
        kept[0](fakes.scale_spec())


def test_provenance_names_distribution_version_and_plugin(fake_packs, fakes) -> None:
    fake_packs(fakes.entry("good-pack", fakes.blueprints_plugin("g", fakes.scale_spec()), version="1.2"))
    source = reg.provenance("cnn:scale")
    assert (source.distribution, source.version, source.plugin) == ("good-pack", "1.2", "good-pack:main")
    assert reg.provenance("transformer").distribution == "esper-core"
    with pytest.raises(UnknownBlueprintError, match="unknown blueprint 'nope'"):
        reg.provenance("cnn:nope")
    with pytest.raises(UnknownTopologyError):
        reg.provenance("rnn")
    with pytest.raises(RegistryError, match="needs 'topology:name'"):
        reg.provenance(3)  # type: ignore[arg-type]


def test_an_unknown_blueprint_says_what_to_install(fake_packs, fakes) -> None:
    broken = fakes.entry("broken-pack", None, version="2.0")
    broken.loader = lambda: (_ for _ in ()).throw(ImportError("No module named 'dep'"))
    with pytest.warns(PluginLoadWarning):
        fake_packs(
            broken, fakes.entry("old-pack", fakes.blueprints_plugin("o", fakes.scale_spec()), version="1.0")
        )
        reg.get_registry()
    with pytest.raises(UnknownBlueprintError) as missing:
        reg.get_blueprint("cnn", "fancy", distribution="esper-blueprints-fancy", version="0.3.1")
    assert "it came from esper-blueprints-fancy 0.3.1, which is not installed or not loaded" in str(
        missing.value
    )
    assert "pip install 'esper-blueprints-fancy==0.3.1'" in str(missing.value)
    assert (missing.value.distribution, missing.value.version) == ("esper-blueprints-fancy", "0.3.1")
    with pytest.raises(
        UnknownBlueprintError, match=r"installed broken-pack 2.0 failed to load: import failed"
    ):
        reg.get_blueprint("cnn", "gone", distribution="broken-pack", version="2.0")
    with pytest.raises(
        UnknownBlueprintError, match=r"install the recorded version: pip install 'old-pack==0.9'"
    ):
        reg.get_blueprint("cnn", "gone", distribution="old-pack", version="0.9")


def test_a_refused_blueprint_is_explained_when_looked_up(fake_packs, fakes) -> None:
    negative = attrs.evolve(fakes.scale_spec("negative"), param_count=lambda dim: -5)
    with pytest.warns(PluginLoadWarning, match="negative"):
        fake_packs(fakes.entry("neg-pack", fakes.blueprints_plugin("n", negative)))
        reg.get_registry()
    with pytest.raises(
        UnknownBlueprintError, match=r"neg-pack 1.0 registers it, but it was refused: .*returned -5"
    ):
        reg.get_blueprint("cnn", "negative")


def test_listing_leaves_out_a_count_broken_at_that_dim_and_strict_raises(
    fake_packs, fakes, monkeypatch
) -> None:
    odd = attrs.evolve(fakes.scale_spec("odd"), param_count=lambda dim: dim if dim % 2 == 0 else dim / 2)
    fake_packs(fakes.entry("odd-pack", fakes.blueprints_plugin("o", odd, fakes.scale_spec("fine"))))
    version = reg.registry_version()
    with pytest.warns(PluginLoadWarning, match=r"cnn:odd .*returned 4.5 \(float\).*left out of listings"):
        assert [s.name for s in reg.list_blueprints(dim=9)] == ["fine"]
    assert [s.name for s in reg.list_blueprints(dim=8)] == ["fine", "odd"]
    assert reg.registry_version() == version  # a listing never changes the registered set
    assert list(reg.get_registry().count_faults()) == [("cnn:odd", 9)]
    monkeypatch.setenv("ESPER_STRICT_PLUGINS", "1")
    reg.reset_registry()
    with pytest.raises(BlueprintError, match="cnn:odd"):
        reg.list_blueprints(dim=9)


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (
            "esper-blueprints-cnn, esper-blueprints-transformer",
            ("esper-blueprints-cnn", "esper-blueprints-transformer"),
        ),
        ("a\tb\nc", ("a", "b", "c")),
        (" Esper_Blueprints.CNN ,, esper-blueprints-cnn ", ("esper-blueprints-cnn",)),
        ("", ()),
        (" \n ", ()),
    ],
)
def test_allow_list_parsing(raw: str, names: tuple[str, ...]) -> None:
    assert parse_allow_list(raw) == names
