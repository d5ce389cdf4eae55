"""Served backends, pure logic and the server lifecycle (no engine): the normalisation of vLLM's OpenAI
answers, external-server entries, loopback only, round-robin placement, and that a server started by the
harness dies with its owner (normal stop, SIGKILL of the owner, a vanished ancestor) and that a malformed,
hanging or dead server surfaces as ServerError with the cause. The stand-in server is Python's own
http.server, on loopback; the real engines' servers are tested in tests/backends/test_*_http.py."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.backends import registry
from harness.backends.http import external
from harness.backends.http.leash import ancestry, start_time
from harness.backends.http.pool import Pool
from harness.backends.http.server import Client, Server, ServerError, free_port, require_loopback
from harness.backends.http.vllm import prompt_side, request_body, token_id, top_of, unfloor

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- vLLM OpenAI answers -> records
def test_unfloor_turns_the_api_floor_back_into_minus_infinity():
    assert unfloor(-9999.0) == -math.inf
    assert unfloor(-12000.5) == -math.inf
    assert unfloor(-3.5) == -3.5
    assert unfloor(None) is None


def test_token_ids_are_read_from_the_placeholder_never_from_text():
    assert token_id("token_id:383") == 383
    with pytest.raises(ServerError, match="token_id:N"):
        token_id(" the")


def test_top_keeps_the_k_largest_entries_by_id():
    # the API sends the sampled token first, then the top k (here the sampled token 9 is rank 3 of k=2)
    d = {"token_id:9": -2.5, "token_id:4": -0.5, "token_id:7": -1.0}
    assert top_of(d, 2) == {4: -0.5, 7: -1.0}
    assert top_of({"token_id:4": -9999.0}, 1) == {4: -math.inf}
    assert top_of(None, 1) is None


def test_prompt_side_first_entry_none_and_ranks():
    plp = [None, {"5": {"logprob": -1.0, "rank": 2, "decoded_token": "a"},
                  "8": {"logprob": -0.2, "rank": 1, "decoded_token": "b"}}]
    lps, top = prompt_side([3, 5], plp, 1)
    assert lps == [None, -1.0]
    assert top == [None, {8: -0.2}]
    with pytest.raises(ServerError, match="3-token prompt"):
        prompt_side([3, 5, 6], plp, 1)
    with pytest.raises(ServerError, match="lack the prompt token"):
        prompt_side([3, 6], plp, 1)


def test_request_body_is_token_ids_and_every_field_explicit():
    fields = {"n": 2, "temperature": 0.7, "top_k": 0, "seed": 3, "max_tokens": 5, "logprobs": 1,
              "logit_bias": {7: -100.0}, "detokenize": True}
    body = request_body([1, 2], fields)
    assert body["prompt"] == [1, 2]
    assert body["return_tokens_as_token_ids"] and body["return_token_ids"]
    assert body["logit_bias"] == {"7": -100.0}
    assert "detokenize" not in body  # not a completions field: the server always detokenizes
    assert body["seed"] == 3 and body["n"] == 2


# ---------------------------------------------------------------- configuration
def test_loopback_only():
    assert require_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert require_loopback("http://localhost:1")
    for bad in ("http://10.0.0.1:80", "http://example.com:80", "http://0.0.0.0:1"):
        with pytest.raises(ValueError, match="loopback"):
            require_loopback(bad)


def test_external_entries():
    assert external.parse("ext=http://127.0.0.1:9000") == ("ext", "http://127.0.0.1:9000", None)
    assert external.parse("srv2=sglang_jax:http://127.0.0.1:9") == ("srv2", "http://127.0.0.1:9", "sglang_jax")
    with pytest.raises(ValueError, match="engine"):
        external.parse("ext=tgi:http://127.0.0.1:9")
    with pytest.raises(ValueError, match="loopback"):
        external.parse("ext=http://192.168.1.2:9")
    with pytest.raises(ValueError, match="NAME=URL"):
        external.parse("Ext!=http://127.0.0.1:9")
    assert set(external.ENGINES) == {b.serves for b in registry.served().values()}


def test_external_backend_resolves_to_its_engines_runner(monkeypatch):
    from harness.backends import base

    monkeypatch.setenv(external.engine_env("ext"), "vllm")
    assert base.is_backend("ext") and base.venv_of("ext") == "vllm"
    assert base.venv_of("sglang_jax_http") == "sglang_jax" and base.venv_of("reference") == "reference"
    assert not base.is_backend("nope")


# ---------------------------------------------------------------- placement
class _Fake:
    def __init__(self, i):
        self.url = f"http://127.0.0.1:{i}"


def test_round_robin_placement_moves_on_every_call():
    pool = Pool.__new__(Pool)
    pool.clients, pool.servers, pool._start = [_Fake(1), _Fake(2)], [None, None], None
    pool.offset, pool.max_inflight, pool.last_placement = 0, 2, []
    import threading

    pool._lock = threading.Lock()
    first = pool.dispatch(list(range(5)), lambda c, r: (c.url[-1], r))
    assert [r for _, r in first] == list(range(5))  # answers in request order
    assert [c for c, _ in first] == ["1", "2", "1", "2", "1"]
    second = pool.dispatch(list(range(5)), lambda c, r: c.url[-1])
    assert second == ["2", "1", "2", "1", "2"]  # a repeated batch lands on the other server


# ---------------------------------------------------------------- lifecycle with a stand-in server
STUB = textwrap.dedent("""
    import http.server, sys
    mode = sys.argv[2]
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            if mode == "hang" and self.path != "/health":
                import time; time.sleep(60)
            body = b"{not json" if mode == "malformed" and self.path != "/health" else b'{"ok": true}'
            self.send_response(200); self.end_headers(); self.wfile.write(body)
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def _stub(tmp_path: Path, mode: str = "ok", start_timeout: float = 30) -> Server:
    script = tmp_path / "stub.py"
    script.write_text(STUB)
    port = free_port()
    return Server([sys.executable, str(script), str(port), mode], name="stub", health="/health", port=port,
                  log=tmp_path / "logs" / "stub.log", start_timeout=start_timeout, cwd=str(ROOT))


