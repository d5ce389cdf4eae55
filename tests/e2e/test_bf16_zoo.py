"""The default suite on the tied-GQA zoo model in bfloat16, every real backend: the bfloat16 tolerance
profile (harness/checks/profiles/bfloat16.yaml, from the committed calibration study) must pass it.

A run of minutes (both engines start and compile again in bf16), once per session.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.rundir import read_run

ROOT = Path(__file__).parent.parent.parent
BACKENDS = ["reference", "vllm", "sglang_jax"]
MODEL = "zoo:qwen3-gqa-tied"


@pytest.fixture(scope="session")
def bf16_run(tmp_path_factory):
    out = Path(os.environ.get("PARITY_E2E_OUT") or tmp_path_factory.mktemp("reports"))
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), "--run-id", "e2e-bf16",
                           "--model", MODEL, "--dtype", "bfloat16", "--backends", ",".join(BACKENDS),
                           "--no-selftest"], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    sys.stderr.write(proc.stderr[-6000:])
    return proc, out / "e2e-bf16"


def test_bf16_zoo_run_passes(bf16_run):
    proc, run = bf16_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verdict"] == "pass"
    bad = [c for c in summary["checks"] if c["verdict"] not in ("pass", "skipped", "measured")]
    assert not bad, bad[:5]


def test_bf16_engines_ran_in_bf16_under_the_calibrated_profile(bf16_run):
    _, run = bf16_run
    sessions = [r for r in read_run(run) if r.kind == "session" and r.backend != "reference"]
    assert {r.backend for r in sessions} == {"vllm", "sglang_jax"}
    assert all(r.dtype == "bfloat16" for r in sessions), [(r.backend, r.dtype) for r in sessions]
    checks = json.loads((run / "checks.json").read_text())["verdicts"]
    assert not [v for v in checks if v["check"] == "tolerance_profile"]  # a calibrated profile applied
    gated = [v for v in checks if v["check"] == "completion_logprobs" and v["backends"][0] != "reference"]
    assert gated and all(v["threshold"] > 1e-4 and v["metric"] != "max_abs_dlogp" for v in gated)
