"""Trainer-vs-rollout mismatch metrics, defined the way tunix and verl define them.

Inputs are, per sample, the rollout engine's logprob of each completion token
and the trainer's logprob of the same token under the weights the engine was
supposed to hold (tunix `RLCluster.get_actor_per_token_logps`: the anchor
policy snapshotted at the last `sync_weights`). All statistics are token-level
over the masked completion tokens of one step's batch:

tunix (`agentic_grpo_learner`, "sampler_trainer/*"):
  logp_diff_mean / logp_diff_max   mean / max |rollout - trainer|
  prob_diff_mean / prob_diff_max   mean / max |exp(rollout) - exp(trainer)|
  probs_pearson_corr               Pearson correlation of exp(rollout), exp(trainer)
verl (`rollout_corr_helper.compute_offpolicy_metrics`, "rollout_corr/*"):
  kl        k1: mean(rollout - trainer), estimates KL(pi_rollout || pi_trainer)
  k3_kl     mean(exp(d) - d - 1), d = trainer - rollout (log ratio clamped to +-20)
  training_ppl / rollout_ppl   batch mean of per-sequence exp(-mean logp)
  log_ppl_abs_diff             mean |per-sequence mean logp difference|
  chi2_token                   mean(rho^2) - 1, rho = exp(d)

Pure numpy so that the driver can recompute them from recorded arrays.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SAFETY_BOUND = 20.0
METRIC_NAMES = (
    "logp_diff_mean", "logp_diff_max", "prob_diff_mean", "prob_diff_max", "probs_pearson_corr",
    "kl", "k3_kl", "training_ppl", "rollout_ppl", "log_ppl_abs_diff", "chi2_token", "tokens",
)


def mismatch_metrics(trainer: Sequence[Sequence[float]], rollout: Sequence[Sequence[float]]) -> dict[str, float]:
    """Per-sequence logprob lists (same lengths pairwise) -> the metrics above. Empty input -> {}."""
    pairs = [(np.asarray(t, np.float64), np.asarray(r, np.float64)) for t, r in zip(trainer, rollout)]
    pairs = [(t, r) for t, r in pairs if t.size]
    if not pairs:
        return {}
    for t, r in pairs:
        if t.shape != r.shape:
            raise ValueError(f"trainer/rollout logprob lengths differ: {t.shape} vs {r.shape}")
    t_all = np.concatenate([t for t, _ in pairs])
    r_all = np.concatenate([r for _, r in pairs])
    finite = np.isfinite(t_all) & np.isfinite(r_all)
    if not finite.all():
        # A -inf/NaN logprob is itself a mismatch: report it, compute the rest on finite tokens.
        t_all, r_all = t_all[finite], r_all[finite]
    out: dict[str, float] = {"tokens": float(t_all.size), "nonfinite_tokens": float((~finite).sum())}
    if not t_all.size:
        return out
    diff = np.abs(r_all - t_all)
    out["logp_diff_mean"] = float(diff.mean())
    out["logp_diff_max"] = float(diff.max())
    rp, tp = np.exp(r_all), np.exp(t_all)
    pd = np.abs(rp - tp)
    out["prob_diff_mean"] = float(pd.mean())
    out["prob_diff_max"] = float(pd.max())
    rp_d, tp_d = rp - rp.mean(), tp - tp.mean()
    var = max(float((rp_d**2).mean() * (tp_d**2).mean()), 1e-12)
    out["probs_pearson_corr"] = float((rp_d * tp_d).mean() / np.sqrt(var))
    out["kl"] = float((r_all - t_all).mean())
    d = np.clip(t_all - r_all, -SAFETY_BOUND, SAFETY_BOUND)
    out["k3_kl"] = float((np.exp(d) - d - 1.0).mean())
    out["chi2_token"] = float((np.exp(d) ** 2).mean() - 1.0)
    seq_t = np.array([t[np.isfinite(t)].mean() if np.isfinite(t).any() else np.nan for t, _ in pairs])
    seq_r = np.array([r[np.isfinite(r)].mean() if np.isfinite(r).any() else np.nan for _, r in pairs])
    ok = np.isfinite(seq_t) & np.isfinite(seq_r)
    if ok.any():
        out["training_ppl"] = float(np.exp(-seq_t[ok]).mean())
        out["rollout_ppl"] = float(np.exp(-seq_r[ok]).mean())
        out["log_ppl_abs_diff"] = float(np.abs(seq_r[ok] - seq_t[ok]).mean())
    return out
