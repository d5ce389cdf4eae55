"""Every check a suite may name, with its default tolerances and why they are what they are.

This is data shared by the suite loader (a case naming an unknown check is a
configuration error) and by the checks themselves (harness/checks/registry.py
maps each name to its implementation). Defaults are float32's profile (on CPU,
engines agree with the float64 reference to ~5e-6: measured, vLLM and
sglang-jax, max |dlogp| 4.8e-6, k3 ~1e-12); other dtypes take their calibrated
profile (harness/checks/profiles.py). A suite overrides any of these in
`tolerances:` at suite or case level, for every check or for one; docs/checks.md
justifies each default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# the |dlogp| gate (harness/checks/logprobs.py: Gate): float32 gates the max (quantile 1, no separate cap)
GATE = {"logprob_quantile": 1.0, "logprob_max_atol": math.inf}


@dataclass(frozen=True)
class CheckInfo:
    name: str
    summary: str
    tolerances: dict[str, float] = field(default_factory=dict)


CATALOG: dict[str, CheckInfo] = {c.name: c for c in [
    CheckInfo("prompt_ids",
              "every backend was given the same prompt token ids (each engine tokenizes in its own venv), in every "
              "variant, and id prompts arrive unchanged; per engine vs the reference (engine pairs without one)"),
    CheckInfo("prompt_logprobs",
              "one entry per prompt token, the first None, each within tolerance of the reference's teacher-forced "
              "value (vLLM's structure rule plus values); metric max |dlogp|",
              {"prompt_logprob_atol": 1e-4, **GATE}),
    CheckInfo("completion_logprobs",
              "each backend's completion logprobs equal the reference's teacher-forced logprobs of that backend's own "
              "tokens, in the logprob mode the backend declares; metric max |dlogp|",
              {"logprob_atol": 1e-4, **GATE}),
    CheckInfo("logprob_mode",
              "the logprob mode detected from the data (distance to the reference's exact raw / temperature / "
              "processed values) includes the one the backend declares: catches processed labelled raw and "
              "temperature applied twice (no mode matches); greedy cases cannot tell modes apart and say so",
              {"logprob_atol": 1e-4, **GATE}),
    CheckInfo("greedy_tokens",
              "greedy token streams equal the reference's (and each other's) up to the first divergence; at a "
              "divergence each side's token must be in the other's top-k (vLLM's rule: tie noise, not a defect); "
              "a stream that is a proper prefix of the other fails",
              {"top_k_rescue": 5}),
    CheckInfo("replay",
              "forced-token replay: engine B's get_per_token_logps of backend A's completion equals A's own logprobs "
              "where the modes coincide (greedy, or the same mode) and the reference's score of the same tokens",
              {"logprob_atol": 1e-4, **GATE}),
    CheckInfo("self_consistency",
              "a backend's get_per_token_logps of its own completion equals the logprobs its generate returned "
              "where the modes coincide (skipped, with the reason, where they cannot); k3 reported",
              {"logprob_atol": 1e-4, **GATE}),
    CheckInfo("mismatch",
              "trainer-vs-rollout mismatch metrics of each engine against the reference, the way verl and tunix "
              "define them (max/mean |dlogp|, k1, k3, chi2, Pearson of probs, prob diffs, IS ratios outside "
              "[0.9, 1.1], PPL ratio); gated on k3 and on the IS fraction",
              {"k3_max": 1e-6, "is_outside_max": 0.0}),
    CheckInfo("seed_determinism",
              "the same seed gives the same tokens, finish reasons and logprobs (within logprob_atol) on a repeat "
              "(per backend; needs repeats >= 2)",
              {"logprob_atol": 1e-4}),
    CheckInfo("batch_invariance",
              "a prompt alone gives the same tokens (a divergence only as vLLM-rule tie noise) and completion and "
              "prompt logprobs within tolerance as inside the batch (needs alone: true)",
              {"logprob_atol": 1e-4, "top_k_rescue": 5}),
    CheckInfo("n_samples", "n > 1 returns n samples per prompt, indices 0..n-1 grouped by prompt in order, and no "
                           "coincidence between them that is improbable (p < alpha) under the reference's exact "
                           "sampling distribution", {"alpha": 1e-3}),
    CheckInfo("eos_policy",
              "a completion that stops on EOS or a stop token includes it in tokens and logprobs, with finish "
              "reason 'stop'; 'length' means max_tokens; no stop token inside; on identical greedy streams the "
              "finish reasons equal the reference's"),
    CheckInfo("weight_update",
              "after update_params(W) logprobs match the reference under W and not under the other set (the "
              "reference scores weight_update cases under both: stale-weight detection)",
              {"logprob_atol": 1e-4, **GATE}),
    CheckInfo("params_sent",
              "the sampling parameters each rollout passed to its engine (captured at the engine call, not "
              "recomputed) mean the case's spec: no field dropped or rewritten (top_k, top_p, min_p, temperature, "
              "max tokens, penalties, ...), seeds as the documented rule gives them, and no explicit seed shared by "
              "two requests of an unseeded case; fails even when no draw shows the difference"),
    CheckInfo("seed_rule",
              "each seeded draw (sample j of n; each row of a tunix batch) equals the same prompt generated alone "
              "with the seed its documented rule gives (harness/backends/seeds.py): n samples in their order, distinct "
              "reproducible rows for the repeated prompts of a GRPO group; a divergence passes only as tie noise",
              {"top_k_rescue": 5}),
    CheckInfo("tunix_surface",
              "what a trainer receives through tunix's surface (generate(prompts, RolloutConfig), "
              "get_per_token_logps on left-padded arrays, pad_id, eos_id) agrees with the rollout's rich API: "
              "left-padded prompt rows, padded token rows, one logprob per completion token, eos_id a model EOS, "
              "pad_id the tokenizer's pad, get_per_token_logps equal to the teacher-forced score of the same tokens "
              "and 0 at padding; greedy rows equal the rich API's",
              {"logprob_atol": 1e-4}),
    CheckInfo("rollout_contract",
              "swap one rollout for the other: for one RolloutConfig the two rollouts' RolloutOutput as a trainer "
              "consumes it, field by field (verdicts rollout_contract_<field>: pad_eos, prompt, tokens, logprobs, "
              "text, per_token_logps); each difference fails with its effect on a trainer (e.g. the per-token "
              "IS-ratio shift), unless the suite accepts it with a reason",
              {"logprob_atol": 1e-4}),
    CheckInfo("sampling_support",
              "every sampled token lies inside the support of the case's processed distribution (the reference's "
              "processed logprob of it is finite): top-k, top-p and min-p were obeyed"),
    CheckInfo("sampling_distribution",
              "empirical next-token distribution matches the exact processed distribution from the reference logits "
              "(chi-square, stated false-alarm rate)",
              {"alpha": 1e-3}),
    CheckInfo("sampling_sequence",
              "whole sampled sequences: the randomised PIT of every sampled token under the exact processed "
              "distribution at its position is i.i.d. Uniform(0,1) (uniformity and lag-1 independence; stated "
              "false-alarm rate); a sampler reusing its noise across positions fails",
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
