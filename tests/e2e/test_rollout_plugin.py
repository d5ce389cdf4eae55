"""A tunix BaseRollout written outside the package runs as a backend and gets verdicts.

tests/data/plugins/hf_rollout.py (plain transformers, no harness import) is recorded with
`./dev parity --backends reference,mine=hf_rollout:HfRollout` (PYTHONPATH set) in the reference's venv:
its own checks pass, what it cannot give (prompt logprobs; a min_p case tunix's RolloutConfig cannot
express) is skipped with the reason, never passed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent
SUITE = ROOT / "tests" / "e2e" / "data" / "tiny-rollout.yaml"
PLUGINS = ROOT / "tests" / "data" / "plugins"


def parity(out: Path, run_id: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    return subprocess.run(["./dev", "parity", "--suite", str(SUITE), "--out", str(out), "--run-id", run_id,
                           "--no-selftest", "--quiet", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3000)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    p = parity(out, "mine", "--backends", "reference,mine=hf_rollout:HfRollout")
    summary = out / "mine" / "summary.json"
    assert summary.exists(), p.stdout[-3000:] + p.stderr[-3000:]
    return p, json.loads(summary.read_text()), out / "mine"


def verdicts(summary: dict, check: str, case: str) -> list[dict]:
    return [v for v in summary["checks"] if v["name"] == check and v["case"] == case and "mine" in v["backends"]]


def test_user_rollout_gets_verdicts(run):
    p, summary, run_dir = run
    assert p.returncode == 0, p.stderr[-3000:]
    session = json.loads((run_dir / "records" / "mine.generate.jsonl").read_text().splitlines()[0])
    assert session["config"]["rollout"] == "hf_rollout:HfRollout"
    for case in ("one", "two"):
        for check in ("prompt_ids", "completion_logprobs", "greedy_tokens", "self_consistency"):
            got = verdicts(summary, check, case)
            assert got and all(v["verdict"] == "pass" for v in got), (check, case, got)


def test_missing_capability_and_inexpressible_case_are_skipped_with_reasons(run):
    _, summary, _ = run
    for case in ("one", "two"):
        (v,) = verdicts(summary, "prompt_logprobs", case)
        assert v["verdict"] == "skipped" and "lacks prompt_logprobs" in v["detail"], v
    (v,) = verdicts(summary, "completion_logprobs", "min-p")
    assert v["verdict"] == "skipped" and "RolloutConfig has no field for min_p" in v["detail"], v


def test_bad_rollout_entries_are_configuration_errors(tmp_path):
    p = parity(tmp_path, "bad", "--backends", "reference,mine=hf_rollout:HfRollout", "--backend-python",
               "mine=/no/such/venv")
    said = p.stdout + p.stderr  # nox passes the harness's stderr on as its stdout
    assert p.returncode == 2 and "--backend-python 'mine=/no/such/venv'" in said and "Traceback" not in said
    p = parity(tmp_path, "bad2", "--backends", "reference,vllm=hf_rollout:HfRollout")
    said = p.stdout + p.stderr
    assert p.returncode == 2 and "is a built-in backend" in said and "Traceback" not in said
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()
