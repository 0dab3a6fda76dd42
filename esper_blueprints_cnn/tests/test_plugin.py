"""The pack registers through its entry point, like any third-party pack."""

from __future__ import annotations

from collections.abc import Callable

import esper_blueprints_cnn
import esper_core
from esper_blueprints_cnn import blocks, catalogue, counts, groups, options, plugin, seeds
from esper_core.registry import param_count, plugin_report

EXPECTED = ["noop", "norm", "attention", "depthwise", "bottleneck", "conv_small", "conv_light", "conv_heavy"]


def test_registered_through_the_entry_point() -> None:
    report = {info.distribution: info for info in plugin_report()}
    info = report["esper-blueprints-cnn"]
    assert info.loaded, info.error
    assert info.module == "esper_blueprints_cnn.plugin"
    assert list(info.blueprints) == [f"cnn:{name}" for name in EXPECTED]


def ours(specs: list[esper_core.BlueprintSpec]) -> list[esper_core.BlueprintSpec]:
    """Only this pack's blueprints: other installed packs may add CNN blueprints too."""
    report = {info.distribution: info for info in plugin_report()}
    keys = set(report["esper-blueprints-cnn"].blueprints)
    return [spec for spec in specs if spec.key in keys]


def test_exactly_the_eight_blueprints() -> None:
    assert sorted(spec.name for spec in ours(esper_core.list_blueprints("cnn"))) == sorted(EXPECTED)
    assert [spec.name for spec in catalogue.SPECS] == EXPECTED
    assert {spec.topology for spec in catalogue.SPECS} == {"cnn"}


def test_every_spec_declares_counts_and_a_distinct_description() -> None:
    descriptions = [spec.description for spec in catalogue.SPECS]
    assert len(set(descriptions)) == len(descriptions)
    for spec in catalogue.SPECS:
        assert spec.flop_count is not None, spec.name
        assert len(spec.description) >= 60, spec.name  # long enough to choose by


def test_registry_sorts_by_exact_count_at_the_requested_dim() -> None:
    for dim in (8, 64, 512):
        names = [spec.name for spec in esper_core.list_blueprints("cnn", dim=dim)]
        costs = [param_count("cnn", name, dim) for name in names]
        assert costs == sorted(costs)


def test_core_does_not_import_the_pack(run_python: Callable) -> None:
    # With plugin loading switched off, using the registry must not pull the pack in: the
    # entry point is the only way in.
    result = run_python(
        """
        import os, sys
        os.environ["ESPER_LOAD_PLUGINS"] = ""
        import esper_core
        esper_core.get_topology("cnn")
        assert esper_core.list_blueprints("cnn") == []
        print(sorted(m for m in sys.modules if m.startswith("esper_blueprints_cnn")))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_public_names_are_exported() -> None:
    for module in (esper_blueprints_cnn, blocks, catalogue, counts, groups, options, plugin, seeds):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    # The building blocks are part of the package's public surface.
    for name in ("SeedConvBlock", "SeedGroupNorm", "get_num_groups", "SPECS"):
        assert name in esper_blueprints_cnn.__all__
