"""The statistics of the sampling-distribution check: binning, chi-square test, power, sample size,
and the independence test of repeated unseeded draws. numpy + scipy (the driver venv).

Test. N single next tokens drawn by an engine for one prompt are compared with the exact
processed distribution p (harness.processing, float64, from the reference's logits):

- support: a draw of a token with p == 0 (masked by top-k/top-p/min-p) is impossible under H0:
  any such draw rejects (p-value 0). Tokens whose membership of the support flips under a
  relative perturbation of 1e-3 of the thresholds ("borderline": float32 engines may legitimately
  decide them either way) are neither required nor forbidden: their draws are set aside and
  counted.
- shape: Pearson chi-square over bins: every token with expected count N*p >= 5 is its own bin,
  the rest are pooled into one bin (merged with the smallest single bin when the pool itself
  expects < 5). df = bins - 1. Reject when the p-value < alpha.

Power. For any alternative q whose total-variation distance from p on those bins is at least
`tv`, Cauchy-Schwarz gives Cohen's w^2 = sum (q-p)^2/p >= (sum |q-p|)^2 = 4 tv^2, so the
noncentrality is lambda = N w^2 >= 4 N tv^2, and the power of the level-alpha test is at least
ncx2.sf(chi2.ppf(1 - alpha, df), df, 4 N tv^2) (the usual noncentral chi-square approximation).
`required_n` finds the smallest N whose bins give that power.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

MIN_EXPECTED = 5.0
_NULL_BLOCK = 1000  # rows of simulated data sets per block: its arrays stay in a core's cache


def bins_for(p: np.ndarray, n: int, min_expected: float = MIN_EXPECTED) -> list[np.ndarray]:
    """Token-index arrays, one per bin, over the support of p (p > 0), most likely first."""
    p = np.asarray(p, dtype=np.float64)
    support = np.flatnonzero(p > 0)
    order = support[np.argsort(-p[support], kind="stable")]
    single = [np.array([t]) for t in order if n * p[t] >= min_expected]
    rest = np.array([t for t in order if n * p[t] < min_expected], dtype=np.int64)
    bins = single
    if rest.size:
        if n * p[rest].sum() >= min_expected or not bins:
            bins = bins + [rest]
        else:
            bins = bins[:-1] + [np.concatenate([bins[-1], rest])]
    return bins


def chi2_power(df: int, n: int, tv: float, alpha: float) -> float:
    """Lower bound of the power against any alternative at binned TV distance >= tv."""
    from scipy import stats

    if df < 1:
        return 0.0
    crit = stats.chi2.ppf(1.0 - alpha, df)
    return float(stats.ncx2.sf(crit, df, 4.0 * n * tv * tv))


def required_n(p: np.ndarray, tv: float, alpha: float, power: float, n_max: int = 1 << 20) -> int:
    """Smallest N (to within 2%) whose binning of p gives `power` at `tv` and `alpha`."""
    def ok(n: int) -> bool:
        return chi2_power(len(bins_for(p, n)) - 1, n, tv, alpha) >= power

    lo, hi = 1, 16
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > n_max:
            return n_max
    while hi - lo > max(1, lo // 50):
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


@dataclass
class GofResult:
    n: int  # draws used (borderline draws excluded)
    p_value: float
    statistic: float
    df: int
    bins: int
    out_of_support: int  # draws of tokens with p == 0
    out_of_support_tokens: dict[int, int] = field(default_factory=dict)
    borderline: int = 0  # draws of borderline tokens (set aside)
    tv: float = 0.0  # empirical TV distance from p, over all tokens
    binned_tv: float = 0.0
    power: float = 0.0  # power bound at the stated minimal effect
    top: list[dict] = field(default_factory=list)  # the largest-|residual| bins, for the verdict data

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def goodness_of_fit(draws: list[int], p: np.ndarray, *, alpha: float, tv: float,
                    borderline: set[int] | frozenset[int] = frozenset()) -> GofResult:
    """Pearson chi-square of `draws` (token ids) against p, with the support test (module docstring)."""
    from scipy import stats

    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum()
    counts = np.bincount(np.asarray(draws, dtype=np.int64), minlength=p.size).astype(np.float64)
    bl = np.array(sorted(t for t in borderline if t < p.size), dtype=np.int64)
    n_border = int(counts[bl].sum()) if bl.size else 0
    if bl.size:
        counts[bl] = 0.0
        p = p.copy()
        p[bl] = 0.0
        p = p / p.sum()
    n = int(counts.sum())
    outside = np.flatnonzero((p == 0) & (counts > 0))
    oos = {int(t): int(counts[t]) for t in outside}
    tv_all = 0.5 * float(np.abs(counts / max(n, 1) - p).sum())
    bins = bins_for(p, n)
    exp = np.array([n * p[b].sum() for b in bins])
    obs = np.array([counts[b].sum() for b in bins])
    df = len(bins) - 1
    stat = float(((obs - exp) ** 2 / exp).sum()) if df >= 1 else 0.0
    pv = float(stats.chi2.sf(stat, df)) if df >= 1 else 1.0
    if oos:
        pv = 0.0
    binned_tv = 0.5 * float(np.abs(obs / max(n, 1) - exp / max(n, 1)).sum())
    resid = (obs - exp) / np.sqrt(exp)
    order = np.argsort(-np.abs(resid))[:5]
    top = [{"tokens": [int(t) for t in bins[i][:8]] + (["..."] if len(bins[i]) > 8 else []),
            "observed": int(obs[i]), "expected": round(float(exp[i]), 2), "residual": round(float(resid[i]), 2)}
           for i in order]
    return GofResult(n=n, p_value=pv, statistic=stat, df=df, bins=len(bins), out_of_support=int(sum(oos.values())),
                     out_of_support_tokens=oos, borderline=n_border, tv=tv_all, binned_tv=binned_tv,
                     power=chi2_power(df, n, tv, alpha), top=top)


@dataclass
class IndependenceResult:
    pairs: int
    matches: int
    expected: float
    match_rate_h0: float
    p_value: float

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def repeat_independence(pairs: list[tuple[int, int]], p_h0: float) -> IndependenceResult:
    """Pairs of first tokens (main, repeat) of the same unseeded request: under independence each pair
    matches with probability sum_t p_t^2 = p_h0; too many matches (a frozen PRNG key repeats its
    'samples') rejects. One-sided binomial upper tail."""
    from scipy import stats

    n = len(pairs)
    m = sum(1 for a, b in pairs if a == b)
    pv = float(stats.binom.sf(m - 1, n, p_h0)) if n else 1.0
    return IndependenceResult(pairs=n, matches=m, expected=n * p_h0, match_rate_h0=p_h0, p_value=pv)


@dataclass
class CoincidenceResult:
    n: int  # draws
    groups: list[dict]  # {"members": [i, ...], "logp": log P(sequence), "bound": C(n,c) P^(c-1)}
    p_value: float  # 1.0 when no two draws coincide

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def coincidence_p_value(streams: list[tuple], logp: list[float]) -> CoincidenceResult:
    """How improbable the coincidences among n independent draws of whole sequences are, given each
    draw's exact log-probability under the sampling distribution (logp[i] for streams[i]).

    Under H0 (independent draws from P), for any c >= 2 and t, the chance that some sequence s with
    P(s) <= t occurs c or more times is at most sum_{P(s)<=t} C(n,c) P(s)^c <= C(n,c) t^(c-1). A group
    of c equal draws of s therefore has the bound pi = C(n,c) P(s)^(c-1); the statistic is the
    smallest pi over the groups, and a union over c = 2..n gives the p-value min(1, (n-1) min pi).
    A duplicate of a probable sequence (a peaked model) is unremarkable; copies of an improbable one
    (a shared seed) are not."""
    n = len(streams)
    by: dict[tuple, list[int]] = {}
    for i, s in enumerate(streams):
        by.setdefault(tuple(s), []).append(i)
    groups = []
    for members in by.values():
        c = len(members)
        if c < 2:
            continue
        lp = max(float(logp[i]) for i in members)  # equal streams score equally; max is the conservative one
        log_bound = math.log(math.comb(n, c)) + (c - 1) * lp
        groups.append({"members": members, "logp": lp, "bound": math.exp(min(0.0, log_bound))})
    pv = min(1.0, (n - 1) * min(g["bound"] for g in groups)) if groups else 1.0
    return CoincidenceResult(n=n, groups=groups, p_value=pv)


def bonferroni(alpha: float, m: int) -> float:
    return alpha / max(1, m)


def fmt_p(p: float) -> str:
    if p == 0:
        return "0"
    if p < 1e-3:
        return f"{p:.1e}"
    return f"{p:.3g}"


def min_tv_detectable(df: int, n: int, alpha: float, power: float) -> float:
    """Smallest binned TV detected with `power` at this N and df (inverse of chi2_power in tv)."""
    lo, hi = 0.0, 1.0
    if chi2_power(df, n, 1.0, alpha) < power:
        return math.inf
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if chi2_power(df, n, mid, alpha) < power else (lo, mid)
    return hi


@dataclass
class SequenceResult:
    n: int  # sampled positions
    pairs: int  # consecutive positions (lag-1 pairs) within sequences
    mean_u: float
    ks_statistic: float
    ks_p: float
    serial_z: float
    serial_p: float
    fisher: float  # -2 (ln ks_p + ln serial_p)
    null_draws: int
    p_value: float  # the chance of a Fisher statistic >= this one under H0, by simulation of these shapes

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def pit_values(above: list[float], p: list[float], rng: np.random.Generator) -> np.ndarray:
    """Randomised probability integral transform of sampled tokens: U = F(x-) + V p(x), V ~ U(0,1).

    If each token x_t was drawn from the distribution given its prefix, U_t is Uniform(0,1) given the
    whole past, so the U_t of a sequence are i.i.d. Uniform(0,1) whatever the model
    (Brockwell 2007, "Universal residuals"; the discrete PIT of forecast verification)."""
    a, q = np.asarray(above, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return np.clip(a + rng.random(a.size) * q, 0.0, 1.0)


def _pit_statistics(u: np.ndarray, pair: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows of u (draws x positions, sequences concatenated); pair[i]: positions i and i+1 are consecutive
    in one sequence. Returns KS D, its p, the serial z, its p and Fisher's statistic, one per row.

    The plain statement of the statistics; pit_sequence_test computes the same floats with
    _pit_statistics_fast (tests/test_sampling_stats.py holds the two equal bit for bit)."""
    from scipy import stats

    n = u.shape[1]
    srt = np.sort(u, axis=1)
    i = np.arange(1, n + 1)
    d = np.maximum((i / n - srt).max(axis=1), (srt - (i - 1) / n).max(axis=1))
    # the asymptotic Kolmogorov tail: monotone in D at this n, which is all the simulated null needs
    # (kstwo's exact tail costs 1000x more per simulated data set)
    ks_p = stats.kstwobign.sf(d * math.sqrt(n))
    c = u - 0.5
    m = int(pair.sum())
    z = 12.0 * (c[:, :-1] * c[:, 1:])[:, pair].sum(axis=1) / math.sqrt(m) if m else np.zeros(u.shape[0])
    sp = 2.0 * stats.norm.sf(np.abs(z))
    tiny = np.finfo(np.float64).tiny
    fisher = -2.0 * (np.log(np.maximum(ks_p, tiny)) + np.log(np.maximum(sp, tiny)))
    return d, ks_p, z, sp, fisher


