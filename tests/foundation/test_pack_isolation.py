"""A broken pack never takes the host or the other packs down (really installed packs).

Every fixture pack under ``tests/fixtures`` is pip-installed into one folder; each test
runs a child process that sees it (and the shipped packs of the project's environment)
as installed, so discovery goes through the real entry-point mechanism. A child that
exits, hangs (the child has a timeout) or crashes fails the test, never the run.
"""

from __future__ import annotations

import json

SHIPPED_CNN = {
    "attention",
    "bottleneck",
    "conv_heavy",
    "conv_light",
    "conv_small",
    "depthwise",
    "noop",
    "norm",
}

REPORT = (
    "import json; from esper_core.registry import plugin_report\n"
    "report = {i.distribution: {'loaded': i.loaded, 'error': i.error, 'refused': list(i.refused),"
    " 'blueprints': list(i.blueprints)} for i in plugin_report()}\n"
)


def _plugins(child, **env) -> dict[str, dict]:
    result = child.cli("plugins", "--json", **env)
    assert result.returncode == 0, result.stderr
    return {p["distribution"]: p for p in json.loads(result.stdout)}


def test_a_pack_that_raises_system_exit_is_recorded_and_the_host_carries_on(child) -> None:
    code = (
        "import sys; sys.argv = ['train.py', '--lr', '0.1']  # the user's own command line\n"
        + REPORT
        + "from esper_core import list_blueprints\n"
        "keys = [s.key for s in list_blueprints()]\n"
        "print(json.dumps({'keys': keys, 'report': report}))\n"
    )
    allow = "esper-fixture-exit-import esper-fixture-exit-hook esper-blueprints-cnn esper-fixture-good"
    out = child.json(code, ESPER_LOAD_PLUGINS=allow)
    report = out["report"]
    at_import = report["esper-fixture-exit-import"]
    assert not at_import["loaded"] and "import failed: SystemExit(2)" in at_import["error"]
    in_hook = report["esper-fixture-exit-hook"]
    assert not in_hook["loaded"] and "esper_register_blueprints failed: SystemExit(3)" in in_hook["error"]
    assert "cnn:exit_identity" not in out["keys"]  # the exiting hook registered nothing
    assert {f"cnn:{n}" for n in SHIPPED_CNN} | {"cnn:fixture_gain"} <= set(out["keys"])


def test_a_telemetry_sink_that_raises_system_exit_is_reported_and_skipped(child) -> None:
    code = (
        "import json, warnings\n"
        "from esper_core.slot import SeedSlot\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    slot = SeedSlot('s0', topology='cnn', dim=8)\n"
        "    slot.germinate('conv_light')\n"
        "print(json.dumps({'stage': slot.stage.name, 'warnings': [str(w.message) for w in caught]}))\n"
    )
    out = child.json(code, ESPER_LOAD_PLUGINS="esper-fixture-exit-sink,esper-blueprints-cnn")
    assert out["stage"] == "GERMINATED"
    (warning,) = [w for w in out["warnings"] if "telemetry sink" in w]
    assert "esper-fixture-exit-sink:main" in warning and "raised SystemExit: 4" in warning


def test_the_cli_works_with_every_broken_pack_installed(child) -> None:
    plugins = _plugins(child)
    assert plugins["esper-fixture-exit-import"]["error"].startswith("import failed: SystemExit(2)")
    assert plugins["esper-blueprints-cnn"]["loaded"] and plugins["esper-blueprints-transformer"]["loaded"]
    listing = child.cli("blueprints", "--json")
    assert listing.returncode == 0, listing.stderr
    keys = {(row["topology"], row["name"]) for row in json.loads(listing.stdout)}
    assert {("cnn", n) for n in SHIPPED_CNN} | {("cnn", "fixture_gain"), ("cnn", "count_ok")} <= keys
    assert ("transformer", "lora") in keys and ("grid", "grid_last_gain") in keys


def test_a_pack_using_the_registry_while_packs_load_fails_cleanly_instead_of_hanging(child) -> None:
    code = REPORT + (
        "from esper_core import get_blueprint, list_blueprints\n"
        "assert get_blueprint('cnn', 'conv_light').name == 'conv_light'\n"
        "print(json.dumps({'report': report, 'count': len(list_blueprints())}))\n"
    )
    allow = "esper-fixture-reenter-import,esper-fixture-reenter-hook,esper-blueprints-cnn"
    out = child.json(code, ESPER_LOAD_PLUGINS=allow)  # a deadlock would time the child out
    for dist, where in (
        ("reenter-import", "import failed"),
        ("reenter-hook", "esper_register_blueprints failed"),
    ):
        info = out["report"][f"esper-fixture-{dist}"]
        assert not info["loaded"]
        assert info["error"].startswith(f"{where}: RegistryError: the Esper registry was used while")
        assert "inside a factory" in info["error"]  # says what to do instead
    assert out["count"] == len(SHIPPED_CNN)


