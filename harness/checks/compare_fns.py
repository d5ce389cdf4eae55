"""Keyword-only comparators that name both sides (vLLM tests/models/utils.py style).

Pure functions over plain lists: no records, no suites. Each returns a small
result object whose `describe()` names both sides, so a failure message says
who disagreed with whom, where, and by how much.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

IS_BAND = (0.9, 1.1)  # importance ratios outside this band count as mismatched (trl #6789 reports 7.5% for bf16)
SAFETY_BOUND = 20.0  # verl clamps log-ratios to +-20 before exponentiating


def _f(x: float | None) -> str:
    return "None" if x is None else f"{x:.6g}"


# ---------------------------------------------------------------- logprobs
@dataclass
class LogprobComparison:
    name_0: str
    name_1: str
    n: int = 0
    max_abs: float = 0.0
    mean_abs: float = 0.0
    argmax: int | None = None
    value_0: float | None = None
    value_1: float | None = None
    problem: str | None = None  # structural: a side has no logprobs, lengths differ, a None inside
    diffs: list[float] | np.ndarray = field(default_factory=list, repr=False)  # |dlogp| per position

    def within(self, atol: float) -> bool:
        return self.problem is None and self.max_abs <= atol

    def describe(self) -> str:
        if self.problem:
            return f"{self.name_0} vs {self.name_1}: {self.problem}"
        if self.n == 0:
            return f"{self.name_0} vs {self.name_1}: no tokens to compare"
        return (f"{self.name_0} vs {self.name_1}: max |dlogp| {self.max_abs:.3g} at position {self.argmax} "
                f"({_f(self.value_0)} vs {_f(self.value_1)}), mean {self.mean_abs:.3g} over {self.n} tokens")

    def as_dict(self) -> dict:
        return {"n": self.n, "max_abs": self.max_abs, "mean_abs": self.mean_abs, "argmax": self.argmax,
                "problem": self.problem}


def abs_diffs(a: list[float], b: list[float]) -> np.ndarray:
    """|a - b| elementwise, where equal infinities (a token masked on both sides: -inf) differ by 0
    and NaN differs by inf."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        d = np.abs(x - y)
    d[(x == y)] = 0.0
    d[np.isnan(d)] = np.inf
    return d


def compare_logprobs(*, name_0: str, lp_0: list[float] | None, name_1: str, lp_1: list[float] | None,
                     atol: float | None = None) -> LogprobComparison:
    """Per-position comparison of two logprob lists for the same tokens. `atol` only decorates
    the description; use `.within(atol)` to decide."""
    out = LogprobComparison(name_0, name_1)
    for name, lp in ((name_0, lp_0), (name_1, lp_1)):
        if lp is None:
            out.problem = f"{name} returned no logprobs"
            return out
        if (None in lp) if type(lp) is list else any(v is None for v in lp):
            out.problem = f"{name} has None among its logprobs at position {[v is None for v in lp].index(True)}"
            return out
    if len(lp_0) != len(lp_1):
        out.problem = f"{name_0} has {len(lp_0)} logprobs, {name_1} has {len(lp_1)}"
        return out
    out.n = len(lp_0)
    if out.n == 0:
        return out
    if _all_floats(lp_0) and _all_floats(lp_1):
        # The same numbers as abs_diffs + argmax + mean below, in plain Python (float arithmetic is the same
        # IEEE double arithmetic; the sum stays numpy's pairwise one): several times faster on the short
        # sequences of a run, where numpy's per-call overhead dominates. tests/test_checks_compare.py pins it.
        d = [0.0 if a == b else abs(a - b) for a, b in zip(lp_0, lp_1)]
        if not all(v == v for v in d):
            d = [v if v == v else math.inf for v in d]
        m = max(d)
        i = d.index(m)
        out.diffs = d
        out.max_abs, out.mean_abs, out.argmax = m, float(_SUM(np.array(d, dtype=np.float64))) / out.n, i
    else:
        d = abs_diffs(lp_0, lp_1)
        out.diffs = d
        i = int(np.argmax(d))
        out.max_abs, out.mean_abs, out.argmax = float(d[i]), float(np.mean(d)), i
    out.value_0, out.value_1 = float(lp_0[i]), float(lp_1[i])
    return out


_SUM = np.add.reduce  # what np.mean sums with (pairwise), without its Python-level wrapper


_FLOAT = frozenset({float})


def _all_floats(lp) -> bool:
    return type(lp) is list and _FLOAT.issuperset(map(type, lp))


