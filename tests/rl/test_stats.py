"""Curve statistics and mismatch metrics: pure numpy/scipy, run in the unit session."""

import math

import numpy as np
import pytest

from harness.rl import stats
from harness.rl.metrics import step_metrics


def test_band_is_a_t_interval_over_seeds():
    curves = np.array([[0.1, 0.2], [0.3, 0.4], [0.2, 0.3]])
    b = stats.band(curves)
    assert b["mean"] == pytest.approx([0.2, 0.3])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert b["hi"][0] - b["mean"][0] == pytest.approx(half)
    assert b["n"] == [3, 3]


def test_band_of_one_seed_has_zero_width():
    b = stats.band(np.array([[0.1, 0.2]]))
    assert b["lo"] == b["mean"] == b["hi"]


def test_summaries():
    s = stats.summaries([0.0, 0.0, 1.0, 1.0], window=2)
    assert s == {"final": 1.0, "first": 0.0, "gain": 1.0, "auc": 0.5}


def test_welch_matches_scipy():
    from scipy import stats as sst

    a, b = [0.30, 0.35, 0.41], [0.07, 0.08, 0.06]
    w = stats.welch(a, b)
    ref = sst.ttest_ind(a, b, equal_var=False)
    assert w["p"] == pytest.approx(ref.pvalue)
    assert w["ci_lo"] < w["diff"] < w["ci_hi"]


def test_welch_degenerate_cases():
    assert stats.welch([0.5, 0.5], [0.5, 0.5])["p"] == 1.0
    assert stats.welch([0.5, 0.5], [0.1, 0.1])["p"] == 0.0
    assert math.isnan(stats.welch([0.5], [0.1, 0.2])["p"])


def test_equivalence_tost_is_two_one_sided_welch_tests():
    from scipy import stats as sst

    a, b, m = [0.40, 0.45, 0.42, 0.44], [0.41, 0.43, 0.44, 0.47], 0.08
    e = stats.equivalence(a, b, m)
    w = stats.welch(a, b)
    se = (w["diff"] - w["ci_lo"]) / sst.t.ppf(0.975, w["df"])
    p_lo = sst.t.sf((w["diff"] + m) / se, w["df"])
    p_hi = sst.t.cdf((w["diff"] - m) / se, w["df"])
    assert e["p_tost"] == pytest.approx(max(p_lo, p_hi))
    assert e["p_diff"] == pytest.approx(w["p"])
    assert e["outcome"] == "equivalent" and -m < e["ci_tost"][0] < e["ci_tost"][1] < m


def test_equivalence_three_outcomes():
    # far apart with little spread: different
    assert stats.equivalence([0.464, 0.464, 0.474], [0.333, 0.323, 0.318], 0.05)["outcome"] == "different"
    # close with little spread: equivalent
    assert stats.equivalence([0.41, 0.42, 0.40], [0.42, 0.41, 0.42], 0.05)["outcome"] == "equivalent"
    # a spread as wide as the margin: neither, and how many seeds would decide it
    e = stats.equivalence([0.40, 0.55, 0.42], [0.31, 0.43, 0.44], 0.05)
    assert e["outcome"] == "inconclusive"
    assert isinstance(e["seeds_needed"], int) and e["seeds_needed"] > 3


def test_a_significant_difference_inside_the_margin_is_equivalent():
    e = stats.equivalence([0.500, 0.501, 0.502, 0.501], [0.490, 0.491, 0.490, 0.491], 0.05)
    assert e["p_diff"] < 1e-4 and e["outcome"] == "equivalent"


def test_equivalence_reaches_any_alpha_with_two_seeds():
    # no floor on the p-values (the permutation test's 0.1 at 3 vs 3): both tests can decide at n = 2
    assert stats.equivalence([1.0, 1.001], [0.0, 0.001], 0.1)["p_diff"] < 1e-3
    assert stats.equivalence([1.0, 1.001], [1.0, 1.001], 0.1)["p_tost"] < 1e-3


def test_equivalence_degenerate_cases():
    assert stats.equivalence([0.5, 0.5], [0.5, 0.5], 0.01)["outcome"] == "equivalent"
    assert stats.equivalence([0.5, 0.5], [0.1, 0.1], 0.01)["outcome"] == "different"
    one = stats.equivalence([0.5], [0.1, 0.2], 0.01)
    assert one["outcome"] == "inconclusive" and one["seeds_needed"] is None
    assert stats.equivalence([0.5, None, float("nan"), 0.5], [0.5, 0.5], 0.01)["n"] == [2, 2]


def test_holm_adjust():
    assert stats.holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adj = stats.holm_adjust([0.2, float("nan")])
    assert adj[0] == pytest.approx(0.2) and math.isnan(adj[1])


