"""sglang_jax_http: sglang-jax's real HTTP server (with the compat workarounds in the server process) against
the in-process SglangJaxRunner.

Run in the sglang-jax venv (`nox -s sglang_jax_tests`). The small suite of tests/backends/http_common.py is
recorded by `parity record --backend sglang_jax`, then `--backend sglang_jax_http`: the served path must give
the in-process tokens and logprobs (to the suite's 1e-4); the weight update, which 0.0.2's server has no
endpoint for, must be a skip with that reason, never a pass. Then a server killed under a live runner: the
call in flight fails with the cause, the next call gets a fresh server, and close() leaves nothing.
"""

from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip("sgl_jax", reason="tests/backends/test_sglang_jax_http.py runs in the sglang-jax venv")

from harness.backends.http.server import ServerError  # noqa: E402
from harness.model import embedded  # noqa: E402
from harness.spec import SamplingSpec  # noqa: E402
from tests.backends.http_common import ATOL, Pairs, record, servers_of, small_suite  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sglang-http")
    suite = small_suite(d)
    out = d / "run"
    for backend in ("sglang_jax", "sglang_jax_http"):
        done = record(backend, suite, out)
        log = (out / f"{backend}.log").read_text()[-4000:]
        assert done.returncode == 0, log
        assert not servers_of(os.getpid()), f"server processes survived `parity record --backend {backend}`"
    return out


def test_served_equals_in_process(run):
    pairs = Pairs(run, "sglang_jax_http", "sglang_jax")
    assert not pairs.errors["sglang_jax"]
    assert len(pairs.gen) == 2 + 2  # greedy x2 prompts, n=2 (update-b is skipped)
    for a, b in pairs.gen:
        assert b.completion_ids == a.completion_ids, a.key
        assert b.finish_reason == a.finish_reason and b.native_params == a.native_params
    d = pairs.max_dlogp()
    print(f"\nsglang_jax_http vs sglang_jax max |dlogp|: {d}")
    assert max(d.values()) <= ATOL, d
    assert pairs.score



def test_tunix_surface_served_equals_in_process(run):
    """generate(prompts, RolloutConfig) and get_per_token_logps, as a trainer calls them, on the served engine:
    the in-process rollout's rows and logprobs."""
    worst = Pairs(run, "sglang_jax_http", "sglang_jax").check_surface()
    print(f"\nsglang_jax_http vs sglang_jax tunix surface max |dlogp|: {worst:.3g}")
    assert worst <= ATOL

def test_weight_update_is_a_skip_with_the_reason(run):
    errs = Pairs(run, "sglang_jax_http", "sglang_jax").errors["sglang_jax_http"]
    assert errs and {e.key.case_id for e in errs} == {"update-b"}
    assert all(e.error_type == "Skipped" and "no endpoint that loads weights" in e.reason for e in errs)


def test_dead_server_is_an_error_then_restarted(tmp_path, monkeypatch):
    from harness.backends.http.sglang_jax import SglangJaxHttpRunner

    monkeypatch.setenv("PARITY_SERVER_LOG_DIR", str(tmp_path))
    spec = SamplingSpec(temperature=0, max_tokens=3)
    runner = SglangJaxHttpRunner(embedded("A"))
    try:
        first = runner.generate([[3, 5, 9]], spec)
        leash = runner.rollout._engine.pool.servers[0].proc.pid
        os.killpg(leash, signal.SIGKILL)
        with pytest.raises(ServerError, match="died during POST /generate"):  # the request in flight
            runner.rollout._engine.pool.clients[0].post("/generate", {"input_ids": [3, 5, 9]})
        again = runner.generate([[3, 5, 9]], spec)  # a fresh server, as a crashed engine process is replaced
        assert again[0][0].completion_ids == first[0][0].completion_ids
        assert runner.rollout._engine.pool.restarts == 1
    finally:
        runner.close()
    assert not servers_of(os.getpid())
