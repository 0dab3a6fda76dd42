"""The esper CLI in-process, over a registry built from fake packs."""

from __future__ import annotations

import json

import pytest

from esper_core.cli import main


@pytest.fixture
def packs(fake_packs, fakes) -> None:
    fake_packs(
        fakes.entry(
            "pack-cnn", fakes.blueprints_plugin("c", fakes.scale_spec("gain"), fakes.scale_spec("gain_two"))
        ),
        fakes.entry("pack-tf", fakes.blueprints_plugin("t", fakes.widened_spec()), version="3.1"),
    )


def test_blueprints_table_shows_counts_options_and_sources(packs, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["blueprints", "--dim", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["topology", "name", "distribution", "version", "dim", "params", "options"]
    rows = [line.rstrip().split(maxsplit=6) for line in lines[2:]]
    assert ["transformer", "wide", "pack-tf", "3.1", "16", "68", "width=4 (an int >= 1)"] in rows
    assert ["cnn", "gain", "pack-cnn", "1.0", "16", "16", "-"] in rows


def test_blueprints_json_pattern_and_topology(packs, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["blueprints", "gain*", "--topology", "cnn", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["dim"], r["params"]) for r in rows] == [("gain", 64, 64), ("gain_two", 64, 64)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["blueprints", "--topology", "rnn"],
            "unknown topology 'rnn'; registered topologies: ['cnn', 'transformer']",
        ),
        (["blueprints", "zzz*"], "no blueprint matches 'zzz*'; available: gain, gain_two, wide"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(packs, capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"esper: error: {message}"


@pytest.mark.parametrize("dim", ["0", "-4", "abc"])
def test_bad_dim_is_rejected_by_the_parser(packs, capsys, dim: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["blueprints", "--dim", dim])
    assert exc.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


def test_plugins_lists_each_pack(packs, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    data = {d["distribution"]: d for d in json.loads(capsys.readouterr().out)}
    assert data["pack-tf"]["blueprints"] == ["transformer:wide"]
    assert data["pack-cnn"]["hooks"] == ["esper_register_blueprints"]


@pytest.mark.parametrize("argv", [["--help"], ["blueprints", "--help"], ["plugins", "--help"]])
def test_help_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: esper" in capsys.readouterr().out


def test_blueprints_show_accepted_option_values(packs, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["blueprints", "wide", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["options"] == {"width": 4} and row["accepted"] == {"width": "an int >= 1"}