class _PitStatistics:
    """_pit_statistics(u, pair) for blocks of `rows` x n values, the same floats with fewer passes over
    memory and no allocation per block (the simulated null of pit_sequence_test: 20000 data sets per test,
    most of a large run's compare time). Each value is computed by the same operations in the same order:
    the serial sum over the memory layout the boolean selection of _pit_statistics has (F-contiguous draws x
    pairs, which numpy sums column by column); the scipy distributions' sf reduced to the special functions
    they call (kstwobign.sf = kolmogorov and norm.sf(x) = ndtr(-x), exact for these arguments); only D's
    maxima are taken in another order, and a maximum does not depend on it. tests/test_sampling_stats.py
    holds the two equal bit for bit."""

    def __init__(self, rows: int, pair: np.ndarray):
        n = pair.size + 1
        self.rows, self.n, self.m = rows, n, int(pair.sum())
        edges = np.flatnonzero(np.diff(np.r_[False, pair, False].astype(np.int8)))
        self.runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]  # each sequence's pairs
        self.u = np.empty((rows, n))  # draws x positions, as drawn and then sorted in place
        self.t = np.empty((n, rows))  # positions x draws: the u - 1/2, then the sorted u
        self.above = np.empty((n, rows))
        self.prod = np.empty((self.m, rows))
        self.z, self.sp, self.d, self.ks_p, self.fisher = (np.empty(rows) for _ in range(5))
        i = np.arange(1, n + 1)
        self.hi, self.lo = (i / n)[:, None], ((i - 1) / n)[:, None]

    def __call__(self) -> tuple[np.ndarray, ...]:
        """The statistics of self.u (sorted in place): D, its p, z, its p, Fisher, as _pit_statistics."""
        from scipy import special

        u, t, z, sp = self.u, self.t, self.z, self.sp
        if self.m:
            np.subtract(u.T, 0.5, out=t)
            at = 0
            for lo, hi in self.runs:
                np.multiply(t[lo:hi], t[lo + 1:hi + 1], out=self.prod[at:at + hi - lo])
                at += hi - lo
            self.prod.T.sum(axis=1, out=z)
            np.multiply(12.0, z, out=z)
            np.divide(z, math.sqrt(self.m), out=z)
        else:
            z.fill(0.0)
        np.abs(z, out=sp)
        np.negative(sp, out=sp)
        special.ndtr(sp, out=sp)
        np.multiply(2.0, sp, out=sp)
        u.sort(axis=1)
        np.copyto(t, u.T)
        np.subtract(self.hi, t, out=self.above)
        np.subtract(t, self.lo, out=t)
        np.maximum(self.above, t, out=self.above)
        d, ks_p, f = self.d, self.ks_p, self.fisher
        self.above.max(axis=0, out=d)
        np.multiply(d, math.sqrt(self.n), out=ks_p)
        special.kolmogorov(ks_p, out=ks_p)
        tiny = np.finfo(np.float64).tiny
        np.maximum(ks_p, tiny, out=f)
        np.log(f, out=f)
        s = np.maximum(sp, tiny)
        np.log(s, out=s)
        np.add(f, s, out=f)
        np.multiply(-2.0, f, out=f)
        return d, ks_p, z, sp, f