def compare_prompt_logprobs(*, name_0: str, plp_0: list[float | None] | None, name_1: str,
                            plp_1: list[float | None] | None, prompt_len: int) -> LogprobComparison:
    """vLLM's prompt-logprob structure (one entry per prompt token, the first None, None lines up
    with None) and then the values of positions 1.. compared."""
    out = LogprobComparison(name_0, name_1)
    for name, plp in ((name_0, plp_0), (name_1, plp_1)):
        if plp is None:
            out.problem = f"{name} returned no prompt logprobs"
            return out
        if len(plp) != prompt_len:
            out.problem = f"{name} has {len(plp)} prompt logprobs for a {prompt_len}-token prompt"
            return out
        if plp[0] is not None:
            out.problem = f"{name}'s first prompt logprob is {plp[0]!r}, not None (the first token has no context)"
            return out
        rest = plp[1:]
        if (None in rest) if type(rest) is list else any(v is None for v in rest):
            inner = [j for j, v in enumerate(rest, 1) if v is None]
            out.problem = f"{name} has None at prompt position {inner[0]} (only position 0 may be None)"
            return out
    cmp_ = compare_logprobs(name_0=name_0, lp_0=list(plp_0[1:]), name_1=name_1, lp_1=list(plp_1[1:]))
    if cmp_.argmax is not None:
        cmp_.argmax += 1  # report prompt positions
    return cmp_


# ---------------------------------------------------------------- token streams
def top_ids(top: dict[str, float] | None, k: int) -> set[int]:
    """The k most likely token ids of a top-logprob dict (id as string -> logprob)."""
    if not top:
        return set()
    best = sorted(top.items(), key=lambda kv: -kv[1])[:k]
    return {int(t) for t, _ in best}


@dataclass
class StreamComparison:
    name_0: str
    name_1: str
    len_0: int
    len_1: int
    matched: int  # common prefix length
    outcome: str  # "equal" | "tie" (diverged, each token in the other's top-k) | "diverged" | "truncated"
    position: int | None = None
    tok_0: int | None = None
    tok_1: int | None = None
    in_top_0: bool | None = None  # tok_1 in side 0's top-k
    in_top_1: bool | None = None  # tok_0 in side 1's top-k
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("equal", "tie")

    def describe(self) -> str:
        if self.outcome == "equal":
            return f"{self.name_0} and {self.name_1}: identical {self.len_0} tokens"
        if self.outcome == "truncated":
            short, long_ = (self.name_0, self.name_1) if self.len_0 < self.len_1 else (self.name_1, self.name_0)
            return (f"{short} ended after {min(self.len_0, self.len_1)} tokens where {long_} went on to "
                    f"{max(self.len_0, self.len_1)} (identical up to there){self.note}")
        what = "tie noise" if self.outcome == "tie" else "diverged"
        return (f"{what} at position {self.position} after {self.matched} matched tokens: {self.name_0} chose "
                f"{self.tok_0} ({'in' if self.in_top_1 else 'NOT in'} {self.name_1}'s top-k), {self.name_1} chose "
                f"{self.tok_1} ({'in' if self.in_top_0 else 'NOT in'} {self.name_0}'s top-k){self.note}")

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "matched": self.matched, "len_0": self.len_0, "len_1": self.len_1,
                "position": self.position, "tok_0": self.tok_0, "tok_1": self.tok_1,
                "in_top_0": self.in_top_0, "in_top_1": self.in_top_1}


def compare_token_streams(*, name_0: str, ids_0: list[int], top_0: list[dict[str, float]] | None,
                          name_1: str, ids_1: list[int], top_1: list[dict[str, float]] | None,
                          k: int) -> StreamComparison:
    """vLLM's check_logprobs_close rule: walk both streams; at the first differing token each
    side's token must be in the other's top-k (tie noise), and comparison stops there. Stricter
    than vLLM where one stream is a proper prefix of the other: that is a truncation, not noise."""
    n = min(len(ids_0), len(ids_1))
    for i in range(n):
        if ids_0[i] != ids_1[i]:
            t0 = top_0[i] if top_0 is not None and i < len(top_0) else None
            t1 = top_1[i] if top_1 is not None and i < len(top_1) else None
            in0 = ids_1[i] in top_ids(t0, k)
            in1 = ids_0[i] in top_ids(t1, k)
            note = "" if (t0 and t1) else " (a side has no top-k at that position)"
            return StreamComparison(name_0, name_1, len(ids_0), len(ids_1), i, "tie" if in0 and in1 else "diverged",
                                    i, ids_0[i], ids_1[i], in0, in1, note)
    if len(ids_0) != len(ids_1):
        return StreamComparison(name_0, name_1, len(ids_0), len(ids_1), n, "truncated", n)
    return StreamComparison(name_0, name_1, len(ids_0), len(ids_1), n, "equal")


