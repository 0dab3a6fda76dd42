"""The registry: lookup errors, sorting, conflicts, version numbers, atomic registration."""

from __future__ import annotations

import pytest

from esper_core import registry as reg
from esper_core.errors import ConflictError, RegistryError, UnknownBlueprintError, UnknownTopologyError
from esper_core.options import Option
from esper_core.spec import BlueprintSpec
from esper_core.topology import Topology


def _spec(name: str, count: int, topology: str = "cnn", **kwargs) -> BlueprintSpec:
    return BlueprintSpec(
        name=name,
        topology=topology,
        factory=lambda dim, **_: None,
        param_count=lambda dim, **_: count * dim,
        description=f"{name} blueprint",
        **kwargs,
    )


@pytest.fixture
def registry(fake_packs) -> reg.Registry:
    fake_packs()  # no packs: only the built-in topologies
    return reg.get_registry()


def test_builtin_topologies_are_registered_as_a_plugin(registry: reg.Registry) -> None:
    assert registry.topology_names() == ["cnn", "transformer"]
    assert registry.topology_source("cnn").distribution == "esper-core"
    assert reg.get_topology("transformer").sequence_axis == 1


def test_unknown_topology_and_blueprint_list_what_exists(registry: reg.Registry) -> None:
    with pytest.raises(UnknownTopologyError, match=r"'rnn'.*\['cnn', 'transformer'\]"):
        reg.get_blueprint("rnn", "x")
    with (
        reg.temporary_blueprints(_spec("alpha", 1), _spec("beta", 2)),
        pytest.raises(UnknownBlueprintError, match=r"'gamma'.*\['alpha', 'beta'\]"),
    ):
        reg.get_blueprint("cnn", "gamma")


def test_list_sorts_by_exact_count_then_name(registry: reg.Registry) -> None:
    specs = [_spec("zeta", 1), _spec("beta", 3), _spec("alpha", 3), _spec("mid", 2, topology="transformer")]
    with reg.temporary_blueprints(*specs):
        names = [s.name for s in reg.list_blueprints(topology="cnn")]
        assert names == ["zeta", "alpha", "beta"]
        assert [s.name for s in reg.list_blueprints(pattern="*a")] == ["zeta", "alpha", "beta"]
        assert [s.key for s in reg.list_blueprints(pattern="transformer:*")] == ["transformer:mid"]
        assert reg.list_blueprints(pattern="nothing*") == []


def test_list_rejects_bad_arguments(registry: reg.Registry) -> None:
    with pytest.raises(UnknownTopologyError):
        reg.list_blueprints(topology="graph")
    with pytest.raises(RegistryError, match="pattern"):
        reg.list_blueprints(pattern="")
    with pytest.raises(RegistryError, match="dim"):
        reg.list_blueprints(dim=0)


def test_blueprints_invalid_at_a_dim_sort_last(registry: reg.Registry) -> None:
    def needs_even(dim: int) -> None:
        if dim % 2:
            from esper_core.errors import OptionError

            raise OptionError(f"dim {dim} must be even")

    with reg.temporary_blueprints(_spec("even", 1, validate=needs_even), _spec("big", 100)):
        assert [s.name for s in reg.list_blueprints("cnn", dim=5)] == ["big", "even"]
        assert [s.name for s in reg.list_blueprints("cnn", dim=4)] == ["even", "big"]


def test_duplicate_registration_is_a_conflict_and_changes_nothing(registry: reg.Registry) -> None:
    before = reg.registry_version()
    source_a = reg.Source("pack-a", "1.0", "pack-a:main")
    source_b = reg.Source("pack-b", "2.0", "pack-b:main")
    registry.register_blueprint(_spec("dup", 1), source_a)
    assert reg.registry_version() == before + 1
    with pytest.raises(ConflictError, match=r"pack-a 1\.0.*pack-b 2\.0"):
        registry.register_batch([], [_spec("fresh", 1), _spec("dup", 2)], source_b)
    assert reg.registry_version() == before + 1
    with pytest.raises(UnknownBlueprintError):
        reg.get_blueprint("cnn", "fresh")  # the whole batch was rejected
    assert registry.source(reg.get_blueprint("cnn", "dup")) == source_a


def test_blueprint_for_unknown_topology_is_rejected(registry: reg.Registry) -> None:
    with pytest.raises(UnknownTopologyError, match="graph"):
        registry.register_blueprint(_spec("x", 1, topology="graph"), reg.Source("p", "1", "p:main"))


def test_version_changes_with_every_change_of_the_set(registry: reg.Registry) -> None:
    v0 = reg.registry_version()
    with reg.temporary_blueprints(_spec("temp", 1)):
        v1 = reg.registry_version()
    v2 = reg.registry_version()
    assert v0 < v1 < v2


def test_create_and_count_validate_options(registry: reg.Registry) -> None:
    spec = _spec("opt", 2, options=(Option("k", int, 1, "k", minimum=1),))
    with reg.temporary_blueprints(spec):
        assert reg.param_count("cnn", "opt", 8, k=3) == 16
        with pytest.raises(RegistryError):
            reg.param_count("cnn", "opt", 8, k=0)
        with pytest.raises(RegistryError):
            reg.create_blueprint("cnn", "opt", -8)
        assert reg.flop_count("cnn", "opt", 8, (1, 8, 2, 2)) is None


def test_topology_example_inputs_follow_the_layout() -> None:
    cnn = reg.get_topology("cnn")
    assert cnn.example_shape(16) == (2, 16, 5, 7)
    assert reg.get_topology("transformer").example_shape(16, batch=3) == (3, 6, 16)
    assert cnn.alpha_shape(4) == (4, 1, 1, 1)
    with pytest.raises(RegistryError, match="feature_axis"):
        Topology(
            name="bad",
            layout="(B, X)",
            ndim=2,
            feature_axis=0,
            reference_dim=4,
            description="x",
            example_extent=(),
        )
