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
import esper_blueprints_cnn  # noqa: E402, F401
import esper_blueprints_transformer  # noqa: E402, F401
