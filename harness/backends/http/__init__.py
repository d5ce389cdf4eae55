"""Served engines: the same engines behind their own HTTP servers, as large RL runs roll out.

`vllm_http` drives vLLM's OpenAI server (`/v1/completions`), `sglang_jax_http`
sglang-jax's native server (`/generate`); each runs in its engine's venv and
records what the in-process runner of that engine records, so every check
compares the served path with the in-process one. Conventions normalised on
the way: docs/http.md.

`SERVED` is the one table of served backends: name -> (engine: whose venv and
in-process runner it mirrors, "module:Class"). harness.backends.base registers
them from it; nothing else lists them.
"""

from __future__ import annotations

SERVED: dict[str, tuple[str, str]] = {
    "vllm_http": ("vllm", "harness.backends.http.vllm:VllmHttpRunner"),
    "sglang_jax_http": ("sglang_jax", "harness.backends.http.sglang_jax:SglangJaxHttpRunner"),
}
