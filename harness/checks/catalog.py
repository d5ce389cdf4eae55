"""Every check a suite may name, with its default tolerances and why they are what they are.

This is data shared by the suite loader (a case naming an unknown check is a
configuration error) and by the checks themselves. Defaults are for float32
on CPU, where engines agree with a float64 reference to ~1e-5; bf16 on
accelerators needs ~2e-2 (vLLM's own tests use 1e-2 sampled and 2e-2 prompt
logprob tolerances against transformers). A suite overrides any of these in
`tolerances:` at suite or case level.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CheckInfo:
    name: str
    summary: str
    tolerances: dict[str, float] = field(default_factory=dict)


CATALOG: dict[str, CheckInfo] = {c.name: c for c in [
    CheckInfo("prompt_ids", "every backend was given the same prompt token ids"),
    CheckInfo("prompt_logprobs",
              "one entry per prompt token, the first None, each within tolerance of the reference's teacher-forced value",
              {"prompt_logprob_atol": 1e-4}),
    CheckInfo("completion_logprobs",
              "each backend's completion logprobs equal the reference's teacher-forced logprobs of that backend's own "
              "tokens, in the logprob mode the backend declares",
              {"logprob_atol": 1e-4}),
    CheckInfo("logprob_mode",
              "the logprob mode detected from the data (raw / temperature / processed) is the one the backend declares",
              {"logprob_atol": 1e-4}),
    CheckInfo("greedy_tokens",
              "greedy token streams equal the reference's (and each other's) up to the first divergence; at a "
              "divergence each side's token must be in the other's top-k (vLLM's rule: tie noise, not a defect)",
              {"top_k_rescue": 5}),
    CheckInfo("replay",
              "forced-token replay: engine B's get_per_token_logps of engine A's completion equals A's own logprobs",
              {"logprob_atol": 1e-4}),
    CheckInfo("self_consistency",
              "a backend's get_per_token_logps of its own completion equals the logprobs its generate returned "
              "(raw mode, or greedy)",
              {"logprob_atol": 1e-4}),
    CheckInfo("mismatch",
              "trainer-vs-rollout mismatch metrics against the reference (max/mean |dlogp|, k1, k3, Pearson of probs, "
              "IS ratios outside [0.9, 1.1], PPL ratio); gated on k3",
              {"k3_max": 1e-6, "is_outside_max": 0.0}),
    CheckInfo("seed_determinism", "the same seed gives the same tokens on a repeat (per backend)"),
    CheckInfo("batch_invariance", "a prompt alone gives the same tokens (and logprobs within tolerance) as inside the batch",
              {"logprob_atol": 1e-4}),
    CheckInfo("n_samples", "n > 1 returns n samples per prompt, grouped by prompt in order, pairwise distinct"),
    CheckInfo("eos_policy",
              "a completion that stops on EOS or a stop token includes it in tokens and logprobs, with finish "
              "reason 'stop', identically across backends"),
    CheckInfo("weight_update",
              "after update_params(B) logprobs match reference-B and not reference-A (stale-weight detection)",
              {"logprob_atol": 1e-4}),
    CheckInfo("sampling_distribution",
              "empirical next-token distribution matches the exact processed distribution from the reference logits "
              "(chi-square, stated false-alarm rate)",
              {"alpha": 1e-3}),
    CheckInfo("sampling_effects",
              "deterministic effect of stop_token_ids, ignore_eos, max_tokens, min_tokens, penalties and logit_bias "
              "equals the expectation computed from the reference"),
]}


def default_tolerances(names: list[str] | tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in names:
        out.update(CATALOG[n].tolerances)
    return out


def known_tolerances() -> set[str]:
    return {t for c in CATALOG.values() for t in c.tolerances}
