"""Curve statistics: mean with confidence bands, equivalence of two engines, and the power of a design.

A run's reward curve is one sample per step (the batch mean reward). Seeds are
the independent replicates: every statistic below treats one seed's curve as
one observation, never the steps of one curve as independent.

Summaries (one number per seed):
  final   mean reward over the last `window` steps (what training reached)
  auc     mean reward over all steps (area under the curve / steps)
  gain    final - mean reward over the first `window` steps (did it learn)

Equivalence of two engines on one per-seed metric (`equivalence`), against a
declared margin m, with three outcomes:
  equivalent    TOST (two one-sided Welch t-tests, each at alpha): the
                (1 - 2 alpha) interval of the difference lies inside (-m, +m)
  different     otherwise, when the two-sided Welch test of "no difference"
                rejects at `alpha_diff` (the caller's multiplicity-corrected
                level): the engines differ and the data cannot place the
                difference inside the margin
  inconclusive  neither: too few seeds to decide; `seeds_needed` says how many
                per engine would decide it with the target power, at the
                observed difference and spread
A difference that is significant but smaller than the margin is equivalent:
the margin declares what matters. Both tests are t-tests, whose smallest
attainable p is 0 for any n >= 2 per side (a permutation test on 3 vs 3 seeds
cannot go below 0.1 and is not used).

`design_power` is the power of that rule for a design (seeds per engine, the
seed-to-seed standard deviation, the number of difference tests sharing the
family alpha) by simulation: P(equivalent | no difference) and
P(different | a difference of the margin).

  learning (one engine): one-sided one-sample t-test that the per-seed `gain`
    is > 0; fails when p >= alpha (no evidence the reward rose).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _t_ppf(q: float, df: float) -> float:
    try:
        from scipy import stats

        return float(stats.t.ppf(q, df))
    except ImportError:  # pragma: no cover - scipy is in every venv that runs this
        return 1.959963984540054


def band(curves: np.ndarray, confidence: float = 0.95) -> dict[str, list[float]]:
    """curves [seeds, steps] -> per-step mean, lower, upper (t-interval over seeds; width 0 for one seed)."""
    curves = np.asarray(curves, np.float64)
    mean = np.nanmean(curves, axis=0)
    n = np.sum(np.isfinite(curves), axis=0)
    if curves.shape[0] > 1:
        sd = np.nanstd(curves, axis=0, ddof=1)
        half = np.array([_t_ppf(0.5 + confidence / 2, k - 1) if k > 1 else np.nan for k in n]) * sd / np.sqrt(n)
    else:
        half = np.zeros_like(mean)
    half = np.nan_to_num(half, nan=0.0)
    return {"mean": mean.tolist(), "lo": (mean - half).tolist(), "hi": (mean + half).tolist(), "n": n.tolist()}


def summaries(curve: Sequence[float], window: int) -> dict[str, float]:
    c = np.asarray(curve, np.float64)
    w = max(1, min(window, len(c)))
    first, last = float(np.mean(c[:w])), float(np.mean(c[-w:]))
    return {"final": last, "first": first, "gain": last - first, "auc": float(np.mean(c))}


def welch(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sided Welch t-test; identical constant samples give p = 1, distinct constants p = 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "t": float("nan"), "df": float("nan"), "p": float("nan"), "ci_lo": float("nan"),
                "ci_hi": float("nan")}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        p = 1.0 if diff == 0.0 else 0.0
        return {"diff": diff, "t": float("inf") if diff else 0.0, "df": float(len(a) + len(b) - 2), "p": p,
                "ci_lo": diff, "ci_hi": diff}
    t = diff / se
    df = (va + vb) ** 2 / ((va**2 / (len(a) - 1) if va else 0.0) + (vb**2 / (len(b) - 1) if vb else 0.0))
    from scipy import stats

    p = float(2 * stats.t.sf(abs(t), df))
    half = _t_ppf(0.975, df) * se
    return {"diff": diff, "t": float(t), "df": float(df), "p": p, "ci_lo": diff - half, "ci_hi": diff + half}


def gain_test(gains: Sequence[float]) -> dict[str, float]:
    """One-sided one-sample t-test of H1: mean gain > 0."""
    g = np.asarray(gains, np.float64)
    mean = float(g.mean())
    if len(g) < 2:
        return {"mean": mean, "t": float("nan"), "p": float("nan")}
    sd = float(g.std(ddof=1))
    if sd == 0.0:
        return {"mean": mean, "t": float("inf") if mean > 0 else float("-inf"), "p": 0.0 if mean > 0 else 1.0}
    t = mean / (sd / math.sqrt(len(g)))
    from scipy import stats

    return {"mean": mean, "t": float(t), "p": float(stats.t.sf(t, len(g) - 1))}


# ------------------------------------------------------------------ equivalence with three outcomes
EQUIVALENT, DIFFERENT, INCONCLUSIVE = "equivalent", "different", "inconclusive"
POWER_TARGET = 0.8
MAX_SEEDS = 200  # seeds_needed reports "more than this" beyond it


def _welch_se_df(va: float, na: int, vb: float, nb: int) -> tuple[float, float]:
    """Standard error of mean(a) - mean(b) and the Welch-Satterthwaite degrees of freedom (variances ddof=1)."""
    sa, sb = va / na, vb / nb
    se = math.sqrt(sa + sb)
    den = (sa**2 / (na - 1) if sa else 0.0) + (sb**2 / (nb - 1) if sb else 0.0)
    df = (sa + sb) ** 2 / den if den > 0 else float(na + nb - 2)
    return se, df


def decide(diff: float, se: float, df: float, margin: float, alpha: float, alpha_diff: float) -> dict:
    """The three-outcome rule on a difference estimate with its standard error and degrees of freedom."""
    from scipy import stats

    if se == 0.0:  # no spread on either side: the difference is known exactly
        p_lo = 0.0 if diff > -margin else 1.0
        p_hi = 0.0 if diff < margin else 1.0
        p_diff = 0.0 if diff != 0.0 else 1.0
        ci90 = ci_diff = (diff, diff)
    else:
        p_lo = float(stats.t.sf((diff + margin) / se, df))  # H0: diff <= -margin
        p_hi = float(stats.t.cdf((diff - margin) / se, df))  # H0: diff >= +margin
        p_diff = float(2 * stats.t.sf(abs(diff) / se, df))
        h90 = float(stats.t.ppf(1 - alpha, df)) * se
        hd = float(stats.t.ppf(1 - alpha_diff / 2, df)) * se
        ci90, ci_diff = (diff - h90, diff + h90), (diff - hd, diff + hd)
    p_tost = max(p_lo, p_hi)
    outcome = classify(p_tost, p_diff, alpha, alpha_diff)
    return {"diff": diff, "se": se, "df": df, "margin": margin, "p_tost": p_tost, "p_diff": p_diff,
            "alpha": alpha, "alpha_diff": alpha_diff, "ci_tost": list(ci90), "ci_diff": list(ci_diff),
            "outcome": outcome}


def equivalence(a: Sequence[float], b: Sequence[float], margin: float, *, alpha: float = 0.05,
                alpha_diff: float | None = None, power: float = POWER_TARGET, plan: bool = True) -> dict:
    """Is mean(a) - mean(b) within +-margin (per-seed values of two engines)? See the module docstring.

    `plan`: when inconclusive, compute `seeds_needed` (a few seconds of simulation). Fewer than two seeds
    on a side: no test (outcome inconclusive, seeds_needed None)."""
    a = np.asarray([x for x in a if x is not None and math.isfinite(x)], np.float64)
    b = np.asarray([x for x in b if x is not None and math.isfinite(x)], np.float64)
    alpha_diff = alpha if alpha_diff is None else alpha_diff
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "se": float("nan"), "df": float("nan"), "margin": margin, "p_tost": float("nan"),
                "p_diff": float("nan"), "alpha": alpha, "alpha_diff": alpha_diff, "ci_tost": [None, None],
                "ci_diff": [None, None], "outcome": INCONCLUSIVE, "n": [len(a), len(b)], "sd": [None, None],
                "seeds_needed": None, "why": "fewer than two seeds on one side: no test"}
    va, vb = float(a.var(ddof=1)), float(b.var(ddof=1))
    se, df = _welch_se_df(va, len(a), vb, len(b))
    out = decide(diff, se, df, margin, alpha, alpha_diff)
    out["test"] = "welch"
    out["n"] = [len(a), len(b)]
    out["sd"] = [math.sqrt(va), math.sqrt(vb)]
    out["seeds_needed"] = (seeds_needed(diff, math.sqrt(va), math.sqrt(vb), margin, alpha=alpha,
                                        alpha_diff=alpha_diff, power=power)
                           if plan and out["outcome"] == INCONCLUSIVE else None)
    return out


def paired_equivalence(a: Sequence[float], b: Sequence[float], margin: float, *, alpha: float = 0.05,
                       alpha_diff: float | None = None) -> dict:
    """`equivalence` on same-seed pairs (a[i] and b[i] share prompts, data order and per-step seeds): a
    one-sample t on the per-seed differences, n - 1 degrees of freedom. Pays when the pairs correlate."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    alpha_diff = alpha if alpha_diff is None else alpha_diff
    d = np.asarray([x - y for x, y in pairs], np.float64)
    if len(d) < 2:
        return {"diff": float(d.mean()) if len(d) else float("nan"), "se": float("nan"), "df": float("nan"),
                "margin": margin, "p_tost": float("nan"), "p_diff": float("nan"), "alpha": alpha,
                "alpha_diff": alpha_diff, "ci_tost": [None, None], "ci_diff": [None, None], "outcome": INCONCLUSIVE,
                "n": [len(d), len(d)], "sd": [None, None], "seeds_needed": None, "test": "paired",
                "why": "fewer than two same-seed pairs: no test"}
    out = decide(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(len(d)), float(len(d) - 1), margin, alpha,
                 alpha_diff)
    out.update(n=[len(d), len(d)], sd=[float(np.std([x for x, _ in pairs], ddof=1)),
                                       float(np.std([y for _, y in pairs], ddof=1))],
               sd_diff=float(d.std(ddof=1)), seeds_needed=None, test="paired")
    return out


