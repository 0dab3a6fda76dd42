"""Settings for every test in the repository (core and both packs)."""

from __future__ import annotations

import torch

# The suite runs tiny tensors on a 2-core machine: intra-op threads cost more in
# synchronisation than they save, and a second thread competes with the test process itself.
torch.set_num_threads(1)
