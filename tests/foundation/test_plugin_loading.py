"""Loading packs in isolation from (fake) entry points: failures are reported, not fatal."""

from __future__ import annotations

import pytest

from esper_core import registry as reg
from esper_core.errors import PluginLoadError
from esper_core.hookspecs import hookimpl


def _infos() -> dict[str, object]:
    return {info.distribution: info for info in reg.plugin_report()}


def _boom():
    raise ImportError("No module named 'missing_dependency'")


def test_good_pack_registers_and_is_attributed(fake_packs, fakes) -> None:
    fake_packs(fakes.entry("good-pack", fakes.blueprints_plugin("good", fakes.scale_spec()), version="1.2"))
    spec = reg.get_blueprint("cnn", "scale")
    assert reg.get_registry().source(spec).distribution == "good-pack"
    info = _infos()["good-pack"]
    assert info.loaded and info.version == "1.2"
    assert info.hooks == ("esper_register_blueprints",)
    assert info.blueprints == ("cnn:scale",)


def test_import_failure_is_reported_and_other_packs_still_load(fake_packs, fakes) -> None:
    broken = fakes.entry("broken-pack", None)
    broken.loader = _boom
    with pytest.warns(RuntimeWarning, match="broken-pack"):
        fake_packs(broken, fakes.entry("good-pack", fakes.blueprints_plugin("good", fakes.scale_spec())))
        reg.get_registry()
    info = _infos()["broken-pack"]
    assert not info.loaded and "missing_dependency" in info.error and info.version == "1.0"
    assert reg.get_blueprint("cnn", "scale").name == "scale"


def test_wrong_signature_and_unknown_hook_are_rejected(fake_packs, fakes) -> None:
    def esper_register_blueprints(register, extra):
        raise AssertionError("must never be called")

    def esper_register_blueprint(register):  # misspelled: no such hook
        raise AssertionError("must never be called")

    with pytest.warns(RuntimeWarning):
        fake_packs(
            fakes.entry(
                "sig-pack", fakes.plugin_module("sig", esper_register_blueprints=esper_register_blueprints)
            ),
            fakes.entry(
                "typo-pack", fakes.plugin_module("typo", esper_register_blueprint=esper_register_blueprint)
            ),
        )
        reg.get_registry()
    infos = _infos()
    assert "invalid hook implementation" in infos["sig-pack"].error and "extra" in infos["sig-pack"].error
    assert "esper_register_blueprint'" in infos["typo-pack"].error
    assert "esper_register_blueprints" in infos["typo-pack"].error  # lists the known hooks
    assert not reg.get_plugin_manager().has_plugin("typo-pack:main")


def test_hook_that_raises_registers_nothing(fake_packs, fakes) -> None:
    def esper_register_blueprints(register):
        register(fakes.scale_spec("first"))
        raise RuntimeError("half-way failure")

    with pytest.warns(RuntimeWarning, match="half-way"):
        fake_packs(
            fakes.entry(
                "half-pack", fakes.plugin_module("half", esper_register_blueprints=esper_register_blueprints)
            )
        )
        reg.get_registry()
    assert reg.list_blueprints() == []
    assert "half-way failure" in _infos()["half-pack"].error


def test_collision_is_deterministic_and_names_both_distributions(fake_packs, fakes) -> None:
    first = fakes.entry("pack-a", fakes.blueprints_plugin("a", fakes.scale_spec("shared")))
    second = fakes.entry("pack-b", fakes.blueprints_plugin("b", fakes.scale_spec("shared")))
    for order in ([first, second], [second, first]):
        with pytest.warns(RuntimeWarning, match="shared"):
            fake_packs(*order)
            reg.get_registry()
        infos = _infos()
        assert infos["pack-a"].loaded and infos["pack-a"].refused == ()
        assert infos["pack-b"].loaded and infos["pack-b"].blueprints == ()  # only the clash is refused
        (refused,) = infos["pack-b"].refused
        assert "cnn:shared" in refused and "pack-a 1.0" in refused and "pack-b 1.0" in refused
        assert reg.get_registry().source(reg.get_blueprint("cnn", "shared")).distribution == "pack-a"


def test_strict_mode_raises(fake_packs, fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = fakes.entry("broken-pack", None)
    broken.loader = _boom
    fake_packs(broken)
    monkeypatch.setenv("ESPER_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="broken-pack"):
        reg.get_registry()
    a = fakes.entry("pack-a", fakes.blueprints_plugin("a", fakes.scale_spec("shared")))
    b = fakes.entry("pack-b", fakes.blueprints_plugin("b", fakes.scale_spec("shared")))
    fake_packs(a, b)
    with pytest.raises(PluginLoadError, match=r"(?s)pack-b 1.0: blueprint 'cnn:shared' refused.*pack-a 1.0"):
        reg.get_registry()
    assert _infos()["pack-b"].refused  # the report stays readable under strict mode


def test_allow_list_loads_only_named_distributions(
    fake_packs, fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    packs = [
        fakes.entry("Pack_One", fakes.blueprints_plugin("one", fakes.scale_spec("one"))),
        fakes.entry("pack-two", fakes.blueprints_plugin("two", fakes.scale_spec("two"))),
    ]
    fake_packs(*packs)
    monkeypatch.setenv("ESPER_LOAD_PLUGINS", "pack-one")
    reg.reset_registry()
    assert [s.name for s in reg.list_blueprints()] == ["one"]
    monkeypatch.setenv("ESPER_LOAD_PLUGINS", "")
    reg.reset_registry()
    assert reg.list_blueprints() == []
    assert [i.name for i in reg.plugin_report()] == ["esper-core:builtin"]


def test_a_pack_can_add_a_topology_used_by_another_pack(fake_packs, fakes) -> None:
    from esper_core.topology import Topology

    graph = Topology(
        name="graph",
        layout="(B, N, F)",
        ndim=3,
        feature_axis=2,
        reference_dim=32,
        description="node features",
        example_extent=(5,),
    )

    @hookimpl
    def esper_register_topologies(register):
        register(graph)

    topo_module = fakes.plugin_module("topo")
    topo_module.esper_register_topologies = esper_register_topologies
    fake_packs(
        fakes.entry("z-topology-pack", topo_module),
        fakes.entry(
            "a-user-pack", fakes.blueprints_plugin("user", fakes.scale_spec("node", topology="graph"))
        ),
    )
    assert reg.get_blueprint("graph", "node").topology == "graph"
    assert _infos()["z-topology-pack"].topologies == ("graph",)