# ---------------------------------------------------------------- trainer-vs-rollout mismatch
#: What to do with a position where a side's logprob is not finite (mismatch's `nonfinite`):
#: "mismatch" (a gate): drop it only when both sides are -inf (a masked token neither could sample), otherwise
#: it is an infinite mismatch (|dlogp| inf, k1 inf, k3 at the clamp); "drop" (a per-step curve, the RL
#: records): drop every position where a side is not finite and count them (`n_dropped`).
NONFINITE = ("mismatch", "drop")


def _clean_flat(rollout: list[list[float]], trainer: list[list[float]], nonfinite: str = "mismatch"
                ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], int]:
    """Both sides concatenated (x = rollout, y = trainer) without the positions `nonfinite` drops, where each
    sequence lies in them, and how many positions were dropped: a handful of numpy calls for the whole run of
    sequences instead of several per sequence."""
    lens = [len(a) for a in rollout]
    x = np.array(list(itertools.chain.from_iterable(rollout)), dtype=np.float64)
    y = np.array(list(itertools.chain.from_iterable(trainer)), dtype=np.float64)
    if nonfinite == "drop":
        keep = np.isfinite(x) & np.isfinite(y)
    else:
        keep = ~((x == -np.inf) & (y == -np.inf))
    kept = np.cumsum(keep).tolist()
    spans, start, end = [], 0, 0
    for n in lens:
        end += n
        stop = kept[end - 1] if end else 0
        spans.append((start, stop))
        start = stop
    return x[keep], y[keep], spans, len(kept) - (kept[-1] if kept else 0)


def _same_shape(rollout_name: str, rollout, trainer_name: str, trainer) -> None:
    if len(rollout) != len(trainer) or any(len(a) != len(b) for a, b in zip(rollout, trainer)):
        raise ValueError(f"{rollout_name} and {trainer_name} sequences differ in shape")


@dataclass(frozen=True)
class Mismatch:
    """Trainer-vs-rollout mismatch over the tokens of a set of sequences (see `mismatch`). The mismatch
    check's verdict data is `as_dict()`; the RL step records spell the same fields the way tunix and verl
    log them (harness/rl/metrics.py)."""

    rollout: str
    trainer: str
    n_tokens: int  # positions compared
    n_sequences: int
    n_dropped: int  # positions left out under the `nonfinite` rule
    is_band: tuple[float, float]
    max_abs_dlogp: float
    mean_abs_dlogp: float
    k1: float
    k3: float
    chi2_token: float
    pearson_probs: float | None  # np.corrcoef; None when a side's probabilities are constant (or < 2 tokens)
    pearson_probs_floored: float | None  # tunix's: cov / sqrt(max(var_r * var_t, 1e-12)); None for no tokens
    prob_diff_max: float
    prob_diff_mean: float
    is_outside_frac: float
    ppl_ratio: float
    log_ppl_diff: float
    rollout_ppl: float | None  # mean over sequences of exp(-mean logp); None for no tokens
    trainer_ppl: float | None
    log_ppl_abs_diff: float | None

    def as_dict(self) -> dict:
        """The mismatch check's verdict data (checks.json): these keys, in this order."""
        return {"rollout": self.rollout, "trainer": self.trainer, "n_tokens": self.n_tokens,
                "n_sequences": self.n_sequences, "is_band": list(self.is_band),
                "max_abs_dlogp": self.max_abs_dlogp, "mean_abs_dlogp": self.mean_abs_dlogp, "k1": self.k1,
                "k3": self.k3, "chi2_token": self.chi2_token, "pearson_probs": self.pearson_probs,
                "prob_diff_max": self.prob_diff_max, "prob_diff_mean": self.prob_diff_mean,
                "is_outside_frac": self.is_outside_frac, "ppl_ratio": self.ppl_ratio,
                "log_ppl_diff": self.log_ppl_diff}


