"""The distribution test's statistics: binning, false-alarm rate, power bound, sample size, independence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.sampling.stats import (
    coincidence_p_value,
    bins_for,
    chi2_power,
    goodness_of_fit,
    min_tv_detectable,
    pit_sequence_test,
    pit_values,
    repeat_independence,
    required_n,
)


def _peaked(v: int = 384, seed: int = 0, temp: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3.0, v) / temp
    p = np.exp(x - x.max())
    return p / p.sum()


@given(st.integers(1, 5000), st.integers(0, 50))
def test_bins_partition_the_support_with_enough_expected(n: int, seed: int) -> None:
    p = _peaked(seed=seed)
    p[np.argsort(p)[:100]] = 0.0
    p /= p.sum()
    bins = bins_for(p, n)
    allt = np.sort(np.concatenate(bins))
    assert np.array_equal(allt, np.flatnonzero(p > 0))
    if len(bins) > 1:
        assert all(n * p[b].sum() >= 5.0 - 1e-9 for b in bins)


def test_false_alarm_rate_is_alpha() -> None:
    """Under H0 the test rejects at about its nominal rate (alpha 0.05 here, to measure it in 2000 runs)."""
    rng = np.random.default_rng(1)
    p = _peaked(seed=3)
    rejections = sum(goodness_of_fit(rng.choice(p.size, 500, p=p).tolist(), p, alpha=0.05, tv=0.1).p_value < 0.05
                     for _ in range(2000))
    assert 0.03 < rejections / 2000 < 0.07


def test_power_bound_holds_for_a_worst_case_alternative() -> None:
    """Move TV 0.1 of mass between the two largest bins (a hard alternative: the chi-square distance of a
    TV shift is smallest where p is largest): the rejection rate reaches the stated power bound."""
    p = _peaked(seed=5)
    alpha, tv = 1e-3, 0.1
    n = required_n(p, tv, alpha, 0.95)
    q = p.copy()
    top = np.argsort(-p)[:2]
    q[top[0]] -= tv
    q[top[1]] += tv
    rng = np.random.default_rng(2)
    rej = np.mean([goodness_of_fit(rng.choice(p.size, n, p=q).tolist(), p, alpha=alpha, tv=tv).p_value < alpha
                   for _ in range(300)])
    g = goodness_of_fit(rng.choice(p.size, n, p=p).tolist(), p, alpha=alpha, tv=tv)
    assert g.power >= 0.95 - 0.02
    assert rej >= 0.95


def test_required_n_is_monotone_in_effect_and_power() -> None:
    p = _peaked(seed=7)
    assert required_n(p, 0.2, 1e-3, 0.95) < required_n(p, 0.1, 1e-3, 0.95) < required_n(p, 0.05, 1e-3, 0.95)
    assert required_n(p, 0.1, 1e-3, 0.8) <= required_n(p, 0.1, 1e-3, 0.99)
    assert chi2_power(0, 1000, 0.1, 1e-3) == 0.0
    assert min_tv_detectable(10, 1000, 1e-3, 0.95) < min_tv_detectable(10, 200, 1e-3, 0.95)


def test_a_masked_token_rejects_outright_unless_borderline() -> None:
    p = np.array([0.5, 0.3, 0.2, 0.0])
    g = goodness_of_fit([0] * 50 + [1] * 30 + [2] * 19 + [3], p, alpha=1e-3, tv=0.1)
    assert g.out_of_support == 1 and g.p_value == 0.0 and g.out_of_support_tokens == {3: 1}
    g = goodness_of_fit([0] * 50 + [1] * 30 + [2] * 19 + [3], p, alpha=1e-3, tv=0.1, borderline={3})
    assert g.out_of_support == 0 and g.borderline == 1 and g.p_value > 1e-3


def test_uniform_sampler_is_caught() -> None:
    """The shape of sglang-jax 0.0.2's seeded sampler (compat seeded_sampler_exact, docs/sglang_jax.md):
    near-uniform draws over the vocabulary instead of the top-k set."""
    p = np.zeros(384)
    p[:5] = [0.6, 0.2, 0.1, 0.06, 0.04]
    rng = np.random.default_rng(0)
    g = goodness_of_fit(rng.integers(0, 384, 1000).tolist(), p, alpha=1e-3, tv=0.1)
    assert g.p_value == 0.0 and g.out_of_support > 900


@pytest.mark.parametrize("frozen", [False, True])
def test_repeat_independence(frozen: bool) -> None:
    p = _peaked(seed=9)
    rng = np.random.default_rng(4)
    a = rng.choice(p.size, 640, p=p)
    b = a.copy() if frozen else rng.choice(p.size, 640, p=p)
    res = repeat_independence(list(zip(a.tolist(), b.tolist())), float((p * p).sum()))
    assert (res.p_value < 1e-6) == frozen
    if not frozen:
        assert res.p_value > 1e-3


def _sequences(rng, n: int, length: int, top: float, v: int = 6):
    """n independent draws of `length`-token sequences, each step a categorical with top-1 probability
    `top` (a peaked model), with each draw's exact log-probability."""
    p = np.array([top] + [(1 - top) / (v - 1)] * (v - 1))
    toks = rng.choice(v, size=(n, length), p=p)
    return [tuple(t) for t in toks], [float(np.log(p[t]).sum()) for t in toks]


