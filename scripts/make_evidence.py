"""Regenerate the demo evidence: run the documented commands, then rewrite the README caption
and the generated tables of docs/evidence.md from the reports they wrote.

    .venv/bin/python scripts/make_evidence.py                # run both topologies, then render
    .venv/bin/python scripts/make_evidence.py --topology cnn # run one, render both
    .venv/bin/python scripts/make_evidence.py --render-only  # only re-render from committed reports

The runs take about a minute (CNN) and five to ten minutes (transformer) on two CPU cores.
The figure in the README is ``docs/evidence/cnn/growth.png``, written by the CNN run itself.
The hand-written "What this says" section of docs/evidence.md must be reread after a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from esper_core.demo.evidence import (
    COMMANDS,
    REPORTS,
    capacity_table,
    caption,
    evidence_section,
    replace_block,
)

ROOT = Path(__file__).resolve().parents[1]


def run(topology: str) -> None:
    command = list(COMMANDS[topology])
    esper = shutil.which("esper", path=str(Path(sys.executable).parent)) or "esper"
    print("$", " ".join(command), flush=True)
    subprocess.run([esper, *command[1:]], cwd=ROOT, check=True, env={**os.environ, "COLUMNS": "150"})


def render() -> None:
    reports = {
        t: json.loads((ROOT / path).read_text()) for t, path in REPORTS.items() if (ROOT / path).exists()
    }
    readme = ROOT / "README.md"
    if "cnn" in reports:
        readme.write_text(replace_block(readme.read_text(), "caption", caption(reports["cnn"])))
    evidence = ROOT / "docs" / "evidence.md"
    text = evidence.read_text()
    for topology, report in reports.items():
        text = replace_block(text, topology, evidence_section(report))
    for capacity in sorted((ROOT / "docs" / "evidence").glob("capacity-*.json")):
        text = replace_block(text, capacity.stem, capacity_table(json.loads(capacity.read_text())))
    evidence.write_text(text)
    print(f"rendered {', '.join(sorted(reports))} into README.md and docs/evidence.md")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--topology", choices=sorted(COMMANDS), action="append", help="run only these (repeatable)"
    )
    parser.add_argument("--render-only", action="store_true", help="do not run; re-render from the reports")
    args = parser.parse_args()
    if not args.render_only:
        for topology in args.topology or sorted(COMMANDS):
            run(topology)
    render()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
