"""The real ``esper`` command, run as a user runs it: closed pipes, typed JSON, ``--version``.

Every check starts the installed console script (``esper`` next to the test's Python) in a
child process. Packs that fail or carry several entry points are real installed
distributions: a ``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt`` on the
child's ``PYTHONPATH``, which is what ``importlib.metadata`` reads after ``pip install``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esper_core.cli import BROKEN_PIPE_STATUS, main, version_text

ESPER = Path(sys.executable).with_name("esper")

# Every command and output form; each writes to stdout.
COMMANDS = [
    ["blueprints"],
    ["blueprints", "--json"],
    ["blueprints", "conv*", "--dim", "512"],
    ["plugins"],
    ["plugins", "--json"],
    ["--version"],
]
# argparse's help printer swallows OSError itself, so help ends quietly with its usual status 0.
HELP = [["--help"], ["blueprints", "--help"], ["plugins", "--help"], ["demo", "--help"]]


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESPER_")}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    return env


def esper(*args: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ESPER), *args], capture_output=True, text=True, env=_env(extra_path), timeout=180
    )


def write_distribution(
    site: Path, name: str, version: str, entry_points: dict[str, str], **modules: str
) -> None:
    """An installed distribution as pip leaves it: metadata, entry points, modules."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[esper.blueprints]\n{lines}")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)


# ---- a reader that has gone away ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status"),
    [*((c, BROKEN_PIPE_STATUS) for c in COMMANDS), *((c, 0) for c in HELP)],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_a_closed_stdout_ends_the_command_quietly(args: list[str], status: int) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write fails with EPIPE
    try:
        result = subprocess.run(
            [str(ESPER), *args], stdout=write_end, stderr=subprocess.PIPE, text=True, env=_env(), timeout=180
        )
    finally:
        os.close(write_end)
    assert result.stderr == "", result.stderr  # no BrokenPipeError traceback, no "Exception ignored"
    assert result.returncode == status


def test_the_demo_stops_quietly_when_its_reader_is_gone(tmp_path: Path) -> None:
    # The demo prints through rich, whose console ends the process itself (status 1) on a
    # broken pipe; either way no traceback may reach the terminal.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [str(ESPER), "demo", "--epochs", "1", "--out", str(tmp_path / "out")],
            stdout=write_end, stderr=subprocess.PIPE, text=True, env=_env(), timeout=300,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.stderr == "", result.stderr
    assert result.returncode in (1, BROKEN_PIPE_STATUS)


def test_piping_into_head_prints_no_traceback(tmp_path: Path) -> None:
    # What a user types. Whether esper is still writing when head leaves is a race, so both
    # outcomes are accepted; the stderr must be empty either way.
    script = f'set -o pipefail; "{ESPER}" blueprints --json | head -n 2; echo "status=${{PIPESTATUS[0]}}" >&2'
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=_env(), timeout=180, cwd=tmp_path
    )
    assert result.stdout.splitlines() == ["[", "  {"]
    assert result.stderr.strip() in {"status=0", f"status={BROKEN_PIPE_STATUS}"}, result.stderr


def test_in_process_main_reports_a_broken_pipe_without_touching_a_fake_stdout(monkeypatch, capsys) -> None:
    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["plugins"]) == BROKEN_PIPE_STATUS


# ---- typed JSON ------------------------------------------------------------------------------

BLUEPRINT_ROW = {
    "topology": (str,),
    "name": (str,),
    "distribution": (str,),
    "version": (str,),
    "dim": (int,),
    "params": (int, type(None)),
    "unbuildable_reason": (str, type(None)),
    "options": (dict,),
    "accepted": (dict,),
    "description": (str,),
}
PLUGIN_ROW = {
    "name": (str,),
    "distribution": (str,),
    "version": (str,),
    "module": (str,),
    "loaded": (bool,),
    "hooks": (list,),
    "topologies": (list,),
    "blueprints": (list,),
    "refused": (list,),
    "error": (str, type(None)),
}