def test_broken_counts_are_refused_by_name_and_distribution(child) -> None:
    plugins = _plugins(child, ESPER_LOAD_PLUGINS="esper-fixture-bad-counts")
    pack = plugins["esper-fixture-bad-counts"]
    assert pack["loaded"] and pack["error"] is None
    assert pack["blueprints"] == ["cnn:count_odd_float", "cnn:count_ok"]
    refused = {line.split("'")[1]: line for line in pack["refused"]}
    expected = {
        "cnn:count_raises": "param_count() raised ZeroDivisionError: fixture count divides by zero",
        "cnn:count_nan": "param_count() returned nan (float)",
        "cnn:count_str": "param_count() returned 'sixty-four' (str)",
        "cnn:count_float": "param_count() returned 152.5 (float)",
        "cnn:count_bool": "param_count() returned True (bool)",
        "cnn:count_negative": "param_count() returned -1000000000",
        "cnn:flops_str": "flop_count() returned 'many' (str)",
    }
    assert set(refused) == set(expected)
    for key, detail in expected.items():
        assert detail in refused[key] and f"blueprint {key} has a broken" in refused[key]
        assert "at dim=64 with options {}" in refused[key]
    text = child.cli("plugins", ESPER_LOAD_PLUGINS="esper-fixture-bad-counts")
    assert "esper-fixture-bad-counts 0.4.0)  loaded, 7 refused" in text.stdout
    assert text.stdout.splitlines()[-1] == "2 plugin(s), 0 failed to load, 7 refused entries"


def test_a_count_broken_only_at_some_dims_is_left_out_there_and_reported(child) -> None:
    allow = {"ESPER_LOAD_PLUGINS": "esper-fixture-bad-counts"}
    odd = child.cli("blueprints", "--dim", "9", "--json", **allow)
    assert odd.returncode == 0, odd.stderr
    assert [row["name"] for row in json.loads(odd.stdout)] == ["count_ok"]
    warnings = [line for line in odd.stderr.splitlines() if "count_odd_float" in line]
    assert len(warnings) == 1 and "param_count() returned 9.5 (float)" in warnings[0]
    even = child.cli("blueprints", "--dim", "8", "--json", **allow)
    assert [row["name"] for row in json.loads(even.stdout)] == ["count_odd_float", "count_ok"]


def test_controller_and_conformance_cases_are_untouched_by_another_packs_broken_counts(child) -> None:
    code = (
        "import json\n"
        "from esper_core.control import ControllerConfig, HeuristicController\n"
        "from esper_core.slot import SeedSlot\n"
        "from esper_core.testing import conformance_cases, conformance_report\n"
        "slots = {'s0': SeedSlot('s0', topology='cnn', dim=64)}\n"
        "candidates = [(c.cost, c.blueprint) for c in HeuristicController(slots, ControllerConfig(param_budget=100, strategy='cheapest')).candidates()]\n"
        "good = [p.id for p in conformance_cases(distribution='esper-fixture-good')]\n"
        "bad = {p.id: p.values[0] for p in conformance_cases(distribution='esper-fixture-bad-counts')}\n"
        "kit = {i: sorted(c.value for c in conformance_report(s, dims=[8, 9]).failed_checks)\n"
        "       for i, s in bad.items() if i.startswith(('cnn:count_float', 'cnn:count_odd', 'cnn:count_ok'))}\n"
        "print(json.dumps({'candidates': candidates, 'good': good, 'bad': sorted(bad), 'kit': kit}))\n"
    )
    allow = "esper-fixture-bad-counts esper-fixture-good esper-blueprints-cnn"
    out = child.json(code, ESPER_LOAD_PLUGINS=allow)
    # count_negative's -10**9 would have been first; it is not a candidate at all
    assert [tuple(c) for c in out["candidates"]] == [
        (1, "fixture_gain"),
        (64, "count_odd_float"),
        (64, "count_ok"),
    ]
    assert out["good"] == ["cnn:fixture_gain"]
    assert "cnn:count_float@esper-fixture-bad-counts" in out["bad"]  # refused, still tested
    assert len(out["bad"]) == 9
    assert out["kit"] == {
        # a slot cannot germinate a blueprint it cannot size (max_seed_params needs the count)
        "cnn:count_float@esper-fixture-bad-counts": ["identity-in-slot", "param-count", "registration"],
        "cnn:count_odd_float": ["param-count"],  # a float at dim 9
        "cnn:count_ok": [],
    }