def _gone(pid: int, within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if start_time(pid) is None or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z":
            return True
        time.sleep(0.1)
    return False


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError):
                pass
    return out


def test_server_ready_then_stopped_with_its_group(tmp_path):
    s = _stub(tmp_path)
    s.wait_ready()
    assert s.client.get("/x") == {"ok": True}
    kids = _children(s.proc.pid)
    assert kids, "the leash runs the server as its child"
    s.stop()
    assert all(_gone(k) for k in kids + [s.proc.pid])
    assert "starting stub" in (tmp_path / "logs" / "stub.log").read_text()


def test_malformed_json_and_hangs_are_server_errors(tmp_path):
    s = _stub(tmp_path, "malformed")
    try:
        s.wait_ready()
        with pytest.raises(ServerError, match="malformed JSON"):
            s.client.get("/x")
    finally:
        s.stop()
    h = _stub(tmp_path, "hang")
    try:
        h.wait_ready()
        with pytest.raises(ServerError, match="no answer within 1s; the server was killed"):
            Client(h.url, timeout=1, server=h).get("/x")
        assert _gone(h.proc.pid)  # a hung server is replaced, never waited on again
    finally:
        h.stop()
    other = _stub(tmp_path, "hang")  # a server the client does not own (external): reported, left running
    try:
        other.wait_ready()
        with pytest.raises(ServerError, match="timed out|timeout"):
            Client(other.url, timeout=1).get("/x")
        assert other.alive
    finally:
        other.stop()


def test_dead_server_is_named_with_its_log(tmp_path):
    s = _stub(tmp_path)
    s.wait_ready()
    kid = _children(s.proc.pid)[0]
    os.kill(kid, signal.SIGKILL)
    assert _gone(s.proc.pid), "the leash follows its server"
    with pytest.raises(ServerError, match="died during GET /x"):
        s.client.get("/x")
    s.stop()


def test_server_never_ready_is_killed_at_the_timeout(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text("import time; time.sleep(120)")
    s = Server([sys.executable, str(script)], name="sleeper", health="/health", port=free_port(), log=None,
               start_timeout=2, cwd=str(ROOT))
    with pytest.raises(ServerError, match="not ready after 2s"):
        s.wait_ready()
    assert _gone(s.proc.pid)


OWNER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from harness.backends.http.server import Server, free_port
    port = free_port()
    s = Server([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)], name="owned",
               health="/", port=port, log=None, cwd=sys.argv[1])
    s.wait_ready()
    print(s.proc.pid, flush=True)
    time.sleep(300)
""")


@pytest.mark.parametrize("how", ["sigkill_owner", "ancestor_gone"])
def test_server_dies_with_its_owner(tmp_path, how):
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    # ancestor_gone: the owner runs under an intermediate process that is SIGKILLed, as a `parity run`
    # driver stopped by Ctrl-C leaves its recording processes behind
    argv = [sys.executable, str(script), str(ROOT)]
    if how == "ancestor_gone":
        argv = [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])", *argv]
    owner = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        leash = int(owner.stdout.readline())
        server = _children(leash)
        assert server
        if how == "sigkill_owner":
            owner.kill()
        else:
            owner.kill()  # the intermediate process; the owner itself lives on
        assert _gone(leash) and all(_gone(p) for p in server)
    finally:
        try:
            os.killpg(owner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        owner.wait()


def test_leash_ancestry_reads_proc():
    chain = ancestry()
    assert chain[0][0] == os.getpid() and chain[0][1] == start_time(os.getpid())
    assert json.dumps(chain)


def test_pool_replaces_a_dead_server_before_the_next_call(tmp_path):
    pool = Pool(2, start=lambda i: _stub(tmp_path))
    try:
        assert pool.dispatch([1, 2], lambda c, r: c.get("/x")) == [{"ok": True}] * 2
        os.killpg(pool.servers[1].proc.pid, signal.SIGKILL)
        # dead as the pool sees it (its exit collected), not merely signalled: a server that dies during a call
        # is that call's error, by design
        end = time.monotonic() + 10
        while pool.servers[1].alive and time.monotonic() < end:
            time.sleep(0.05)
        assert not pool.servers[1].alive
        assert pool.dispatch([1, 2], lambda c, r: c.get("/x")) == [{"ok": True}] * 2
        assert pool.restarts == 1 and all(s.alive for s in pool.servers)
    finally:
        pool.close()
    assert not any(s.alive for s in pool.servers)