def test_simulated_outcomes_follow_the_rule_applied_to_data():
    rng = np.random.default_rng(7)
    n, sd, m, delta = 4, 1.0, 2.5, 1.0
    got = [stats.equivalence(rng.normal(delta, sd, n), rng.normal(0, sd, n), m, plan=False)["outcome"]
           for _ in range(400)]
    sim = stats.simulate_outcomes(delta, sd, sd, n, m, alpha=0.05, alpha_diff=0.05, sims=20000)
    for outcome in ("equivalent", "different", "inconclusive"):
        assert got.count(outcome) / len(got) == pytest.approx(sim[outcome], abs=0.07)


def test_design_power_grows_with_seeds_and_holds_alpha():
    p3 = stats.design_power(1.0, 3, 2.5, tests=4)
    p8 = stats.design_power(1.0, 8, 2.5, tests=4)
    assert p8["different_margin"] > p3["different_margin"]
    assert p8["equivalent_null"] > p3["equivalent_null"]
    for p in (p3, p8):
        assert p["equivalent_margin"] <= 0.05 + 0.01  # TOST: passing a difference of the margin is rare
        assert p["different_null"] <= 0.05 / 4 + 0.01  # false alarms within the family share


def test_gain_test_is_one_sided():
    assert stats.gain_test([0.2, 0.25, 0.3])["p"] < 0.05
    assert stats.gain_test([-0.2, -0.25, -0.3])["p"] > 0.95
    assert stats.gain_test([0.0, 0.0, 0.0])["p"] == 1.0


def test_mismatch_zero_for_identical_logprobs():
    lp = [[-0.5, -1.0, -2.0], [-0.1]]
    m = step_metrics(rollout_name="engine", rollout=lp, trainer_name="trainer", trainer=lp)
    assert m["logp_diff_max"] == 0.0 and m["k3_kl"] == 0.0 and m["kl"] == 0.0
    assert m["tokens"] == 4.0
    assert m["probs_pearson_corr"] == pytest.approx(1.0)


def test_mismatch_definitions_follow_verl_and_tunix():
    trainer = [[-1.0, -2.0]]
    rollout = [[-1.5, -1.0]]
    m = step_metrics(rollout_name="engine", rollout=rollout, trainer_name="trainer", trainer=trainer)
    d = np.array([-1.0 + 1.5, -2.0 + 1.0])  # trainer - rollout (verl's log_ratio)
    assert m["k3_kl"] == pytest.approx(np.mean(np.exp(d) - d - 1))
    assert m["kl"] == pytest.approx(np.mean(-d))  # mean(rollout - trainer)
    assert m["logp_diff_mean"] == pytest.approx(0.75)
    assert m["logp_diff_max"] == pytest.approx(1.0)
    assert m["prob_diff_max"] == pytest.approx(abs(math.exp(-1.0) - math.exp(-2.0)))
    assert m["chi2_token"] == pytest.approx(np.mean(np.exp(2 * d)) - 1)


def test_mismatch_rejects_misaligned_and_reports_nonfinite():
    with pytest.raises(ValueError):
        step_metrics(rollout_name="engine", rollout=[[-1.0]], trainer_name="trainer", trainer=[[-1.0, -2.0]])
    m = step_metrics(rollout_name="engine", rollout=[[-1.0, float("nan")]], trainer_name="trainer",
                     trainer=[[-1.0, -2.0]])
    assert m["nonfinite_tokens"] == 1.0 and m["tokens"] == 1.0
    assert step_metrics(rollout_name="engine", rollout=[], trainer_name="trainer", trainer=[]) == {}


def test_step_metrics_are_the_mismatch_checks_numbers_under_tunix_and_verl_names():
    from harness.checks.compare_fns import mismatch_metrics

    rollout, trainer = [[-0.3, -1.7, -2.2], [-0.9]], [[-0.31, -1.5, -2.4], [-1.0]]
    m = step_metrics(rollout_name="engine", rollout=rollout, trainer_name="trainer", trainer=trainer)
    c = mismatch_metrics(rollout_name="engine", rollout=rollout, trainer_name="trainer", trainer=trainer)
    assert (m["k3_kl"], m["kl"], m["logp_diff_max"], m["logp_diff_mean"], m["chi2_token"]) == \
        (c["k3"], c["k1"], c["max_abs_dlogp"], c["mean_abs_dlogp"], c["chi2_token"])
    # (both sequences have the rollout's mean logp above the trainer's, so the mean |difference| is |the mean|)
    assert m["log_ppl_abs_diff"] == pytest.approx(abs(c["log_ppl_diff"]))