def test_misbehaving_factories_raise_the_librarys_error_and_leave_the_slot_empty(child) -> None:
    code = (
        "import json\n"
        "from esper_core.errors import BlueprintError, LifecycleError\n"
        "from esper_core.slot import SeedSlot\n"
        "out = {}\n"
        "cases = [(n, 'cnn', {}) for n in ('returns_dict', 'returns_function', 'returns_none',\n"
        "          'returns_tensor', 'raises', 'out_of_memory')]\n"
        "cases.append(('wide_linear', 'transformer', {'width': 2**40}))\n"
        "for name, topology, options in cases:\n"
        "    # a slot that accepts a huge seed, so that the factory itself is asked to allocate it\n"
        "    slot = SeedSlot('s0', topology=topology, dim=8, max_seed_params=2**44)\n"
        "    try:\n"
        "        slot.germinate(name, options=options)\n"
        "    except BlueprintError as exc:\n"
        "        out[name] = [str(exc), slot.stage.name, slot.seed is None]\n"
        "slot = SeedSlot('s0', topology='transformer', dim=8)  # the default bound refuses it first\n"
        "try:\n"
        "    slot.germinate('wide_linear', options={'width': 2**40})\n"
        "except LifecycleError as exc:\n"
        "    out['bounded'] = [str(exc), slot.stage.name, slot.seed is None]\n"
        "print(json.dumps(out))\n"
    )
    out = child.json(code, ESPER_LOAD_PLUGINS="esper-fixture-bad-factories")
    message, stage, empty = out.pop("bounded")
    assert (
        "transformer:wide_linear at dim 8 with options {'width': 1099511627776} has 8,796,093,022,208"
        in message
    )
    assert "more than this slot's max_seed_params (67,108,864)" in message and stage == "DORMANT" and empty
    assert len(out) == 7
    details = {
        "returns_dict": "the factory returned {'weight': tensor(",
        "returns_function": "the factory returned <function <lambda>",
        "returns_none": "the factory returned None (NoneType), not an nn.Module",
        "returns_tensor": "(Tensor), not an nn.Module",
        "raises": "the factory raised ValueError: fixture factory cannot build this",
        "out_of_memory": "the factory raised MemoryError (out of memory; param_count() says 0 parameters",
        "wide_linear": "can't allocate memory",
    }
    for name, (message, stage, empty) in out.items():
        topology = "transformer" if name == "wide_linear" else "cnn"
        assert message.startswith(
            f"blueprint {topology}:{name} (registered by esper-fixture-bad-factories 0.5.0)"
        )
        assert details[name] in message
        assert stage == "DORMANT" and empty
    assert "with options {'width': 1099511627776}" in out["wide_linear"][0]
    assert (
        "param_count() says 8,796,093,022,208 parameters (3.28e+04 GiB as float32)" in out["wide_linear"][0]
    )


def test_allow_list_entries_are_trimmed_normalised_and_unknown_names_reported(child) -> None:
    allow = " esper-blueprints-cnn,\tEsper_Blueprints.Transformer\n esper-fixture-good , no-such-pack,torch "
    plugins = _plugins(child, ESPER_LOAD_PLUGINS=allow)
    loaded = {d for d, p in plugins.items() if p["loaded"]}
    assert loaded == {
        "esper-core",
        "esper-blueprints-cnn",
        "esper-blueprints-transformer",
        "esper-fixture-good",
    }
    assert "no installed distribution has that name" in plugins["no-such-pack"]["error"]
    assert "declares no 'esper.blueprints' entry point" in plugins["torch"]["error"]
    assert "installed packs: " in plugins["torch"]["error"]
    strict = child.cli("plugins", ESPER_LOAD_PLUGINS=allow, ESPER_STRICT_PLUGINS="1")
    assert strict.returncode == 1 and "2 plugin(s) failed to load" in strict.stderr


def test_every_load_failure_is_printed_once(child) -> None:
    allow = (
        "esper-fixture-exit-import,esper-fixture-reenter-hook,esper-blueprints-aaa-clash,esper-blueprints-cnn"
    )
    report = child.cli("plugins", ESPER_LOAD_PLUGINS=allow)
    assert report.returncode == 0 and report.stderr.count("esper:") == 0  # the report says it all
    assert report.stdout.count("SystemExit(2)") == 1 and report.stdout.count("cnn:depthwise' refused") == 1
    listing = child.cli("blueprints", ESPER_LOAD_PLUGINS=allow)
    assert listing.returncode == 0
    lines = listing.stderr.splitlines()
    assert sum("SystemExit(2)" in line for line in lines) == 1
    assert sum("reenter-hook" in line for line in lines) == 1
    assert sum("cnn:depthwise' refused" in line for line in lines) == 1


def test_strict_mode_prints_the_report_and_exits_non_zero_without_a_traceback(child) -> None:
    result = child.cli("plugins", ESPER_STRICT_PLUGINS="1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "esper-fixture-exit-hook 0.2.0)  FAILED" in result.stdout
    listing = child.cli("blueprints", ESPER_STRICT_PLUGINS="1")
    assert listing.returncode == 1 and "Traceback" not in listing.stderr
    assert "esper: error: ESPER_STRICT_PLUGINS is set and" in listing.stderr
    library = child.python("import esper_core; esper_core.list_blueprints()", ESPER_STRICT_PLUGINS="1")
    assert library.returncode == 1 and "esper_core.errors.PluginLoadError" in library.stderr
