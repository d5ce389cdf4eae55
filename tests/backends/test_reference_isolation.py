"""Faults on a real backend process: SIGKILL and a hang mid-run, and --resume after a kill.

The reference backend is used because it is the fastest real backend; the
supervision code is the same for every backend. The runs record part of the
default suite (SMALL: the cases the tests stop in, a case before them, an
unseeded sampled case and a weight update after them), not all of it: what is
tested is the supervisor, which runs every case alike; every case of the full
suite goes through the reference in test_reference.py and tests/e2e.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.records import read_records, records_path
from harness.suite import load_suite

ROOT = Path(__file__).parent.parent.parent
# cases of cases/default.yaml, in its order: one before the cases the tests stop in (greedy-ids, sample-t08,
# sample-topk-topp), then an unseeded sampled case and a weight update (to B) after them
SMALL = ["greedy-eos", "greedy-ids", "sample-t08", "sample-topk-topp", "sample-minp-unseeded", "update-b"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    doc = yaml.safe_load((ROOT / "cases" / "default.yaml").read_text())
    doc["cases"] = [c for c in doc["cases"] if c["id"] in SMALL]
    path = tmp_path_factory.mktemp("suite") / "small.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert [c.id for c in load_suite(path).cases] == SMALL
    return path


N_CASES = len(SMALL)  # every case of the suite must end with an outcome


def start(suite: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "record", "--backend", "reference", "--suite", str(suite),
                             "--out", str(out), "--quiet", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_case(out: Path, case_id: str, timeout: float = 120) -> dict:
    state = out / "state" / "reference.json"
    end = time.time() + timeout
    while time.time() < end:
        try:
            info = json.loads(state.read_text())
            if info["case_id"] == case_id and info["phase"] == "generate":
                return info
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"case {case_id} never started")


def freeze_in_flight(out: Path, case_id: str) -> dict:
    """Stop the worker while it is inside `case_id` (or the case right after: read back which)."""
    info = wait_for_case(out, case_id)
    os.kill(info["pid"], signal.SIGSTOP)
    return json.loads((out / "state" / "reference.json").read_text())


# an unseeded sampled case draws anew in every run: only its keys must match between two runs
UNSEEDED = {c.id for c in load_suite(ROOT / "cases" / "default.yaml").cases
            if c.id in SMALL and c.sampling.seed is None and not c.sampling.greedy}
assert UNSEEDED  # the runs include a case that draws anew


def content(out: Path, phase: str) -> list:
    recs = read_records(records_path(out, "reference", phase))
    rows = []
    for r in recs:
        if r.kind in ("generation", "score"):
            d = r.model_dump(mode="json", exclude={"timings", "run_id"})
            if r.key.case_id in UNSEEDED:
                d = {"key": d["key"], "kind": d["kind"], "source_backend": d.get("source_backend")}
            rows.append(json.dumps(d, sort_keys=True))
    return sorted(rows)


def gen_cases(out: Path) -> dict:
    by = {}
    for r in read_records(records_path(out, "reference", "generate")):
        if r.kind != "session":
            by.setdefault(r.key.case_id, set()).add(r.kind)
    return by


def test_sigkill_mid_case_is_recorded_and_the_rest_runs(suite, tmp_path):
    proc = start(suite, tmp_path)
    info = freeze_in_flight(tmp_path, "greedy-ids")
    os.kill(info["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    by = gen_cases(tmp_path)
    assert by[info["case_id"]] == {"error"}
    errors = [r for r in read_records(records_path(tmp_path, "reference", "generate")) if r.kind == "error"]
    assert len(errors) == 1 and "SIGKILL" in errors[0].reason and errors[0].key.case_id == info["case_id"]
    assert all(kinds == {"generation"} for cid, kinds in by.items() if cid != info["case_id"])
    assert len(by) == N_CASES
    scored = {r.key.case_id for r in read_records(records_path(tmp_path, "reference", "score")) if r.kind == "score"}
    assert info["case_id"] not in scored and len(scored) == N_CASES - 1


def test_hang_past_case_timeout_is_recorded_and_the_rest_runs(suite, tmp_path):
    proc = start(suite, tmp_path, "--case-timeout", "45")  # generous: a busy machine slows every case
    info = freeze_in_flight(tmp_path, "sample-t08")  # SIGSTOP: the worker hangs
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    errors = [r for r in read_records(records_path(tmp_path, "reference", "generate")) if r.kind == "error"]
    assert [e.key.case_id for e in errors] == [info["case_id"]] and "timed out" in errors[0].reason
    assert len(gen_cases(tmp_path)) == N_CASES


def test_resume_after_kill_equals_uninterrupted_run(suite, tmp_path):
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    assert start(suite, clean).wait(timeout=300) == 0
    proc = start(suite, broken)
    info = freeze_in_flight(broken, "sample-topk-topp")
    os.killpg(proc.pid, signal.SIGKILL)  # the whole record command dies, supervisor included
    os.kill(info["pid"], signal.SIGKILL)
    proc.wait(timeout=60)
    partial = content(broken, "generate")
    assert 0 < len(partial) < len(content(clean, "generate"))
    assert start(suite, broken).wait(timeout=300) == 0
    assert content(broken, "generate") == content(clean, "generate")
    assert content(broken, "score") == content(clean, "score")
