"""Options every served backend reads (constructor keywords, else environment variables, since
`parity record` builds runners without options).

- `fanout` / PARITY_HTTP_FANOUT: servers of the engine behind the round-robin client (default 1);
- `url` / PARITY_HTTP_URL_<NAME>: comma-separated base URLs of servers already running (loopback only):
  nothing is started, and nothing is stopped at the end (set by `parity run --backends NAME=URL`);
- `start_timeout` / PARITY_HTTP_START_TIMEOUT: seconds a server may take to answer its health check (600);
- `request_timeout` / PARITY_HTTP_REQUEST_TIMEOUT: seconds one request may take (600);
- `max_inflight` / PARITY_HTTP_MAX_INFLIGHT: concurrent requests per server (8).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


def option(options: dict, key: str, env: str, default: Any) -> Any:
    if options.get(key) is not None:
        return options[key]
    v = os.environ.get(env)
    return v if v not in (None, "") else default


def url_env(name: str) -> str:
    return f"PARITY_HTTP_URL_{name.upper()}"


@dataclass
class HttpOptions:
    fanout: int
    urls: list[str] | None
    start_timeout: float
    request_timeout: float
    max_inflight: int

    @classmethod
    def read(cls, name: str, options: dict) -> "HttpOptions":
        urls = option(options, "url", url_env(name), None)
        if isinstance(urls, str):
            urls = [u.strip() for u in urls.split(",") if u.strip()]
        fanout = int(option(options, "fanout", "PARITY_HTTP_FANOUT", 1))
        if fanout < 1:
            raise ValueError(f"fan-out {fanout}: at least one server (option fanout / PARITY_HTTP_FANOUT)")
        return cls(fanout=len(urls) if urls else fanout, urls=urls or None,
                   start_timeout=float(option(options, "start_timeout", "PARITY_HTTP_START_TIMEOUT", 600)),
                   request_timeout=float(option(options, "request_timeout", "PARITY_HTTP_REQUEST_TIMEOUT", 600)),
                   max_inflight=int(option(options, "max_inflight", "PARITY_HTTP_MAX_INFLIGHT", 8)))

    def describe(self) -> dict:
        return {"fanout": self.fanout, "external": bool(self.urls), "start_timeout_s": self.start_timeout,
                "request_timeout_s": self.request_timeout, "max_inflight_per_server": self.max_inflight,
                "placement": "round-robin per request, offset advanced by one per call"}
