"""`python -m harness.rl run --jobs N`: every planned run started once, at most N at a time, whole log lines.

The training runs are faked (run_one replaced): what is tested is the driver's pool, not training
(tests/rl runs real ones; the curves' independence of --jobs was measured, docs/rl.md).
"""

from __future__ import annotations

import threading
import time

import pytest

from harness.rl import cli, driver


def fake_run(monkeypatch, tmp_path, jobs: int, seeds: int = 5):
    state = {"running": 0, "peak": 0, "started": []}
    lock = threading.Lock()
    first = threading.Barrier(jobs, timeout=60)  # the first `jobs` runs must all be running at once

    def run_one(cfg, run_dir, launcher, timeout, log):
        with lock:
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
            state["started"].append((cfg.label, cfg.seed, timeout))
            wait = len(state["started"]) <= jobs
        if wait:
            first.wait()  # (BrokenBarrierError if the pool ran fewer than `jobs` at once)
            time.sleep(0.3)  # the pool full: room for a run too many to start, and be counted in the peak
        log(f"[rl]   {cfg.algo} {cfg.label} seed {cfg.seed}: done")
        with lock:
            state["running"] -= 1
        return {"status": "ok"}

    import harness.rl.compare as compare
    import harness.rl.publish as publish

    monkeypatch.setattr(driver, "run_one", run_one)
    monkeypatch.setattr(compare, "compare_run", lambda *a, **k: {"verdicts": []})
    monkeypatch.setattr(compare, "print_summary", lambda c: None)
    monkeypatch.setattr(publish, "publish", lambda run_dir, comparison, log: 0)
    args = cli.build_parser().parse_args(["run", "--engines", "vanilla,vllm", "--algos", "grpo", "--seeds", str(seeds),
                                          "--jobs", str(jobs), "--timeout", "123", "--out", str(tmp_path),
                                          "--run-id", f"j{jobs}"])
    args.launcher = "current"  # no venv install step
    assert driver.run_all(args) == 0
    return state


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_every_run_once_at_most_jobs_at_a_time(monkeypatch, tmp_path, capsys, jobs):
    state = fake_run(monkeypatch, tmp_path, jobs)
    plan = [(label, seed) for label in ("vanilla", "vllm") for seed in range(5)]
    assert sorted((label, seed) for label, seed, _ in state["started"]) == sorted(plan)
    assert state["peak"] == jobs  # filled (the barrier) and never overflowing
    assert {t for _, _, t in state["started"]} == {123.0}  # --timeout is per run, whatever --jobs is
    out = capsys.readouterr().out.splitlines()
    assert sum(1 for ln in out if ln.endswith(": done")) == len(plan)
    assert sum(1 for ln in out if ln.endswith(" ...")) == len(plan)
    assert all(ln.startswith("[rl]") for ln in out)  # whole lines, never two interleaved


def test_sequential_keeps_the_plan_order(monkeypatch, tmp_path):
    state = fake_run(monkeypatch, tmp_path, 1)
    assert [(label, seed) for label, seed, _ in state["started"]] == \
        [(label, seed) for label in ("vanilla", "vllm") for seed in range(5)]


def test_default_jobs_is_two_or_the_cores(monkeypatch):
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 1)
    assert cli.default_jobs() == 1
    monkeypatch.setattr(cli.os, "cpu_count", lambda: None)
    assert cli.default_jobs() == 1
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 16)
    assert cli.default_jobs() == 2
    assert cli.build_parser().parse_args(["run"]).jobs == 2