def _check_schema(row: dict, schema: dict[str, tuple[type, ...]]) -> None:
    assert set(row) == set(schema), row
    for key, types in schema.items():
        value = row[key]
        assert isinstance(value, types) and not (isinstance(value, bool) and bool not in types), (key, value)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_blueprints_json_is_typed_and_an_uncountable_blueprint_has_null_params() -> None:
    # At width 7 the four attention heads of transformer:attention do not divide the width.
    result = esper("blueprints", "--dim", "7", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    for row in rows:
        _check_schema(row, BLUEPRINT_ROW)
        for value in row["options"].values():
            assert isinstance(value, bool | int | float | str), row
    by_key = {(r["topology"], r["name"]): r for r in rows}
    assert by_key["transformer", "attention"]["params"] is None  # was the string "n/a"
    assert isinstance(by_key["cnn", "conv_small"]["params"], int)
    assert all(r["dim"] == 7 for r in rows)
    assert "n/a" not in _strings(rows) and "unknown" not in _strings(rows)
    # null params always come with the reason, the library's OptionError message; never otherwise
    for row in rows:
        assert (row["params"] is None) is (row["unbuildable_reason"] is not None), row
    assert by_key["transformer", "attention"]["unbuildable_reason"] == (
        "transformer:attention: attention needs dim % n_head == 0, but dim=7 is not divisible by n_head=4; "
        "accepted n_head values for dim=7: [1, 7]"
    )


def test_the_table_shows_n_a_with_a_footnote_that_says_why() -> None:
    # The reported instance: the transformer attention blueprint at --dim 6 printed a bare n/a.
    result = esper("blueprints", "--topology", "transformer", "--dim", "6")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {line.split()[1]: line for line in lines[2:] if line.startswith("transformer ")}
    assert rows["attention"].split()[5:7] == ["n/a", "[1]"]
    assert rows["flex_attention"].split()[5:7] == ["n/a", "[2]"]
    assert all(row.split()[5].isdigit() for name, row in rows.items() if "attention" not in name)
    notes = [line for line in lines if line.startswith("[")]
    assert notes == [
        "[1] transformer:attention: attention needs dim % n_head == 0, but dim=6 is not divisible by "
        "n_head=4; accepted n_head values for dim=6: [1, 2, 3, 6]",
        "[2] transformer:flex_attention: attention needs dim % n_head == 0, but dim=6 is not divisible by "
        "n_head=4; accepted n_head values for dim=6: [1, 2, 3, 6]",
    ]
    # Nothing to explain, no footnote: the table ends with its last row.
    plain = esper("blueprints", "--topology", "transformer", "--dim", "8")
    assert plain.returncode == 0 and not any(ln.startswith("[") for ln in plain.stdout.splitlines())


def test_plugins_json_is_typed_for_loaded_and_failed_packs(tmp_path: Path) -> None:
    write_distribution(
        tmp_path, "esper-broken-pack", "0.3.0", {"main": "esper_broken_pack"},
        esper_broken_pack="raise ImportError('a dependency is missing')\n",
    )  # fmt: skip
    result = esper("plugins", "--json", extra_path=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    for row in rows:
        _check_schema(row, PLUGIN_ROW)
        assert all(
            isinstance(s, str) for key in ("hooks", "topologies", "blueprints", "refused") for s in row[key]
        )
    by_dist = {r["distribution"]: r for r in rows}
    assert by_dist["esper-broken-pack"]["loaded"] is False
    assert "a dependency is missing" in by_dist["esper-broken-pack"]["error"]
    assert by_dist["esper-blueprints-cnn"]["error"] is None


# ---- --version ---------------------------------------------------------------------------


def test_version_lists_the_core_and_every_installed_pack_once(tmp_path: Path) -> None:
    ok_plugin = (
        "from esper_core import hookimpl\n\n@hookimpl\ndef esper_register_blueprints(register):\n    pass\n"
    )
    write_distribution(
        tmp_path, "esper-two-entries", "2.5.1", {"first": "esper_two_a", "second": "esper_two_b"},
        esper_two_a=ok_plugin, esper_two_b=ok_plugin,
    )  # fmt: skip
    write_distribution(
        tmp_path, "esper-broken-pack", "0.3.0", {"main": "esper_broken_pack"},
        esper_broken_pack="raise ImportError('a dependency is missing')\n",
    )  # fmt: skip
    result = esper("--version", extra_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    core = importlib.metadata.version("esper-core")
    assert lines[0] == f"esper-core {core} (torch {torch.__version__}, Python {platform.python_version()})"
    for dist in ("esper-blueprints-cnn", "esper-blueprints-transformer"):
        assert f"{dist} {importlib.metadata.version(dist)}" in lines
    assert lines.count("esper-two-entries 2.5.1") == 1
    assert "esper-broken-pack 0.3.0  (failed to load; `esper plugins` shows why)" in lines
    assert len(lines) == 5


def test_version_without_installed_metadata_says_so(monkeypatch) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "esper-core":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    first = version_text().splitlines()[0]
    assert first.startswith("esper-core (not installed: no distribution metadata")
