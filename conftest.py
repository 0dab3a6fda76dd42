"""Settings for every test in the repository (core and both packs)."""

from __future__ import annotations

import torch

# The suite runs tiny tensors on a 2-core machine: intra-op threads cost more in
# synchronisation than they save, and a second thread competes with the test process itself.
torch.set_num_threads(1)

# Import the installed packs before pytest collects their tests. Under
# ``--import-mode=importlib`` pytest names ``esper_blueprints_cnn/tests/conftest.py`` after
# its path (``esper_blueprints_cnn.tests.conftest``) and would otherwise register the
# distribution folder, which has no ``__init__.py``, as a namespace module of the package's
# name, shadowing the real package in ``src/`` (and its entry point) for the whole session.
# pytest only fills in modules that are missing, so importing the real ones first is enough.
import pytest  # noqa: E402

import esper_blueprints_cnn  # noqa: E402, F401
import esper_blueprints_transformer  # noqa: E402, F401

# ---- test tiers ---------------------------------------------------------------------------------
# ``pytest`` alone runs the fast tier. The slower tiers are marked, and ``make test`` (what CI
# runs) runs them all:
#   integration   pip-installs distributions or fixture packs into venvs / target dirs
#   multiprocess  real torch.distributed processes (gloo on 127.0.0.1, torchrun)
#   docs          code blocks of README and docs/, and examples/, run in subprocesses
#   demo          the `esper demo` command, end to end
#   hf            real Hugging Face transformers models built from small configs (never downloaded)
# A test module may mark itself; the files below are marked here so the tiers are listed in
# one place.
TIER_FILES = {
    "integration": ("tests/foundation/test_installed_packs.py", "tests/conformance/test_example_pack.py"),
    "multiprocess": (
        "tests/distributed/test_two_ranks.py",
        "tests/distributed/test_ddp_stages.py",
        "tests/distributed/test_two_ranks_control.py",
        "tests/distributed/test_three_ranks.py",
        "tests/docs/test_examples.py::test_multiprocess_example",
    ),
    "docs": (
        "tests/docs/test_docs_complete.py::test_runnable_block_runs",
        "tests/docs/test_examples.py::test_single_process_example",
    ),
    "demo": ("tests/hosts/test_demo.py", "tests/hosts/test_demo_sinks.py"),
    "hf": ("tests/shipping/hf/",),
}
TIERS = tuple(TIER_FILES)


def pytest_configure(config: pytest.Config) -> None:
    for tier, what in (
        ("integration", "pip-installs distributions or fixture packs"),
        ("multiprocess", "starts real torch.distributed processes"),
        ("docs", "runs documentation code blocks and examples in subprocesses"),
        ("demo", "runs the esper demo end to end"),
        ("hf", "builds real transformers models from small configs"),
    ):
        config.addinivalue_line("markers", f"{tier}: slow tier, {what} (run by make test)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for tier, places in TIER_FILES.items():
            if any(item.nodeid.startswith(place) for place in places):
                item.add_marker(getattr(pytest.mark, tier))
