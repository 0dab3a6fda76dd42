"""Suite-wide test settings."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Torch ops have slow first calls; a per-example deadline would make tests flaky, not stricter.
settings.register_profile(
    "esper",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("esper")
