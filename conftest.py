"""Shared pytest setup: hypothesis profiles (fast locally, derandomized in CI)."""

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the engine venvs run real-engine tests only and need no hypothesis
    settings = None

if settings is not None:
    settings.register_profile("dev", max_examples=50, deadline=None)
    settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
