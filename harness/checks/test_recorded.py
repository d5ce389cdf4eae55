"""The parity checks as pytest tests, one per verdict of a recorded run (see pytest_plugin).

    pytest harness/checks/test_recorded.py --parity-run reports/latest --junitxml=parity.xml
"""

import pytest

from harness.checks.pytest_plugin import _describe


def test_recorded(parity_verdict):
    if parity_verdict.verdict != "pass":
        pytest.fail(_describe(parity_verdict), pytrace=False)
