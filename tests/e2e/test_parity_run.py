"""The main job end to end: `parity run` over every real backend, in their own venvs via nox.

This is what `./dev parity` does; here it writes into a temporary directory and
its outcome is checked field by field. It takes minutes (each engine starts,
sglang-jax compiles), so it runs once per session and every test reads it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.rundir import read_run
from harness.suite import load_suite

ROOT = Path(__file__).parent.parent.parent
BACKENDS = ["reference", "vllm", "sglang_jax"]


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    out = Path(os.environ.get("PARITY_E2E_OUT") or tmp_path_factory.mktemp("reports"))
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), "--run-id", "e2e",
                           "--backends", ",".join(BACKENDS)], cwd=ROOT, capture_output=True, text=True,
                          timeout=3000)
    sys.stderr.write(proc.stderr[-6000:])
    return proc, out


def test_exit_code_is_pass(run):
    proc, _ = run
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_reports_written_to_run_and_latest(run):
    _, out = run
    for d in (out / "e2e", out / "latest"):
        for name in ("summary.json", "index.html", "junit.xml", "run.json"):
            assert (d / name).is_file(), d / name


def test_every_backend_ran_its_real_engine(run):
    _, out = run
    summary = json.loads((out / "e2e" / "summary.json").read_text())
    assert summary["verdict"] == "pass"
    sessions = {(r.backend, r.phase): r for r in read_run(out / "e2e") if r.kind == "session"}
    for b in BACKENDS:
        assert (b, "generate") in sessions and (b, "score") in sessions, b
    assert "vllm" in sessions[("vllm", "generate")].versions
    assert any(k.startswith("sgl") for k in sessions[("sglang_jax", "generate")].versions)


def test_every_case_recorded_by_every_backend(run):
    _, out = run
    suite = load_suite(ROOT / "cases" / "default.yaml")
    gens = [r for r in read_run(out / "e2e") if r.kind == "generation"]
    errors = [r for r in read_run(out / "e2e") if r.kind == "error"]
    assert not errors, [e.reason for e in errors]
    for b in BACKENDS:
        assert {g.key.case_id for g in gens if g.backend == b} == {c.id for c in suite.cases}, b


def test_every_named_check_has_a_passing_verdict(run):
    _, out = run
    summary = json.loads((out / "e2e" / "summary.json").read_text())
    suite = load_suite(ROOT / "cases" / "default.yaml")
    named = {c for case in suite.cases for c in case.checks}
    seen = {c["name"] for c in summary["checks"]}
    # a check family (rollout_contract) gives one verdict name per field: rollout_contract_<field>
    missing = {n for n in named if n not in seen and not any(s.startswith(f"{n}_") for s in seen)}
    assert not missing, missing
    bad = [c for c in summary["checks"] if c["verdict"] not in ("pass", "skipped")]
    assert not bad, bad[:5]
