"""Faults the CI way, on the real reference backend: kills anywhere in the process tree, Ctrl-C, resume.

A run of the two-case suite tests/e2e/data/tiny.yaml is interrupted while a chosen
case is in flight in a chosen phase (the backend's state file names it): the
worker, the supervisor or the driver is SIGKILLed, or the whole terminal group
gets SIGINT as on Ctrl-C. Afterwards no process of the run may be alive, and
`--resume` must leave exactly the records of an uninterrupted run (same keys,
same values; only run ids, timings and session records differ).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.proctree import alive, descendants, identity
from harness.rundir import read_run

ROOT = Path(__file__).parent.parent.parent
SUITE = ROOT / "tests" / "e2e" / "data" / "tiny.yaml"
TIMEOUT = 1200


def parity_argv(out: Path, run_id: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness", "run", "--suite", str(SUITE), "--backends", "reference",
            "--out", str(out), "--run-id", run_id, "--no-selftest", "--quiet", *extra]


def comparable(run_dir: Path) -> dict:
    """Every generation and score record by its key, without what legitimately differs between runs."""
    out = {}
    for r in read_run(run_dir):
        if r.kind in ("generation", "score"):
            d = r.model_dump(mode="json", exclude={"run_id", "timings"})
            out[(r.backend, r.phase, r.kind, getattr(r, "source_backend", ""), *r.key.model_dump().values())] = d
    return out


def errors(run_dir: Path) -> list:
    return [r for r in read_run(run_dir) if r.kind == "error"]


def processes_of(out: Path) -> list[str]:
    """Live processes whose command line names the output directory (driver, nox, supervisor, worker)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(out) in cmd and state != "Z":
            found.append(f"{entry}: {cmd[:200]}")
    return found


def tree(pid: int) -> list[str]:
    """Every process below `pid` now (engine processes included, whatever their command line)."""
    return [identity(p) for p in descendants(pid)]


def assert_nothing_left(out: Path, within: float = 10.0, snapshot: list[str] = ()) -> None:
    """No process names the output directory, and none of the run's tree as it was before the signal lives."""
    deadline = time.monotonic() + within
    while ((left := processes_of(out) + [p for p in snapshot if alive(p)])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left


def wait_in_flight(run_dir: Path, phase: str, case_id: str, proc: subprocess.Popen,
                   backend: str = "reference") -> dict:
    state = run_dir / "state" / f"{backend}.json"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            info = json.loads(state.read_text())
            if info["phase"] == phase and info["case_id"] == case_id:
                return info
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, f"the run ended (code {proc.returncode}) before {phase} {case_id} started"
        time.sleep(0.05)
    raise AssertionError(f"{phase} {case_id} never started")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("base")
    proc = subprocess.run(parity_argv(out, "base"), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    recs = comparable(out / "base")
    assert {k[5] for k in recs} == {"one", "two"} and not errors(out / "base")
    return recs


@pytest.mark.parametrize("phase", ["generate", "score"])
@pytest.mark.parametrize("victim", ["worker", "supervisor", "driver"])
def test_kill_then_resume_gives_the_uninterrupted_records(uninterrupted, tmp_path, victim, phase):
    out, run_dir = tmp_path / "reports", tmp_path / "reports" / "r"
    # The reference scores a case in milliseconds: the worker holds case two (harness/recorder.py _pause_point) so
    # that the kill lands inside it, not before or after.
    env = {**os.environ, "PARITY_PAUSE_IN_CASE": f"{phase}:two:8"}
    proc = subprocess.Popen(parity_argv(out, "r"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        info = wait_in_flight(run_dir, phase, "two", proc)
        pid = {"worker": info["pid"], "supervisor": parent_of(info["pid"]), "driver": proc.pid}[victim]
        below = tree(pid)
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, err[-3000:]  # an error or a kill, never a pass
    assert_nothing_left(out, snapshot=below)  # nothing the killed process owned outlives it
    if victim != "driver":  # the driver went on, and said what failed
        assert any("two" in (e.key.case_id if e.key else "") or e.error_type == "BackendProcessFailed"
                   for e in errors(run_dir)), err[-3000:]

    resumed = subprocess.run(parity_argv(out, "r", "--resume"), cwd=ROOT, capture_output=True, text=True,
                             timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert not errors(run_dir), [e.reason for e in errors(run_dir)]
    got = comparable(run_dir)
    assert got.keys() == uninterrupted.keys()
    assert got == uninterrupted
    log = (run_dir / "logs" / f"reference.{phase}.log").read_text()
    assert log.count("attempt started") == 2  # the crashed attempt's log is kept, the next one appended
    assert_nothing_left(out)


def test_ctrl_c_stops_every_process_and_resume_completes(uninterrupted, tmp_path):
    """`./dev parity` in its own terminal group; Ctrl-C (SIGINT to the group) while the score phase runs."""
    out, run_dir = tmp_path / "reports", tmp_path / "reports" / "c"
    argv = ["./dev", "parity", *parity_argv(out, "c")[4:]]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PARITY_PAUSE_IN_CASE": "score:two:8"})
    try:
        wait_in_flight(run_dir, "score", "two", proc)
        below = tree(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, err[-3000:]
    assert_nothing_left(out, within=3.0, snapshot=below)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["interrupted"]["signal"] == "SIGINT" and manifest["interrupted"]["phase"] == "score"
    assert not (out / "latest").exists()  # an interrupted run is not the latest report
    # nothing half-done was recorded: the interrupted case is absent, not an error
    assert not errors(run_dir)
    assert ("reference", "score", "score", "reference", "tiny", "two") not in {k[:6] for k in comparable(run_dir)}

    resumed = subprocess.run(parity_argv(out, "c", "--resume"), cwd=ROOT, capture_output=True, text=True,
                             timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert comparable(run_dir) == uninterrupted
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["interrupted"] is None and manifest["interruptions"][0]["signal"] == "SIGINT"