def mismatch(*, rollout_name: str, rollout: list[list[float]], trainer_name: str, trainer: list[list[float]],
             is_band: tuple[float, float] = IS_BAND, nonfinite: str = "mismatch") -> Mismatch:
    """Trainer-vs-rollout mismatch the way verl (rollout_corr_helper.compute_offpolicy_metrics,
    utils/debug/metrics.py) and tunix (agentic_grpo_learner, "sampler_trainer/*") define it, over the tokens
    of a set of sequences (pairwise of equal length; `nonfinite` in NONFINITE says which positions count):

    - dlogp = rollout - trainer; max and mean |dlogp|
    - k1 = mean(rollout - trainer)                            KL(rollout || trainer), direct estimator
    - k3 = mean(exp(r) - r - 1), r = trainer - rollout       (clamped to +-20, as verl)
    - chi2_token = mean(exp(r)^2) - 1
    - pearson_probs: Pearson correlation of exp(rollout) and exp(trainer) (np.corrcoef);
      pearson_probs_floored: tunix's form of it; prob_diff_{max,mean}
    - is_outside_frac: fraction of importance ratios exp(r) outside `is_band`
    - per sequence, the mean logp of each side over its compared positions: ppl_ratio = mean over sequences
      of exp(mean_seq(rollout) - mean_seq(trainer)) = trainer PPL / rollout PPL (verl's ppl_ratio),
      log_ppl_diff its log, log_ppl_abs_diff the mean |difference|, rollout_ppl / trainer_ppl the mean
      exp(-mean_seq) of each side (verl's rollout_ppl / training_ppl)
    """
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite={nonfinite!r}: one of {NONFINITE}")
    _same_shape(rollout_name, rollout, trainer_name, trainer)
    x, y, spans, dropped = _clean_flat(rollout, trainer, nonfinite)
    head = {"rollout": rollout_name, "trainer": trainer_name, "n_tokens": int(x.size), "n_sequences": len(spans),
            "n_dropped": dropped, "is_band": tuple(is_band)}
    if x.size == 0:
        return Mismatch(**head, max_abs_dlogp=0.0, mean_abs_dlogp=0.0, k1=0.0, k3=0.0, chi2_token=0.0,
                        pearson_probs=None, pearson_probs_floored=None, prob_diff_max=0.0, prob_diff_mean=0.0,
                        is_outside_frac=0.0, ppl_ratio=1.0, log_ppl_diff=0.0, rollout_ppl=None, trainer_ppl=None,
                        log_ppl_abs_diff=None)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        d = abs_diffs(x, y)  # (float64 arrays already: the same values as from lists, without the round trip)
        r, ratio = _log_ratio(x, y)
        px, py = np.exp(x), np.exp(y)
        pearson = None
        if x.size >= 2 and np.std(px) > 0 and np.std(py) > 0:
            pearson = float(np.corrcoef(px, py)[0, 1])
        # tunix's expression as it is written there: the RL records hold the number tunix logs
        px_d, py_d = px - px.mean(), py - py.mean()
        floored = float((px_d * py_d).mean() / np.sqrt(max(float((px_d ** 2).mean() * (py_d ** 2).mean()), 1e-12)))
        # float(np.mean(a)) of a 1-d float64 array is its pairwise sum / size: the same, without the wrapper
        seq = [(float(_SUM(x[i:j])) / (j - i), float(_SUM(y[i:j])) / (j - i)) for i, j in spans if j > i]
        seq_x = np.array([a for a, _ in seq])
        seq_y = np.array([b for _, b in seq])
        log_ppl = np.array([a - b for a, b in seq]) if seq else np.zeros(1)
        # (n_tokens > 0, so some sequence has a compared position and seq is not empty)
        rollout_ppl, trainer_ppl = float(np.exp(-seq_x).mean()), float(np.exp(-seq_y).mean())
        log_ppl_abs_diff = float(np.abs(seq_x - seq_y).mean())
    # _mean(a) is float(np.mean(a)) of these 1-d float64 arrays (np.mean sums with the same pairwise
    # reduction, then divides by the count), without np.mean's Python wrapper
    x_y = x - y
    k1 = _mean(x_y) if np.all(np.isfinite(x_y)) else math.inf
    pdiff = np.abs(px - py)
    outside = (ratio < is_band[0]) | (ratio > is_band[1])
    return Mismatch(
        **head,
        max_abs_dlogp=float(d.max()),
        mean_abs_dlogp=_mean(d),
        k1=k1,
        k3=_k3(r, ratio),
        chi2_token=_mean(ratio ** 2) - 1.0,
        pearson_probs=pearson,
        pearson_probs_floored=floored,
        prob_diff_max=float(pdiff.max()),
        prob_diff_mean=_mean(pdiff),
        is_outside_frac=int(np.count_nonzero(outside)) / outside.size,  # (np.mean of a bool array: the same)
        ppl_ratio=_mean(np.exp(np.clip(log_ppl, -SAFETY_BOUND, SAFETY_BOUND))),
        log_ppl_diff=_mean(log_ppl),
        rollout_ppl=rollout_ppl,
        trainer_ppl=trainer_ppl,
        log_ppl_abs_diff=log_ppl_abs_diff,
    )


