"""Serving processes the harness starts and stops itself, and the bounded HTTP client that talks to them.

`Server` starts an engine's HTTP server on 127.0.0.1 at a free port, through
`harness.backends.http.leash` (the process group dies with its owner), writes
its output to a log file, waits for readiness with a timeout, and kills and
reaps the whole group on `stop()` (also at interpreter exit and on SIGTERM).

`Client.post` / `Client.get` are the only way the backends talk HTTP: loopback
URLs only, a timeout on every request, a bounded number of attempts, and any
answer that is not a JSON object/array with status 200 raised as `ServerError`
with the cause (status, body excerpt, or the server's death with its log tail).
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from pathlib import Path
from typing import Any

from harness import proctree

LOOPBACK = "127.0.0.1"
_LIVE: "weakref.WeakSet[Server]" = weakref.WeakSet()


class ServerError(RuntimeError):
    """A server failed: did not start, died, hung past a timeout, or answered something unusable."""


def require_loopback(url: str) -> str:
    """The harness sends traffic to loopback only: anything else is a configuration error."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{url!r}: the harness talks to servers on loopback only (127.0.0.1, ::1, localhost)")
    return url.rstrip("/")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def log_tail(path: Path | None, n: int = 25) -> str:
    if path is None or not path.is_file():
        return ""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


class Client:
    """Bounded JSON-over-HTTP calls to one loopback base URL."""

    def __init__(self, url: str, timeout: float = 600.0, server: "Server | None" = None):
        self.url = require_loopback(url)
        self.timeout = timeout
        self.server = server

    def _dead(self, what: str) -> ServerError | None:
        if self.server is not None and not self.server.alive:
            return ServerError(f"server {self.url} died during {what} (exit status {self.server.returncode}); "
                               f"last log lines ({self.server.log}):\n{log_tail(self.server.log)}")
        return None

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None,
                expect_json: bool = True, hang_kills: bool = True) -> Any:
        """One bounded call. A server the harness owns that does not answer in time is killed (as the
        in-process engine process is on a call timeout): the next call gets a fresh one."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        what = f"{method} {path}"
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:2000].decode(errors="replace")
            raise ServerError(f"{what} -> HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            dead = self._dead(what)
            if dead is not None:
                raise dead from None
            hung = isinstance(reason, TimeoutError) or isinstance(e, TimeoutError)
            if hung and hang_kills and self.server is not None:
                self.server.stop()
                raise ServerError(f"{what} to {self.url}: no answer within {timeout or self.timeout:.0f}s; the server "
                                  f"was killed (a fresh one serves the next call). Last log lines ({self.server.log}):"
                                  f"\n{log_tail(self.server.log)}") from None
            raise ServerError(f"{what} to {self.url} failed: {type(reason).__name__}: "
                              f"{reason} (timeout {timeout or self.timeout:.0f}s)") from None
        if not expect_json:
            return raw.decode(errors="replace")
        try:
            out = json.loads(raw)
        except ValueError as e:
            raise ServerError(f"{what}: the server answered malformed JSON ({e}): {raw[:300]!r}") from None
        if not isinstance(out, (dict, list)):
            raise ServerError(f"{what}: expected a JSON object or array, got {raw[:300]!r}")
        return out

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)


_FIRST_LINEAGE: list[tuple[int, str]] = []


def _lineage() -> str:
    """This process's ancestry when it started its first server, for the leash to watch. A later start
    (a restart after a crash) in a process whose ancestry has since lost a member (the `parity run` driver
    ended while this recording process lives on) is refused: nothing would stop that server."""
    from harness.backends.http.leash import ancestry, start_time

    if not _FIRST_LINEAGE:
        _FIRST_LINEAGE.extend(ancestry())
    gone = [p for p, t in _FIRST_LINEAGE if start_time(p) != t]
    if gone:
        raise ServerError(f"not starting a server: process(es) {gone} that started this recording have ended")
    return ",".join(f"{p}:{t}" for p, t in _FIRST_LINEAGE)


class Server:
    """One engine server on 127.0.0.1:<free port>, owned by this process (see the module docstring)."""

    def __init__(self, argv: list[str], *, name: str, health: str, port: int, log: Path | None,
                 env: dict[str, str] | None = None, start_timeout: float = 600.0, cwd: str | None = None):
        lineage = _lineage()
        self.name, self.health, self.port = name, health, port
        self.url = f"http://{LOOPBACK}:{port}"
        self.log = log
        self.argv = argv
        self.start_timeout = start_timeout
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            self._log_fh = log.open("a")
            self._log_fh.write(f"[harness] {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {' '.join(argv)}\n")
            self._log_fh.flush()
        else:
            self._log_fh = subprocess.DEVNULL
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.backends.http.leash", "--", *argv],
            stdin=subprocess.PIPE, stdout=self._log_fh, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {}), "PARITY_LEASH_ANCESTORS": lineage}, cwd=cwd, start_new_session=True)
        _LIVE.add(self)
        self.client = Client(self.url, server=self)
        self.ready_s: float | None = None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def wait_ready(self) -> float:
        """Poll the health endpoint until it answers 200, the server dies, or start_timeout passes."""
        deadline = self.started_at + self.start_timeout
        while True:
            if not self.alive:
                self.stop()
                raise ServerError(f"{self.name} server exited during start (status {self.returncode}); "
                                  f"last log lines ({self.log}):\n{log_tail(self.log)}")
            try:
                self.client.request("GET", self.health, timeout=5, expect_json=False, hang_kills=False)
                self.ready_s = time.monotonic() - self.started_at
                return self.ready_s
            except ServerError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{self.name} server not ready after {self.start_timeout:.0f}s (killed); "
                                  f"last log lines ({self.log}):\n{log_tail(self.log)}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Kill the server's process group and reap the leash (idempotent)."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL of a group cannot be ignored
                pass
        else:
            try:  # the leash is gone; its group may still hold a straggler
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proctree.wait_group_gone(self.proc.pid)  # stopped: no member of the group left, not just the leash
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self._log_fh is not subprocess.DEVNULL and not self._log_fh.closed:
            self._log_fh.close()
        _LIVE.discard(self)


def stop_all() -> None:
    for s in list(_LIVE):
        s.stop()


def _on_signal(signum: int, frame: Any) -> None:
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_installed = threading.Lock()
_handlers_on = False


def install_cleanup() -> None:
    """Stop every live server at exit and on SIGTERM/SIGHUP (SIGINT raises KeyboardInterrupt, which
    unwinds through the runners' close()). The leash covers the rest: SIGKILL of this process."""
    global _handlers_on
    with _installed:
        if _handlers_on:
            return
        _handlers_on = True
    atexit.register(stop_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)


def same_model(url: str, served: str | None, expected: str | Path) -> None:
    """A server must serve the run's model directory: its records carry that model's hash. An external
    server started on another directory is a configuration error, never recorded under the wrong hash."""
    if served is None or Path(served).resolve() != Path(expected).resolve():
        raise ServerError(f"{url} serves {served!r}, not the run's model {str(expected)!r}: start it on that "
                          "directory (or pass --model with the directory it serves)")


def log_dir() -> Path | None:
    """Where server logs go: the run's logs/ (set by `parity record`), else nowhere."""
    d = os.environ.get("PARITY_SERVER_LOG_DIR")
    return Path(d) if d else None
