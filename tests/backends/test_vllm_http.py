"""vllm_http: vLLM's real OpenAI server, started by the harness, against the in-process VllmRunner.

Run in the vLLM venv (`nox -s vllm_tests`). A small suite (greedy with an id prompt, seeded n = 2, an update
to weight set B) is recorded by `parity record --backend vllm` and then `--backend vllm_http` into one run
directory: the served path must give the in-process tokens and logprobs (to the suite's 1e-4), also after
the weight update through the server's own endpoints. Then the process checks: nothing of a server
survives a run, a failed run (server never ready), or SIGINT of a `parity run` driver while its server starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("vllm", reason="tests/backends/test_vllm_http.py runs in the vLLM venv (nox -s vllm_tests)")

from tests.backends.http_common import (  # noqa: E402
    ATOL, ROOT, Pairs, kill_tree_under, record, servers_of, small_suite, wait_none)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("vllm-http")
    suite = small_suite(d)
    out = d / "run"
    walls = {}
    for backend in ("vllm", "vllm_http"):
        t0 = time.perf_counter()
        done = record(backend, suite, out)
        walls[backend] = time.perf_counter() - t0
        assert done.returncode == 0, (out / f"{backend}.log").read_text()[-4000:]
        left = servers_of(os.getpid())  # every server of the record ran under this process
        assert not left, f"server processes {left} survived `parity record --backend {backend}`"
    print(f"\nwall: {walls}")
    return out


def test_served_equals_in_process(run):
    pairs = Pairs(run, "vllm_http", "vllm")
    assert not pairs.errors["vllm_http"] and not pairs.errors["vllm"]
    assert len(pairs.gen) == 2 + 2 + 1  # greedy x2 prompts, n=2, update-b
    for a, b in pairs.gen:
        assert b.completion_ids == a.completion_ids, a.key
        assert b.finish_reason == a.finish_reason and b.prompt_ids == a.prompt_ids
        assert b.prompt_logprobs[0] is None and len(b.prompt_logprobs) == len(b.prompt_ids)
        assert set(b.completion_top[0]) == set(a.completion_top[0])
    d = pairs.max_dlogp()
    print(f"\nvllm_http vs vllm max |dlogp|: {d}")
    assert max(d.values()) <= ATOL, d
    assert pairs.score, "vllm_http scored vllm's completions"



def test_tunix_surface_served_equals_in_process(run):
    """generate(prompts, RolloutConfig) and get_per_token_logps, as a trainer calls them, on the served engine:
    the in-process rollout's rows and logprobs."""
    worst = Pairs(run, "vllm_http", "vllm").check_surface()
    print(f"\nvllm_http vs vllm tunix surface max |dlogp|: {worst:.3g}")
    assert worst <= ATOL

def test_weight_update_through_the_server(run):
    """update-b ran on B through /collective_rpc reload_weights + /reset_prefix_cache: tokens equal vLLM's B."""
    pairs = Pairs(run, "vllm_http", "vllm")
    (a, b), = [(a, b) for a, b in pairs.gen if a.key.case_id == "update-b"]
    assert b.model_hash == a.model_hash and b.completion_ids == a.completion_ids


def test_failed_start_leaves_nothing(tmp_path):
    suite = small_suite(tmp_path)
    done = record("vllm_http", suite, tmp_path / "run", PARITY_HTTP_START_TIMEOUT="1")
    assert done.returncode == 2
    log = (tmp_path / "run" / "vllm_http.log").read_text()
    assert "not ready after 1s" in log
    assert not servers_of(os.getpid())


def test_sigint_of_the_driver_leaves_no_server(tmp_path):
    """Ctrl-C of `parity run` while its vllm_http server starts: the server's processes end with the driver."""
    suite = small_suite(tmp_path)
    out = tmp_path / "runs"
    driver = subprocess.Popen([sys.executable, "-m", "harness", "run", "--launcher", "direct", "--backends", "vllm_http",
                               "--suite", str(suite), "--out", str(out), "--no-selftest", "--quiet"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(servers_of(driver.pid)) < 2 and time.monotonic() < deadline:  # the leash and the server
            assert driver.poll() is None, "the driver ended before its server started"
            time.sleep(0.5)
        started = servers_of(driver.pid)
        assert len(started) >= 2, "no server started within 300 s"
        os.kill(driver.pid, signal.SIGINT)
        driver.wait(timeout=60)
        left = wait_none(driver.pid)
        assert not left, f"server processes {left} survived SIGINT of the driver"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        kill_tree_under(out)
