"""The engine rollouts' documented seed rules and parameter spellings: what each request must have been sent.

This is the specification the `seed_rule` check holds each rollout to, written
down apart from the rollouts' own code on purpose: a rollout that sends every
row the same seed, hands row i row i-1's seed or returns its n samples in
another order still agrees with itself, never with this. Each rule is the one
the rollout's docstring promises (harness/backends/vllm_rollout.py,
harness/backends/sglang_jax/rollout.py) and docs/sampling.md states.

Two surfaces:
- `rich` (generate_ids / generate_batch): one request seed s per prompt; sample j of n.
  vLLM: s + j (its child requests). sglang-jax rollout: s itself for n == 1, else the first
  31 bits of blake2b("sglang-jax-rollout:{s}:{j}") (0.0.2's native n shares one seed).
- `tunix` (generate(prompts, RolloutConfig)): one RolloutConfig.seed for the batch; prompt row i
  of B rows gets the row seed of harness/backends/tunix_contract.py's `row_seed` (both rollouts: B == 1
  keeps the seed, else the first 31 bits of blake2b("rollout-row:{s}:{i}")), so that the repeated
  prompts of a GRPO group draw distinct, reproducible samples. Its n samples then follow the rich rule
  from the row seed.
"""

from __future__ import annotations

import hashlib

SEED_MASK = 0x7FFFFFFF  # both engines keep per-request seeds in 31 bits here
ENGINES = ("vllm", "sglang_jax")


def _hash31(tag: str, seed: int, index: int) -> int:
    digest = hashlib.blake2b(f"{tag}:{int(seed)}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & SEED_MASK


def sample_seed(engine: str, seed: int, j: int, n: int) -> int:
    """Sample j of a request with seed `seed` and n samples, on the rich surface."""
    if engine == "vllm":
        return int(seed) + j
    if engine == "sglang_jax":
        if n == 1 and 0 <= seed <= SEED_MASK:
            return int(seed)
        return _hash31("sglang-jax-rollout", seed, j)
    raise KeyError(f"no documented seed rule for engine {engine!r}")


def row_seed(engine: str, seed: int, i: int, rows: int) -> int:
    """Prompt row i's request seed in a tunix generate call of `rows` prompts sharing `seed` (one rule for
    both rollouts, defined once in tunix_contract; a rollout that does not apply it is what the checks catch)."""
    if engine not in ENGINES:
        raise KeyError(f"no documented seed rule for engine {engine!r}")
    from harness.backends.tunix_contract import row_seed as rule

    return rule(seed, i, rows)


def documented_seed(engine: str, surface: str, seed: int, i: int, j: int, n: int, rows: int) -> int:
    """The seed that reproduces draw (prompt i, sample j) as a single n = 1 request."""
    base = row_seed(engine, seed, i, rows) if surface == "tunix" else int(seed)
    return sample_seed(engine, base, j, n)


def sent_spec(engine: str, sent: dict):
    """The canonical SamplingSpec that parameters captured at `engine`'s call mean (its own spelling undone)."""
    from harness.backends.sglang_jax.sampling import from_sglang_jax
    from harness.backends.vllm_sampling import from_vllm

    if engine == "vllm":
        return from_vllm({k: v for k, v in sent.items() if k not in ("logprobs", "prompt_logprobs")})
    if engine == "sglang_jax":
        return from_sglang_jax(dict(sent))
    raise KeyError(f"no parameter spelling for engine {engine!r}")


def request_seed(engine: str, seed: int, j: int, n: int, sent_n: int) -> int:
    """The seed the request carrying sample j of n (rich surface) must have been sent: vLLM sends one request
    with the seed (it seeds child j with seed + j itself); the sglang-jax rollout sends one request per sample
    with its own seed, unless the engine's native n was used (sent_n > 1: the request seed)."""
    if engine == "vllm" or sent_n > 1:
        return int(seed)
    return sample_seed(engine, seed, j, n)


def sends_n(engine: str) -> bool:
    """Whether one request carries all n samples (vLLM), so that its `n` must be the spec's."""
    return engine == "vllm"
