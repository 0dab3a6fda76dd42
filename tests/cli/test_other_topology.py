"""A blueprint name that another topology registers says where it is and which flag reaches it.

The reported instance: ``esper demo --include cummean`` (a transformer blueprint of the
user's, default topology cnn) said "unknown cnn blueprint(s)" without suggesting
``--topology transformer``. Here ``lora`` and ``mlp`` (transformer only, shipped) stand in
for it. Each check runs the installed ``esper`` command in a child process; the refusals
come before any training, so they are quick. The library's own lookup says the same.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from esper_core.errors import UnknownBlueprintError
from esper_core.registry import get_blueprint, get_registry

ESPER = Path(sys.executable).with_name("esper")
CNN = "attention, bottleneck, conv_heavy, conv_light, conv_small, depthwise, noop, norm"


def esper(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ESPER), *args], capture_output=True, text=True, timeout=180, cwd=cwd)


def test_the_shipped_names_are_what_the_checks_assume() -> None:
    registry = get_registry()
    assert registry.topologies_of("lora") == ["transformer"] == registry.topologies_of("mlp")
    assert registry.topologies_of("norm") == ["cnn", "transformer"] and registry.topologies_of("nope") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--include", "lora"],
            f"--include: unknown cnn blueprint(s) ['lora']; registered: {CNN}; 'lora' is a transformer "
            "blueprint (this run's topology is cnn): use --topology transformer to grow transformer blueprints",
        ),
        (
            ["--exclude", "noop,mlp"],
            f"--exclude: unknown cnn blueprint(s) ['mlp']; registered: {CNN}; 'mlp' is a transformer "
            "blueprint (this run's topology is cnn): use --topology transformer to grow transformer blueprints",
        ),
        (  # one name from elsewhere, one from nowhere: the hint covers the one it knows
            ["--include", "lora,conv_smal"],
            f"--include: unknown cnn blueprint(s) ['lora', 'conv_smal']; registered: {CNN}; 'lora' is a "
            "transformer blueprint (this run's topology is cnn): use --topology transformer to grow "
            "transformer blueprints",
        ),
        (  # from nowhere: no hint
            ["--include", "conv_smal"],
            f"--include: unknown cnn blueprint(s) ['conv_smal']; registered: {CNN}",
        ),
        (
            ["--topology", "transformer", "--include", "conv_small"],
            "--include: unknown transformer blueprint(s) ['conv_small']; registered: attention, "
            "flex_attention, lora, lora_large, mlp, mlp_small, noop, norm; 'conv_small' is a cnn blueprint "
            "(this run's topology is transformer): use --topology cnn to grow cnn blueprints",
        ),
    ],
)
def test_esper_demo_names_the_topology_of_a_foreign_blueprint(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = esper("demo", "--seeds", "1", "--epochs", "1", *args, "--out", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"esper demo: error: {message}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("pattern", "elsewhere"),
    [
        ("lora", "transformer: lora"),
        ("l*", "transformer: lora, lora_large"),
        ("transformer:mlp*", "transformer: mlp, mlp_small"),
    ],
)
def test_esper_blueprints_names_the_topology_that_matches(
    pattern: str, elsewhere: str, tmp_path: Path
) -> None:
    result = esper("blueprints", pattern, "--topology", "cnn", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        f"esper: error: no cnn blueprint matches {pattern!r}; available: {CNN}; it matches blueprints of "
        f"other topologies ({elsewhere}): use --topology transformer, or no --topology"
    )
    # What it suggests works.
    shown = esper("blueprints", pattern, "--topology", "transformer", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr


def test_a_pattern_no_topology_matches_gets_no_hint(tmp_path: Path) -> None:
    result = esper("blueprints", "zz*", "--topology", "cnn", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"esper: error: no cnn blueprint matches 'zz*'; available: {CNN}"


def test_the_registry_lookup_names_the_other_topology() -> None:
    with pytest.raises(UnknownBlueprintError) as info:
        get_blueprint("cnn", "lora")
    assert str(info.value).endswith("; 'lora' is registered for topology 'transformer'")
    with pytest.raises(UnknownBlueprintError) as info:
        get_blueprint("cnn", "nope")
    assert "registered for topology" not in str(info.value)
