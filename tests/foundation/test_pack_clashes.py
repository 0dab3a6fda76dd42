"""Name clashes blame the newcomer: the core and shipped packs keep their names, and between
third-party packs only the clashing entries of the pack that sorts second are refused.

Packs are really pip-installed; each check runs in a child process (see conftest).
"""

from __future__ import annotations

import json
from pathlib import Path

CHECKPOINTS = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints_v1"
SHIPPED = "esper-blueprints-cnn,esper-blueprints-transformer"

SUMMARY = (
    "import json\n"
    "from esper_core import list_blueprints\n"
    "from esper_core.registry import list_topologies, plugin_report, provenance\n"
    "keys = sorted(s.key for s in list_blueprints())\n"
    "report = {i.distribution: {'loaded': i.loaded, 'refused': list(i.refused),\n"
    "          'blueprints': list(i.blueprints), 'topologies': list(i.topologies)} for i in plugin_report()}\n"
    "origin = {k: provenance(k).distribution for k in [*keys, *(t.name for t in list_topologies())]}\n"
    "layouts = {t.name: t.layout for t in list_topologies()}\n"
)


def test_a_newcomer_cannot_displace_a_shipped_blueprint(child) -> None:
    code = SUMMARY + (
        "from esper_core.testing import conformance_cases, conformance_report\n"
        "cases = {p.id: p.values[0] for p in conformance_cases(distribution='esper-blueprints-aaa-clash')}\n"
        "kit = {i: sorted(c.value for c in conformance_report(s, dims=[8]).failed_checks) for i, s in cases.items()}\n"
        "print(json.dumps({'keys': keys, 'report': report, 'origin': origin, 'kit': kit}))\n"
    )
    out = child.json(code, ESPER_LOAD_PLUGINS=f"esper-blueprints-aaa-clash,{SHIPPED}")
    cnn = {k.split(":")[1] for k in out["keys"] if k.startswith("cnn:")}
    assert cnn == {"attention", "bottleneck", "conv_heavy", "conv_light", "conv_small", "depthwise", "noop",
                   "norm", "aaa_gain"}  # fmt: skip
    assert out["origin"]["cnn:depthwise"] == "esper-blueprints-cnn"
    assert out["origin"]["cnn:aaa_gain"] == "esper-blueprints-aaa-clash"  # the rest of the pack stays
    assert out["report"]["esper-blueprints-cnn"]["refused"] == []
    clash = out["report"]["esper-blueprints-aaa-clash"]
    assert clash["loaded"] and clash["blueprints"] == ["cnn:aaa_gain"]
    (refused,) = clash["refused"]
    assert refused.startswith(
        "blueprint 'cnn:depthwise' refused: the name is already registered by esper-blueprints-cnn"
    )
    assert "esper-blueprints-aaa-clash 0.1.0 (esper-blueprints-aaa-clash:main) arrived second" in refused
    # the clashing pack's own conformance test fails, on that blueprint only
    assert out["kit"] == {"cnn:aaa_gain": [], "cnn:depthwise@esper-blueprints-aaa-clash": ["registration"]}


def test_an_old_checkpoint_of_a_shipped_blueprint_still_loads_exactly(child) -> None:
    code = (
        "import importlib.util, sys, torch\n"
        "from esper_core.checkpoint import load_checkpoint\n"
        "spec = importlib.util.spec_from_file_location('maker', sys.argv[1] + '/make_fixtures.py')\n"
        "maker = importlib.util.module_from_spec(spec); spec.loader.exec_module(maker)\n"
        "payload = torch.load(sys.argv[1] + '/cnn_blending.pt', weights_only=True)\n"
        "model = maker.build('cnn'); load_checkpoint(model, payload['state_dict']); model.eval()\n"
        "with torch.no_grad():\n"
        "    assert torch.equal(model(payload['input']), payload['output'])\n"
        "print('exact')\n"
    )
    result = child.python(code, str(CHECKPOINTS), ESPER_LOAD_PLUGINS=f"esper-blueprints-aaa-clash,{SHIPPED}")
    assert result.returncode == 0 and result.stdout.strip() == "exact", result.stderr[-3000:]


def test_a_pack_topology_named_like_a_core_one_is_refused_with_its_blueprints(child) -> None:
    code = (
        SUMMARY
        + "print(json.dumps({'keys': keys, 'report': report, 'origin': origin, 'layouts': layouts}))\n"
    )
    out = child.json(code, ESPER_LOAD_PLUGINS=f"esper-fixture-topology-clash,{SHIPPED}")
    assert out["origin"]["cnn"] == "esper-core" and out["layouts"]["cnn"] == "(B, C, H, W)"
    assert out["origin"]["transformer"] == "esper-core"
    transformer = {k for k in out["keys"] if k.startswith("transformer:")}
    assert len(transformer) == 8 and "transformer:lora" in transformer  # the whole shipped pack
    pack = out["report"]["esper-fixture-topology-clash"]
    assert pack["loaded"] and pack["topologies"] == ["grid"] and pack["blueprints"] == ["grid:grid_last_gain"]
    refused = dict(line.split(" refused: ", 1) for line in pack["refused"])
    assert refused["topology 'cnn'"].startswith("the name is already registered by esper-core")
    assert refused["blueprint 'cnn:cnn_last_gain'"] == (
        "it targets topology 'cnn', which this pack defines but was refused"
    )


def test_the_clash_rule_does_not_depend_on_install_order(install, child_for) -> None:
    first, second = install("esper-fixture-collide-a"), install("esper-fixture-collide-b")
    code = (
        SUMMARY
        + "print(json.dumps({'origin': origin['cnn:collide'], 'refused': report['esper-fixture-collide-b']['refused']}))\n"
    )
    allow = {"ESPER_LOAD_PLUGINS": "esper-fixture-collide-a esper-fixture-collide-b"}
    outcomes = [child_for(*sites).json(code, **allow) for sites in ((first, second), (second, first))]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0]["origin"] == "esper-fixture-collide-a"
    (refused,) = outcomes[0]["refused"]
    assert "esper-fixture-collide-a 1.0.0" in refused and "esper-fixture-collide-b 2.0.0" in refused


def test_strict_mode_raises_on_a_clash(child) -> None:
    allow = f"esper-blueprints-aaa-clash,{SHIPPED}"
    library = child.python("import esper_core; esper_core.get_blueprint('cnn', 'conv_light')",
                           ESPER_LOAD_PLUGINS=allow, ESPER_STRICT_PLUGINS="1")  # fmt: skip
    assert library.returncode == 1
    assert "PluginLoadError: ESPER_STRICT_PLUGINS is set and 1 plugin problem(s) were found" in library.stderr
    assert "esper-blueprints-aaa-clash 0.1.0: blueprint 'cnn:depthwise' refused" in library.stderr
    cli = child.cli("plugins", "--json", ESPER_LOAD_PLUGINS=allow, ESPER_STRICT_PLUGINS="1")
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert json.loads(cli.stdout)  # the report is still printed, then the exit status says no