def mismatch_metrics(*, rollout_name: str, rollout: list[list[float]], trainer_name: str,
                     trainer: list[list[float]], is_band: tuple[float, float] = IS_BAND) -> dict:
    """`mismatch(...)` (non-finite values are a mismatch) as the mismatch check's verdict data."""
    return mismatch(rollout_name=rollout_name, rollout=rollout, trainer_name=trainer_name, trainer=trainer,
                    is_band=is_band).as_dict()


def _mean(a: np.ndarray) -> float:
    with np.errstate(invalid="ignore", over="ignore"):
        return float(_SUM(a)) / a.size


def _log_ratio(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r = trainer - rollout clamped to +-SAFETY_BOUND (NaN -> the bound) and the importance ratio exp(r)."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.clip(y - x, -SAFETY_BOUND, SAFETY_BOUND)
        r[np.isnan(r)] = SAFETY_BOUND
        return r, np.exp(r)


def _k3(r: np.ndarray, ratio: np.ndarray) -> float:
    return _mean(ratio - r - 1.0)


def k3_kl(*, rollout_name: str, rollout: list[list[float]], trainer_name: str, trainer: list[list[float]]) -> float:
    """mismatch_metrics(...)["k3"] alone (the same number), for callers that need nothing else."""
    _same_shape(rollout_name, rollout, trainer_name, trainer)
    x, y, _, _ = _clean_flat(rollout, trainer)
    if x.size == 0:
        return 0.0
    return _k3(*_log_ratio(x, y))


@dataclass
class ModeDistances:
    """Distance of a backend's logprobs to each exact reference mode."""

    distances: dict[str, float] = field(default_factory=dict)
    atol: float = 0.0

    @property
    def matching(self) -> list[str]:
        return [m for m, d in self.distances.items() if d <= self.atol]

    @property
    def nearest(self) -> str | None:
        return min(self.distances, key=lambda m: self.distances[m]) if self.distances else None

    @property
    def distinguishable(self) -> bool:
        """False when the reference modes themselves agree within atol on these tokens."""
        return len(self.matching) <= 1


def mode_distances(*, name: str, lp: list[float], by_mode: dict[str, list[float]], atol: float,
                   quantile: float = 1.0) -> ModeDistances:
    """Distance of lp to each mode: the `quantile` of |dlogp| over the tokens (1: the max)."""
    out = ModeDistances(atol=atol)
    for mode, ref in by_mode.items():
        c = compare_logprobs(name_0=name, lp_0=lp, name_1=f"reference {mode}", lp_1=ref)
        out.distances[mode] = math.inf if c.problem else abs_quantile([c.diffs], quantile)
    return out


def abs_quantile(diffs: list, q: float) -> float:
    """The q-quantile of |dlogp| pooled over sequences (q = 1: the max, exactly); 0 for no tokens.
    numpy's 'higher' method: an observed value, never an interpolation below it."""
    return abs_quantiles(diffs, (q,))[0]


def abs_quantiles(diffs: list, qs) -> list[float]:
    """abs_quantile for each q in `qs`, pooled and sorted once. The same numbers as
    np.quantile(x, q, method="higher") (the value at index ceil((n-1)*q) of the sorted values; NaN when
    any value is NaN) and np.max for q >= 1, in plain Python: numpy's per-call overhead dominated the
    checks of a large run of short sequences. The values are |dlogp|, never negative.
    tests/test_checks_compare.py pins it against numpy."""
    parts = [d for d in diffs if len(d)]
    if not parts:
        return [0.0 for _ in qs]
    if all(q >= 1.0 for q in qs):  # the max alone (the usual gate): no sort
        # sum() is NaN exactly when a value is (no -inf among values >= 0, so no inf - inf)
        if any(math.isnan(sum(d)) for d in parts):
            return [math.nan for _ in qs]
        top = max(float(max(d)) for d in parts)
        return [top for _ in qs]
    x = [float(v) for d in parts for v in d]
    if not all(v == v for v in x):
        return [math.nan for _ in qs]
    x.sort()
    n = len(x)
    return [x[-1] if q >= 1.0 else x[math.ceil((n - 1) * q)] for q in qs]