def _pair_mask(lengths) -> np.ndarray:
    """Sequences of these lengths laid end to end: mask[i] when positions i and i+1 are in one sequence."""
    return np.concatenate([np.r_[np.ones(n - 1, dtype=bool), False] for n in lengths])[:-1]


#: (sequence lengths, draws) -> the sorted Fisher statistics of that many simulated null data sets of those shapes
_NULLS: dict[tuple[tuple[int, ...], int], np.ndarray] = {}
_NULLS_KEPT = 256  # distinct shapes kept (160 kB each at 20000 draws); a run has a few


def null_seed(lengths: tuple[int, ...]) -> int:
    """The seed of the simulated null for sequences of these lengths: fixed, and a function of the shape alone
    (crc32 of "pit-null:" + the lengths joined by commas), so every test of that shape reads one null."""
    return zlib.crc32(("pit-null:" + ",".join(map(str, lengths))).encode())


def simulated_null(lengths: tuple[int, ...], null_draws: int) -> np.ndarray:
    """The Fisher statistics of `null_draws` data sets of i.i.d. uniforms cut into sequences of these lengths,
    sorted; simulated once per process (a forked worker inherits or makes its own: the same numbers) from
    null_seed(lengths)."""
    key = (tuple(int(n) for n in lengths), int(null_draws))
    got = _NULLS.get(key)
    if got is not None:
        return got
    pair = _pair_mask(key[0])
    rng = np.random.default_rng(null_seed(key[0]))
    out = np.empty(null_draws)
    done = 0
    sim = _PitStatistics(min(_NULL_BLOCK, null_draws), pair) if null_draws else None
    while done < null_draws:  # in blocks: bounded memory (the stream is drawn in order whatever the block)
        b = min(_NULL_BLOCK, null_draws - done)
        if b < sim.rows:
            sim = _PitStatistics(b, pair)
        rng.random(out=sim.u)
        out[done:done + b] = sim()[4]
        done += b
    out.sort()
    out.flags.writeable = False
    if len(_NULLS) >= _NULLS_KEPT:
        _NULLS.clear()
    _NULLS[key] = out
    return out