def outcome_power(delta: float, sd_a: float, sd_b: float, n: int, margin: float, *, alpha: float,
                  alpha_diff: float) -> dict[str, float]:
    """P(equivalent), P(different) of the rule for n seeds per engine at a true difference `delta`, normal
    per-seed values with the given standard deviations (t-distributed test statistics: the Welch df of the
    true variances, and the estimated variance's spread through the noncentral t)."""
    from scipy import stats

    se, df = _welch_se_df(sd_a**2, n, sd_b**2, n)
    if se == 0.0:
        return {EQUIVALENT: 1.0 if abs(delta) < margin else 0.0, DIFFERENT: 1.0 if abs(delta) >= margin else 0.0}
    t1, t2 = float(stats.t.ppf(1 - alpha, df)), float(stats.t.ppf(1 - alpha_diff / 2, df))
    # equivalent: diff + t1 se < m and diff - t1 se > -m  ~  |diff| < m - t1 se (se treated as known here;
    # design_power simulates the estimated se)
    z_hi, z_lo = (margin - delta) / se - t1, (-margin - delta) / se + t1
    p_eq = max(0.0, float(stats.norm.cdf(z_hi) - stats.norm.cdf(z_lo))) if z_hi > z_lo else 0.0
    nc = delta / se
    p_rej = float(stats.nct.sf(t2, df, nc) + stats.nct.cdf(-t2, df, nc))
    return {EQUIVALENT: p_eq, DIFFERENT: max(0.0, min(p_rej, 1.0 - p_eq))}


