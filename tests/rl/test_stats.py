"""Curve statistics and mismatch metrics: pure numpy/scipy, run in the unit session."""

import math

import numpy as np
import pytest

from harness.rl import stats
from harness.rl.metrics import mismatch_metrics


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


def test_permutation_p_exact():
    # 3 vs 3 fully separated: 2 of the 20 splits are as extreme -> 0.1, the floor at this n
    assert stats.permutation_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert stats.permutation_p([1, 2, 3], [1, 2, 3]) == 1.0


def test_gain_test_is_one_sided():
    assert stats.gain_test([0.2, 0.25, 0.3])["p"] < 0.05
    assert stats.gain_test([-0.2, -0.25, -0.3])["p"] > 0.95
    assert stats.gain_test([0.0, 0.0, 0.0])["p"] == 1.0


def test_mismatch_zero_for_identical_logprobs():
    lp = [[-0.5, -1.0, -2.0], [-0.1]]
    m = mismatch_metrics(lp, lp)
    assert m["logp_diff_max"] == 0.0 and m["k3_kl"] == 0.0 and m["kl"] == 0.0
    assert m["tokens"] == 4.0
    assert m["probs_pearson_corr"] == pytest.approx(1.0)


def test_mismatch_definitions_follow_verl_and_tunix():
    trainer = [[-1.0, -2.0]]
    rollout = [[-1.5, -1.0]]
    m = mismatch_metrics(trainer, rollout)
    d = np.array([-1.0 + 1.5, -2.0 + 1.0])  # trainer - rollout (verl's log_ratio)
    assert m["k3_kl"] == pytest.approx(np.mean(np.exp(d) - d - 1))
    assert m["kl"] == pytest.approx(np.mean(-d))  # mean(rollout - trainer)
    assert m["logp_diff_mean"] == pytest.approx(0.75)
    assert m["logp_diff_max"] == pytest.approx(1.0)
    assert m["prob_diff_max"] == pytest.approx(abs(math.exp(-1.0) - math.exp(-2.0)))
    assert m["chi2_token"] == pytest.approx(np.mean(np.exp(2 * d)) - 1)


def test_mismatch_rejects_misaligned_and_reports_nonfinite():
    with pytest.raises(ValueError):
        mismatch_metrics([[-1.0, -2.0]], [[-1.0]])
    m = mismatch_metrics([[-1.0, -2.0]], [[-1.0, float("nan")]])
    assert m["nonfinite_tokens"] == 1.0 and m["tokens"] == 1.0
    assert mismatch_metrics([], []) == {}