def pit_sequence_test(seqs: list[np.ndarray], null_draws: int = 20000) -> SequenceResult:
    """Are the PIT values of sampled sequences i.i.d. Uniform(0,1)?

    - uniformity: one-sample Kolmogorov-Smirnov statistic of all values pooled (a sampler whose draws
      are off the distribution);
    - independence: lag-1 serial statistic S = sum over sequences and t of (U_t - 1/2)(U_t+1 - 1/2),
      z = 12 S / sqrt(pairs) (mean 0, variance 1 under H0: the terms are uncorrelated with variance
      1/144). Centred at the known mean 1/2, not the sample's, so a sampler stuck in one region of the
      distribution (noise reused at every position: likely tokens again and again) moves S too.
    Combined by Fisher's statistic -2 (ln p_KS + ln p_serial) (a sampler reusing its noise moves both,
    each often short of alpha alone). The two are not independent and their asymptotic p-values are
    rough at 20 to 100 positions (the serial sum of products has heavy tails), so the p-value is not
    read off a chi-square: H0 is fully specified (i.i.d. uniforms), so `null_draws` data sets of the
    same shapes are simulated and p = (1 + #{null statistic >= observed}) / (null_draws + 1), an exact
    level-alpha test whatever the shapes.

    The null depends on the shapes alone (the sequence lengths), so it is simulated once per shape and
    shared by every test of that shape (simulated_null: a fixed seed made from the lengths). Still exact:
    under H0 the observed statistic and the simulated ones are i.i.d. draws of one distribution, drawn by
    independent streams (the data's V from its own per-case stream, the null's from the shape's), so the
    observed one's rank among them is uniform and P(p <= alpha) <= alpha for each test. Sharing makes the
    p-values of tests of one shape depend on one null sample, as before each depended on its own; a
    large run's 3195 simulations of 20000 data sets (most of its compare time) become a handful."""
    seqs = [np.asarray(s, dtype=np.float64) for s in seqs if len(s)]
    if not seqs:
        return SequenceResult(0, 0, math.nan, 0.0, 1.0, 0.0, 1.0, 0.0, 0, 1.0)
    u = np.concatenate(seqs)
    pair = _pair_mask([s.size for s in seqs])
    obs = _PitStatistics(1, pair)
    obs.u[0] = u
    d, ks_p, z, sp, f = (float(v[0]) for v in obs())
    null = simulated_null(tuple(s.size for s in seqs), null_draws)
    exceed = null_draws - int(np.searchsorted(null, f, side="left"))  # null statistics >= f
    pv = (1 + exceed) / (null_draws + 1)
    return SequenceResult(n=int(u.size), pairs=int(pair.sum()), mean_u=float(u.mean()), ks_statistic=d, ks_p=ks_p,
                          serial_z=z, serial_p=sp, fisher=f, null_draws=null_draws, p_value=float(pv))
