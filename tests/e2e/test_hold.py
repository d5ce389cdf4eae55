"""One engine for both phases (`parity record --hold`, what `parity run` starts), on the real reference backend.

The holding worker generates, reports, keeps its engine and waits for the driver's go
(state/<backend>.score-go) before it scores. Here the test plays the driver: it sees the
same worker generate and wait, kills a waiting worker (the supervisor must record that as
an error and start a new one, which scores), and checks that a complete run starts no
engine at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from harness.records import read_records, records_path
from harness.run import backend_command
from harness.supervise import generated_path, score_gate

ROOT = Path(__file__).parent.parent.parent
SUITE = ROOT / "tests" / "e2e" / "data" / "tiny.yaml"
TIMEOUT = 900


def record(run_dir: Path, env: dict | None = None) -> subprocess.Popen:
    cmd = backend_command("reference", "nox", ["--suite", str(SUITE), "--out", str(run_dir), "--phase", "all",
                                               "--hold", "--run-id", "h", "--quiet"])
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})


def state(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "state" / "reference.json").read_text())
    except (OSError, ValueError):
        return None


def wait(what: str, cond, proc: subprocess.Popen):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}"
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {TIMEOUT}s")


def keys(run_dir: Path, phase: str) -> list[tuple]:
    if not records_path(run_dir, "reference", phase).exists():
        return []
    return sorted((r.key.case_id, r.key.prompt_index, r.key.variant)
                  for r in read_records(records_path(run_dir, "reference", phase)) if r.kind != "session"
                  and r.kind != "error")


def errors(run_dir: Path, phase: str) -> list:
    if not records_path(run_dir, "reference", phase).exists():
        return []
    return [r for r in read_records(records_path(run_dir, "reference", phase)) if r.kind == "error"]


def test_the_worker_that_generated_holds_its_engine_then_scores(tmp_path):
    run_dir = tmp_path / "h"
    proc = record(run_dir, {"PARITY_PAUSE_IN_CASE": "generate:two:3"})
    try:
        generating = wait("generate two in flight",
                          lambda: (s := state(run_dir)) and s.get("case_id") == "two" and s, proc)
        waiting = wait("waiting between the phases", lambda: (s := state(run_dir)) and s.get("waiting") and s, proc)
        assert waiting["pid"] == generating["pid"]  # the same engine process, kept
        report = wait("the generate report", lambda: generated_path(run_dir, "reference").exists(), proc)
        assert report and json.loads(generated_path(run_dir, "reference").read_text())["exit_code"] == 0
        assert keys(run_dir, "generate") and not keys(run_dir, "score")  # nothing scored before the go
        time.sleep(1.0)
        assert state(run_dir)["pid"] == waiting["pid"] and not keys(run_dir, "score")
        score_gate(run_dir, "reference").touch()
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    assert [k for k in keys(run_dir, "score")] == sorted(k for k in keys(run_dir, "generate") if k[2] == "main")
    assert not errors(run_dir, "generate") and not errors(run_dir, "score")
    assert state(run_dir) is None  # every phase finished


def test_a_worker_killed_while_holding_is_an_error_and_a_new_one_scores(tmp_path):
    run_dir = tmp_path / "h"
    proc = record(run_dir)
    try:
        first = wait("waiting between the phases", lambda: (s := state(run_dir)) and s.get("waiting") and s, proc)
        wait("the generate report", lambda: generated_path(run_dir, "reference").exists(), proc)
        os.kill(first["pid"], signal.SIGKILL)
        second = wait("a new worker waiting",
                      lambda: (s := state(run_dir)) and s.get("waiting") and s["pid"] != first["pid"] and s, proc)
        assert second["generate_errors"] == 0  # it had nothing left to generate
        score_gate(run_dir, "reference").touch()
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, out[-3000:]  # a worker died: never a clean pass
    assert json.loads(generated_path(run_dir, "reference").read_text())["exit_code"] == 0  # generate was clean
    (err,) = errors(run_dir, "score")
    assert err.error_type == "WorkerCrashed" and "between the phases" in err.reason and err.key is None
    assert not errors(run_dir, "generate")
    assert keys(run_dir, "score") == sorted(k for k in keys(run_dir, "generate") if k[2] == "main")

    # again on the complete run: the error record is repaired away, nothing is pending, so no worker (no engine)
    # starts; the supervisor reports the generate phase itself and ends after the go
    again = record(run_dir)
    try:
        wait("the generate report", lambda: generated_path(run_dir, "reference").exists(), again)
        time.sleep(1.0)
        assert state(run_dir) is None and again.poll() is None  # no worker; still waiting for the go
        score_gate(run_dir, "reference").touch()
        out, _ = again.communicate(timeout=TIMEOUT)
    finally:
        if again.poll() is None:
            os.killpg(again.pid, signal.SIGKILL)
    assert again.returncode == 0, out[-3000:]
    assert "every case already recorded" in out
    assert not errors(run_dir, "score") and not errors(run_dir, "generate")