def seeds_needed(diff: float, sd_a: float, sd_b: float, margin: float, *, alpha: float, alpha_diff: float,
                 power: float = POWER_TARGET) -> int | str:
    """Seeds per engine for which the rule decides with probability >= `power`, taking the observed
    difference and standard deviations as the truth: equivalence when |diff| < margin, else difference.
    A string ("> 200") when even MAX_SEEDS would not."""
    want = EQUIVALENT if abs(diff) < margin else DIFFERENT
    start = next((n for n in range(2, MAX_SEEDS + 1)  # the normal approximation first (cheap), ...
                  if outcome_power(diff, sd_a, sd_b, n, margin, alpha=alpha, alpha_diff=alpha_diff)[want] >= power),
                 None)
    if start is None:
        return f"> {MAX_SEEDS}"
    for n in range(start, MAX_SEEDS + 1):  # ... then the exact rule, simulated (the approximation is optimistic)
        if simulate_outcomes(diff, sd_a, sd_b, n, margin, alpha=alpha, alpha_diff=alpha_diff, sims=4000)[want] >= power:
            return n
    return f"> {MAX_SEEDS}"


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (reject where adjusted p < the family alpha: family-wise error
    <= alpha for any dependence). NaN p-values take no part and stay NaN."""
    idx = sorted((i for i, p in enumerate(pvalues) if p == p), key=lambda i: pvalues[i])
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * pvalues[i]))
        out[i] = running
    return out


def classify(p_tost: float, p_diff: float, alpha: float, alpha_diff: float) -> str:
    """The three outcomes from the equivalence p (TOST) and the (adjusted) difference p."""
    if p_tost == p_tost and p_tost < alpha:
        return EQUIVALENT
    if p_diff == p_diff and p_diff < alpha_diff:
        return DIFFERENT
    return INCONCLUSIVE


def simulate_outcomes(delta: float, sd_a: float, sd_b: float, n: int, margin: float, *, alpha: float,
                      alpha_diff: float, sims: int = 20000, seed: int = 0) -> dict[str, float]:
    """Frequencies of the three outcomes for n seeds per engine, per-seed values ~ Normal(delta, sd_a) and
    Normal(0, sd_b): the rule exactly as `equivalence` applies it (variances and Welch df estimated)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    a = rng.normal(delta, sd_a, size=(sims, n))
    b = rng.normal(0.0, sd_b, size=(sims, n))
    d = a.mean(1) - b.mean(1)
    va, vb = a.var(1, ddof=1) / n, b.var(1, ddof=1) / n
    se = np.sqrt(va + vb)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(se > 0, (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (n - 1)), 2.0 * n - 2)
        eq = (d - stats.t.ppf(1 - alpha, df) * se > -margin) & (d + stats.t.ppf(1 - alpha, df) * se < margin)
        diff = ~eq & (np.abs(d) > stats.t.ppf(1 - alpha_diff / 2, df) * se)
    return {EQUIVALENT: float(eq.mean()), DIFFERENT: float(diff.mean()),
            INCONCLUSIVE: float(1.0 - eq.mean() - diff.mean())}


