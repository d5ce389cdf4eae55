"""Served engines: the same engines behind their own HTTP servers, as large RL runs roll out.

Each served backend drives its engine's own server (vLLM's OpenAI server
`/v1/completions`, sglang-jax's native `/generate`); each runs in its engine's
venv and records what the in-process runner of that engine records, so every
check compares the served path with the in-process one. Conventions normalised
on the way: docs/http.md. The served backends are entries of
harness.backends.registry with `serves=ENGINE`.
"""
