"""Trainer-vs-rollout mismatch metrics of an RL step, under the names tunix and verl log them.

Inputs are, per sample, the rollout engine's logprob of each completion token
and the trainer's logprob of the same token under the weights the engine was
supposed to hold (tunix `RLCluster.get_actor_per_token_logps`: the anchor
policy snapshotted at the last `sync_weights`). All statistics are token-level
over the masked completion tokens of one step's batch, computed by the one
implementation the parity `mismatch` check also uses
(harness/checks/compare_fns.py `mismatch`); a position where a side is not
finite is left out of them and counted (`nonfinite_tokens`), so that a step's
curve point stays a number:

tunix (`agentic_grpo_learner`, "sampler_trainer/*"):
  logp_diff_mean / logp_diff_max   mean / max |rollout - trainer|
  prob_diff_mean / prob_diff_max   mean / max |exp(rollout) - exp(trainer)|
  probs_pearson_corr               Pearson correlation of exp(rollout), exp(trainer), in tunix's form
verl (`rollout_corr_helper.compute_offpolicy_metrics`, "rollout_corr/*"):
  kl        k1: mean(rollout - trainer), estimates KL(pi_rollout || pi_trainer)
  k3_kl     mean(exp(d) - d - 1), d = trainer - rollout (log ratio clamped to +-20)
  training_ppl / rollout_ppl   batch mean of per-sequence exp(-mean logp)
  log_ppl_abs_diff             mean |per-sequence mean logp difference|
  chi2_token                   mean(rho^2) - 1, rho = exp(d)
"""

from __future__ import annotations

from typing import Sequence

from harness.checks.compare_fns import mismatch

METRIC_NAMES = (
    "logp_diff_mean", "logp_diff_max", "prob_diff_mean", "prob_diff_max", "probs_pearson_corr",
    "kl", "k3_kl", "training_ppl", "rollout_ppl", "log_ppl_abs_diff", "chi2_token", "tokens",
)
#: record name -> compare_fns.Mismatch field, in the order a record holds them (after tokens, nonfinite_tokens)
FIELDS = {
    "logp_diff_mean": "mean_abs_dlogp", "logp_diff_max": "max_abs_dlogp",
    "prob_diff_mean": "prob_diff_mean", "prob_diff_max": "prob_diff_max",
    "probs_pearson_corr": "pearson_probs_floored", "kl": "k1", "k3_kl": "k3", "chi2_token": "chi2_token",
    "training_ppl": "trainer_ppl", "rollout_ppl": "rollout_ppl", "log_ppl_abs_diff": "log_ppl_abs_diff",
}


def step_metrics(*, rollout_name: str, rollout: Sequence[Sequence[float]], trainer_name: str,
                 trainer: Sequence[Sequence[float]]) -> dict[str, float]:
    """Per-sequence logprob lists (same lengths pairwise) -> the metrics above; no positions at all -> {},
    no finite one -> only the counts."""
    m = mismatch(rollout_name=rollout_name, rollout=rollout, trainer_name=trainer_name, trainer=trainer,
                 nonfinite="drop")
    if not m.n_tokens + m.n_dropped:
        return {}
    out = {"tokens": float(m.n_tokens), "nonfinite_tokens": float(m.n_dropped)}
    if m.n_tokens:
        out |= {name: getattr(m, field) for name, field in FIELDS.items()}
    return out
