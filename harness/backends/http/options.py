"""The options every served backend reads, from its typed options (harness.backends.options.ServedOptions:
`fanout`, `start_timeout`, `request_timeout`, `max_inflight`; the deprecated PARITY_HTTP_FANOUT,
PARITY_HTTP_START_TIMEOUT, PARITY_HTTP_REQUEST_TIMEOUT and PARITY_HTTP_MAX_INFLIGHT still set them, with a
warning), and the base URLs of servers already running: `url` / PARITY_HTTP_URL_<NAME>, comma-separated,
loopback only; nothing is started, and nothing is stopped at the end (set by `parity run --backends
NAME=URL` for the recording process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


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
    def read(cls, name: str, options: dict, typed: Any) -> "HttpOptions":
        """NAME's servers: the URLs given (keyword `url`, else its environment channel) or `typed.fanout` new ones;
        `typed`: the runner's resolved ServedOptions."""
        urls = options.get("url") or os.environ.get(url_env(name)) or None
        if isinstance(urls, str):
            urls = [u.strip() for u in urls.split(",") if u.strip()]
        return cls(fanout=len(urls) if urls else typed.fanout, urls=urls or None, start_timeout=typed.start_timeout,
                   request_timeout=typed.request_timeout, max_inflight=typed.max_inflight)

    def describe(self) -> dict:
        return {"fanout": self.fanout, "external": bool(self.urls), "start_timeout_s": self.start_timeout,
                "request_timeout_s": self.request_timeout, "max_inflight_per_server": self.max_inflight,
                "placement": "round-robin per request, offset advanced by one per call"}