def test_coincidences_of_a_peaked_model_keep_the_false_alarm_rate() -> None:
    """Independent draws from a peaked model coincide often (the old 'no two samples equal' rule would
    fail most of these), yet the coincidence test rejects at most alpha of them."""
    rng = np.random.default_rng(3)
    trials, alpha, n = 4000, 0.05, 4
    naive = rejected = 0
    for _ in range(trials):
        streams, logp = _sequences(rng, n, 3, 0.9)
        naive += len(set(streams)) < n
        rejected += coincidence_p_value(streams, logp).p_value < alpha
    assert naive / trials > 0.5
    assert rejected / trials <= alpha


def test_copies_of_an_improbable_sample_are_rejected() -> None:
    """A shared seed: sample 1 a copy of sample 0 of a 12-token draw at T=1 (probability ~1e-9)."""
    rng = np.random.default_rng(5)
    streams, logp = _sequences(rng, 4, 12, 0.3, v=50)
    streams[1], logp[1] = streams[0], logp[0]
    r = coincidence_p_value(streams, logp)
    assert r.p_value < 1e-6 and r.groups[0]["members"] == [0, 1]
    four = coincidence_p_value([streams[0]] * 4, [logp[0]] * 4)
    assert four.p_value < r.p_value and four.groups[0]["members"] == [0, 1, 2, 3]  # all n equal: stronger evidence
    assert coincidence_p_value([(1,), (2,), (3,)], [-1.0, -1.0, -1.0]).p_value == 1.0


def _pit_sequences(rng: np.random.Generator, reuse: bool, n: int = 8, steps: int = 12, v: int = 50) -> list[np.ndarray]:
    """PIT values of n sampled sequences of `steps` positions, each position with its own peaked
    distribution; the sampler is Gumbel-max over the descending-probability ranks, its noise drawn once
    per sequence (reuse: a key reused at every position) or afresh at every position."""
    out = []
    for _ in range(n):
        g = rng.gumbel(size=v)
        above, probs = [], []
        for _ in range(steps):
            p = _peaked(v, seed=int(rng.integers(1 << 30)))
            order = np.lexsort((np.arange(v), -p))
            r = int(np.argmax(np.log(p[order]) + (g if reuse else rng.gumbel(size=v))))
            above.append(float(p[order[:r]].sum()))
            probs.append(float(p[order[r]]))
        out.append(pit_values(above, probs, rng))
    return out