def simulate_paired(delta: float, sd: float, rho: float, n: int, margin: float, *, alpha: float,
                    alpha_diff: float, sims: int = 20000, seed: int = 0) -> dict[str, float]:
    """`simulate_outcomes` for the paired design (`paired_equivalence`): same-seed values correlate by rho."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    z1, z2 = rng.normal(size=(2, sims, n))
    a = delta + sd * z1
    b = sd * (rho * z1 + math.sqrt(max(0.0, 1 - rho * rho)) * z2)
    d = a - b
    m, se = d.mean(1), d.std(1, ddof=1) / math.sqrt(n)
    t1, t2 = stats.t.ppf(1 - alpha, n - 1), stats.t.ppf(1 - alpha_diff / 2, n - 1)
    eq = (m - t1 * se > -margin) & (m + t1 * se < margin)
    diff = ~eq & (np.abs(m) > t2 * se)
    return {EQUIVALENT: float(eq.mean()), DIFFERENT: float(diff.mean()),
            INCONCLUSIVE: float(1.0 - eq.mean() - diff.mean())}


def design_power(sd: float, n: int, margin: float, *, alpha: float = 0.05, tests: int = 1,
                 family_alpha: float = 0.05, sims: int = 20000, seed: int = 0) -> dict[str, float]:
    """The rule's outcome frequencies for a design: n seeds per engine, seed-to-seed standard deviation sd
    on both sides, the difference test at family_alpha / tests (the Bonferroni bound of Holm's first step:
    what a lone true difference among `tests` null ones faces). Keys: <outcome>_null (no difference) and
    <outcome>_margin (a true difference of the margin): power = different_margin, false alarm =
    different_null, P(pass when nothing differs) = equivalent_null."""
    out = {}
    for name, delta in (("null", 0.0), ("margin", margin)):
        for k, v in simulate_outcomes(delta, sd, sd, n, margin, alpha=alpha, alpha_diff=family_alpha / max(1, tests),
                                      sims=sims, seed=seed).items():
            out[f"{k}_{name}"] = v
    return out
