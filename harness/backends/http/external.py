"""Servers the harness did not start: `parity run --backends reference,ext=http://127.0.0.1:PORT`.

An entry `NAME=URL` (or `NAME=ENGINE:URL`, ENGINE vllm or sglang_jax) records
backend NAME through the served runner of that engine, against the server at
URL (loopback only), in the engine's venv; nothing is started or stopped. The
engine is detected from the server when not given: vLLM's OpenAI server
answers `/version` with a vLLM version and `/v1/models` with owned_by vllm;
sglang-jax's answers `/get_model_info`. The driver passes the choice to the
recording process in PARITY_HTTP_URL_<NAME> and PARITY_HTTP_ENGINE_<NAME>.
"""

from __future__ import annotations

import os
import re

from harness.backends import registry
from harness.backends.http.options import url_env
from harness.backends.http.server import Client, ServerError, require_loopback

ENGINES = {b.serves: name for name, b in registry.served().items()}  # engine -> its served backend


def engine_env(name: str) -> str:
    return f"PARITY_HTTP_ENGINE_{name.upper()}"


def parse(entry: str) -> tuple[str, str, str | None]:
    """'ext=http://127.0.0.1:8000' -> ('ext', url, None); 'ext=vllm:http://...' -> ('ext', url, 'vllm')."""
    name, _, value = entry.partition("=")
    name = name.strip()
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"--backends entry {entry!r}: NAME=URL with NAME in lower-case letters, digits and _")
    kind = None
    if not value.startswith("http"):
        kind, _, value = value.partition(":")
        if kind not in ENGINES:
            raise ValueError(f"--backends entry {entry!r}: engine {kind!r}; choose one of {sorted(ENGINES)}")
    return name, require_loopback(value.strip()), kind


def detect(url: str, timeout: float = 10.0) -> str:
    """Which engine serves `url` (see the module docstring); ServerError when neither answers."""
    c = Client(url, timeout=timeout)
    try:
        models = c.get("/v1/models")
        if any((m or {}).get("owned_by") == "vllm" for m in models.get("data", [])):
            return "vllm"
    except ServerError:
        pass
    try:
        info = c.get("/get_model_info")
        if isinstance(info, dict) and "model_path" in info:
            return "sglang_jax"
    except ServerError:
        pass
    raise ServerError(f"{url}: neither a vLLM OpenAI server (/v1/models) nor a sglang-jax server "
                      "(/get_model_info) answers; give the engine: NAME=vllm:URL or NAME=sglang_jax:URL")


def export(name: str, url: str, kind: str) -> None:
    """Tell the recording processes (children of this one) where NAME's server is and what it runs."""
    os.environ[url_env(name)] = url
    os.environ[engine_env(name)] = kind


def engine_of(name: str) -> str | None:
    """The engine of an external backend NAME exported to this process, else None."""
    kind = os.environ.get(engine_env(name))
    return kind if kind in ENGINES else None
