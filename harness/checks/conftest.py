"""Loads the --parity-run plugin for `pytest harness/checks/test_recorded.py`."""

from harness.checks.pytest_plugin import parity_verdict, pytest_addoption, pytest_generate_tests  # noqa: F401
