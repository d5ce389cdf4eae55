"""N servers of one engine and the round-robin client that splits each batch across them.

A controller in front of several serving processes (a load balancer over one
port per host) spreads one batch over engines with their own caches, and
each request lands on whichever engine's turn it is. `Pool.dispatch` does the
same: request r of a call goes to server (offset + r) mod N, and the offset
advances by one on every call, so a repeated batch (the suite's repeat and
alone variants) lands on other servers than the first time. When placement
changes results, the repeat and alone checks (seed_determinism,
batch_invariance) see it; `placement()` says which server served each request
of the last call.

Every request is bounded: one attempt, a per-request timeout (`Client`), at
most `max_inflight` concurrent requests per server, and the number of
requests is the batch's. A server found dead is restarted (with the weights
that were live) before the next call, as the in-process engines restart after
a crash; the call it died in raises with its cause.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness.backends.http.server import Client, Server, install_cleanup, require_loopback


class Pool:
    """`start(index) -> Server` builds server `index`; or `urls` names running servers (not owned)."""

    @classmethod
    def from_options(cls, opts: Any, start: Callable[[int], Server]) -> "Pool":
        """The user's running servers (`opts.urls`, not owned) or `opts.fanout` servers of our own from `start`."""
        if opts.urls:
            return cls(len(opts.urls), urls=opts.urls, request_timeout=opts.request_timeout,
                       max_inflight=opts.max_inflight)
        return cls(opts.fanout, start=start, request_timeout=opts.request_timeout, max_inflight=opts.max_inflight)

    def __init__(self, n: int, start: Callable[[int], Server] | None = None, urls: list[str] | None = None,
                 request_timeout: float = 600.0, max_inflight: int = 8):
        if (start is None) == (urls is None):
            raise ValueError("Pool: give start= (servers the harness owns) or urls= (external servers)")
        self.request_timeout = request_timeout
        self.max_inflight = max_inflight
        self._start = start
        self._lock = threading.Lock()
        self.offset = 0
        self.last_placement: list[int] = []
        self.restarts = 0
        self.servers: list[Server | None] = []
        self.clients: list[Client] = []
        if urls is not None:
            self.servers = [None] * len(urls)
            self.clients = [Client(require_loopback(u), timeout=request_timeout) for u in urls]
            return
        if n < 1:
            raise ValueError(f"fan-out {n}: at least one server")
        install_cleanup()
        try:
            for i in range(n):  # all start together: each waits for its own readiness below
                self.servers.append(start(i))
            for s in self.servers:
                s.wait_ready()
        except BaseException:
            self.close()
            raise
        self.clients = [self._client(s) for s in self.servers]

    def _client(self, s: Server) -> Client:
        return Client(s.url, timeout=self.request_timeout, server=s)

    @property
    def n(self) -> int:
        return len(self.clients)

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.clients]

    def ensure_alive(self) -> None:
        """Restart an owned server that died (its call raised already); external ones are not ours."""
        if self._start is None:
            return
        for i, s in enumerate(self.servers):
            if s is not None and not s.alive:
                s.stop()
                fresh = self._start(i)
                self.servers[i] = fresh
                fresh.wait_ready()
                self.clients[i] = self._client(fresh)
                self.restarts += 1

    def dispatch(self, requests: list[Any], call: Callable[[Client, Any], Any]) -> list[Any]:
        """call(client, request) for every request, round-robin over the servers, results in order."""
        self.ensure_alive()
        with self._lock:
            offset = self.offset
            self.offset = (self.offset + 1) % max(self.n, 1)
        placement = [(offset + r) % self.n for r in range(len(requests))]
        self.last_placement = placement
        if not requests:
            return []
        workers = min(len(requests), self.n * self.max_inflight)
        if workers == 1:
            return [call(self.clients[placement[0]], requests[0])]
        sem = [threading.BoundedSemaphore(self.max_inflight) for _ in range(self.n)]

        def one(r: int) -> Any:
            with sem[placement[r]]:
                return call(self.clients[placement[r]], requests[r])

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http-fanout") as ex:
            futures = [ex.submit(one, r) for r in range(len(requests))]
            errors = [f.exception() for f in futures]
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                raise first
            return [f.result() for f in futures]

    def broadcast(self, call: Callable[[Client], Any]) -> list[Any]:
        """call(client) on every server (weight updates: every engine must hold the same weights)."""
        self.ensure_alive()
        return [call(c) for c in self.clients]

    def close(self) -> None:
        for s in self.servers:
            if s is not None:
                s.stop()


__all__ = ["Pool"]
