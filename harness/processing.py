"""The exact meaning of each logprob mode and of the sampling transforms, in numpy float64.

Used by the reference backend to compute the truth, and by checks that need
a distribution. The order of transforms follows vLLM's V1 sampler:
penalties and logit_bias on raw logits, then temperature, then min_p
(relative to the most likely token), then top_k, then top_p, renormalising
after masking.

Modes (harness.spec.LogprobMode):
- raw: log_softmax(logits)                      vLLM raw_logprobs, prompt logprobs
- temperature: log_softmax(logits / T)          sglang-jax sampled-token logprobs
- processed: log_softmax(masked(logits' / T))   vLLM processed_logprobs
Greedy (T == 0): every mode equals raw.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from harness.spec import SamplingSpec


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    z = x - m
    finite = np.isfinite(z)
    lse = np.log(np.sum(np.exp(np.where(finite, z, -np.inf)), axis=-1, keepdims=True))
    return z - lse


def apply_penalties(logits: np.ndarray, spec: SamplingSpec, prompt: list[int], output: list[int]) -> np.ndarray:
    """vLLM semantics: repetition over prompt+output (divide positive, multiply negative),
    frequency and presence over output tokens only; logit_bias added last."""
    out = np.array(logits, dtype=np.float64, copy=True)
    if spec.repetition_penalty != 1.0:
        seen = sorted(set(prompt) | set(output))
        vals = out[seen]
        out[seen] = np.where(vals > 0, vals / spec.repetition_penalty, vals * spec.repetition_penalty)
    if output and (spec.frequency_penalty or spec.presence_penalty):
        counts = Counter(output)
        ids = np.fromiter(counts.keys(), dtype=np.int64)
        c = np.fromiter(counts.values(), dtype=np.float64)
        out[ids] -= spec.frequency_penalty * c + spec.presence_penalty
    for tok, bias in spec.logit_bias.items():
        out[int(tok)] += bias
    return out


def processed_logits(logits: np.ndarray, spec: SamplingSpec) -> np.ndarray:
    """Temperature, min_p, top_k, top_p applied to (already penalised) logits; -inf = masked."""
    if spec.greedy:
        return np.array(logits, dtype=np.float64)
    x = np.asarray(logits, dtype=np.float64) / spec.temperature
    if spec.min_p > 0.0:
        p = np.exp(log_softmax(x))
        x = np.where(p < spec.min_p * p.max(), -np.inf, x)
    if spec.top_k is not None and spec.top_k < x.shape[-1]:
        kth = np.sort(x)[-spec.top_k]
        x = np.where(x < kth, -np.inf, x)
    if spec.top_p < 1.0:
        order = np.argsort(-x, kind="stable")
        p = np.exp(log_softmax(x))[order]
        before = np.cumsum(p) - p  # mass strictly above this token
        drop = order[before >= spec.top_p]
        x = x.copy()
        x[drop] = -np.inf
    return x


def mode_logprobs(logits: np.ndarray, spec: SamplingSpec, penalised: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Full log-distributions of one position in every mode, from raw model `logits`;
    `penalised` (apply_penalties of them) feeds the processed mode when penalties are on."""
    raw = log_softmax(logits)
    if spec.greedy:
        return {"raw": raw, "temperature": raw, "processed": raw}
    return {
        "raw": raw,
        "temperature": log_softmax(np.asarray(logits, dtype=np.float64) / spec.temperature),
        "processed": log_softmax(processed_logits(logits if penalised is None else penalised, spec)),
    }
