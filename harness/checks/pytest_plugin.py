"""pytest plugin: one test per verdict of a recorded run, so CI gets JUnit natively.

    pytest --parity-run reports/latest --junitxml=parity.xml
    pytest --parity-run DIR --parity-suite cases/default.yaml -k mismatch

Outcomes map onto pytest's own: "pass" passes, "fail" fails (the message names
both sides, the metric, its value and threshold), "skipped" skips with the
reason, and "error" is raised from the verdict's fixture, so pytest (and JUnit)
report an *error*, not a failure. Each test carries the verdict's fields as JUnit
properties.

Registered as a `pytest11` entry point (pyproject.toml), so any pytest of an environment where the harness
is installed has the options; without them the plugin does nothing. `--parity-run` makes the session
collect exactly these tests (`test_recorded` below, one per verdict), whatever paths or testpaths say.
Without the package installed: `pytest -p harness.checks.pytest_plugin --parity-run DIR`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.verdict import Verdict

_KEY = pytest.StashKey[list]()
_PARAMETRIZED = pytest.StashKey[bool]()


class ParityError(Exception):
    """A verdict of outcome "error": the harness could not evaluate the check."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity", "rollout-parity: checks over a recorded run")
    group.addoption("--parity-run", default=None, metavar="DIR",
                    help="run directory (with records/ and usually run.json) whose checks become tests")
    group.addoption("--parity-suite", default=None, metavar="PATH",
                    help="suite file (default: the one run.json names, else cases/default.yaml)")
    group.addoption("--parity-from-checks-json", action="store_true", default=False,
                    help="use DIR/checks.json as written by `parity compare` instead of checking again")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--parity-run", None):
        # the verdicts are the session's tests: collect this module (its test_recorded), not the paths given
        config.args[:] = [str(Path(__file__).resolve())]


def verdict_test_id(v: Verdict) -> str:
    return f"{v.check}:{v.case}:{'-vs-'.join(v.backends) or 'run'}"


def verdicts_for(config: pytest.Config) -> list[Verdict] | None:
    if _KEY in config.stash:
        return config.stash[_KEY]
    run = config.getoption("--parity-run")
    out = None
    if run:
        from harness.checks.data import RunData
        from harness.compare import compare_data
        from harness.rundir import read_checks

        run_dir = Path(run)
        if not (run_dir / "records").is_dir() and not (run_dir / "checks.json").is_file():
            raise pytest.UsageError(f"--parity-run {run}: no records/ directory there (a run directory holds "
                                    f"records/ and run.json, e.g. reports/latest)")
        if config.getoption("--parity-from-checks-json") or not (run_dir / "records").is_dir():
            out = read_checks(run_dir)
        else:  # checked in memory: a test run never rewrites the run directory
            out = compare_data(RunData.load(run_dir, config.getoption("--parity-suite")))
    config.stash[_KEY] = out
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "parity_verdict" not in metafunc.fixturenames:
        return
    # this module is also the session's test module (pytest_configure), and pytest calls a test module's own
    # pytest_generate_tests besides the plugins': parametrize once
    if metafunc.definition.stash.get(_PARAMETRIZED, False):
        return
    metafunc.definition.stash[_PARAMETRIZED] = True
    verdicts = verdicts_for(metafunc.config)
    if verdicts is None:  # a CI step that forgot the flag must not go green with nothing checked
        raise pytest.UsageError("no --parity-run DIR given: these tests are the checks of a recorded run "
                                "(pytest --parity-run reports/latest)")
    ids, seen = [], {}
    for v in verdicts:
        base = verdict_test_id(v)
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    metafunc.parametrize("parity_verdict", verdicts, ids=ids, indirect=True)


def _describe(v: Verdict) -> str:
    sides = " vs ".join(v.backends) or "run"
    value = "n/a" if v.value is None else f"{v.value:.6g}"
    thr = "n/a" if v.threshold is None else f"{v.threshold:g}"
    return f"{v.check} [{v.case}] {sides}: {v.metric} = {value} (threshold {thr}): {v.detail}"


@pytest.fixture
def parity_verdict(request: pytest.FixtureRequest) -> Verdict:
    v: Verdict = request.param
    for name in ("check", "case", "metric", "value", "threshold", "verdict"):
        request.node.user_properties.append((name, json.dumps(getattr(v, name))))
    request.node.user_properties.append(("backends", ",".join(v.backends)))
    if v.verdict in ("skipped", "measured"):  # measured, not gated: shown, never a pass
        pytest.skip(_describe(v))
    if v.verdict == "error":
        raise ParityError(_describe(v))
    return v


def test_recorded(parity_verdict: Verdict) -> None:
    """One verdict of the recorded run (collected only under --parity-run; see pytest_configure)."""
    if parity_verdict.verdict != "pass":
        pytest.fail(_describe(parity_verdict), pytrace=False)