def test_sequence_pit_keeps_the_false_alarm_rate_and_catches_a_reused_key() -> None:
    """The null is simulated for the data's own shapes, so the level holds at the default suite's small
    shapes (2 x 12 positions), where the asymptotic p-values run about 3x over alpha."""
    rng = np.random.default_rng(11)
    alpha = 0.02  # a rate 300 trials can estimate (the check runs at 1e-3, with 20000 null data sets)
    for n in (2, 8):
        clean = [pit_sequence_test(_pit_sequences(rng, reuse=False, n=n), null_draws=400).p_value
                 for _ in range(300)]
        assert np.mean(np.array(clean) < alpha) <= 2 * alpha  # binomial slack: 12 of 300 at the nominal 6
    reused = [pit_sequence_test(_pit_sequences(rng, reuse=True), null_draws=400).p_value for _ in range(50)]
    assert np.mean(np.array(reused) < alpha) >= 0.5  # 8 x 12 positions: most reused-key samplers fail


def _shapes(rng: np.random.Generator) -> list[np.ndarray]:
    k = int(rng.integers(1, 9))
    lens = np.ones(k, dtype=int) if rng.random() < 0.1 else rng.integers(1, 40, size=k)  # sometimes no pairs
    return [np.r_[np.ones(s - 1, dtype=bool), False] for s in lens]


def test_pit_statistics_fast_is_the_plain_statement_bit_for_bit() -> None:
    """_PitStatistics (the simulated null's arithmetic) gives _pit_statistics' floats exactly: the serial sum
    in the same order, the same special functions, D's maxima (order-free); ties and grid values included."""
    from harness.sampling.stats import _pit_statistics, _PitStatistics

    rng = np.random.default_rng(123)
    for trial in range(200):
        pair = np.concatenate(_shapes(rng))[:-1]
        rows = int(rng.choice([1, 2, 7, 300, 1000]))
        u = rng.random((rows, pair.size + 1))
        if trial % 4 == 0:
            u[:, ::2] = np.round(u[:, ::2] * u.shape[1]) / u.shape[1]
        fast = _PitStatistics(rows, pair)
        fast.u[...] = u
        for want, got in zip(_pit_statistics(u.copy(), pair), fast()):
            assert want.shape == got.shape
            assert np.array_equal(want.view(np.int64), got.view(np.int64)), (trial, rows, pair.size)


def test_pit_sequence_test_is_the_plain_simulation() -> None:
    """The whole test (observed statistics; the null simulated once per shape, from the shape's seed, in blocks
    of another size, counted by bisection) against its plain statement: blocks of 5000 data sets drawn from
    null_seed(lengths), _pit_statistics each, the exceedances counted; every field equal, and a second test of
    the same shape reads the same null."""
    import math

    from harness.sampling import stats

    def plain(seqs, null_draws):
        u = np.concatenate(seqs)
        pair = np.concatenate([np.r_[np.ones(s.size - 1, dtype=bool), False] for s in seqs])[:-1]
        d, ks_p, z, sp, f = (float(v[0]) for v in stats._pit_statistics(u[None, :], pair))
        rng = np.random.default_rng(stats.null_seed(tuple(s.size for s in seqs)))
        exceed, done = 0, 0
        while done < null_draws:
            b = min(5000, null_draws - done)
            exceed += int((stats._pit_statistics(rng.random((b, u.size)), pair)[4] >= f).sum())
            done += b
        return stats.SequenceResult(n=int(u.size), pairs=int(pair.sum()), mean_u=float(u.mean()), ks_statistic=d,
                                    ks_p=ks_p, serial_z=z, serial_p=sp, fisher=f, null_draws=null_draws,
                                    p_value=(1 + exceed) / (null_draws + 1))

    rng = np.random.default_rng(7)
    for trial in range(12):
        shape = _shapes(rng)
        draws = int(rng.choice([1, 999, 1001, 7000]))
        for again in range(2):  # the second reads the cached null
            seqs = [rng.random(p.size) for p in shape]
            if (trial + again) % 3 == 0:  # a reused key: values far in the tail
                seqs = [np.full(s.size, 0.93) for s in seqs]
            want = plain(seqs, draws)
            got = pit_sequence_test(seqs, null_draws=draws)
            for k, w in want.as_dict().items():
                g = got.as_dict()[k]
                assert w == g or (math.isnan(w) and math.isnan(g)), (trial, again, k, w, g)
    assert stats.null_seed((12, 12)) != stats.null_seed((24,)) != stats.null_seed((12, 11))
