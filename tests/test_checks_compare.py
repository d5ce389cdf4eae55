"""The comparators on the worked example of golden/worked_example.json (the only hand-typed numbers), plus properties."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.checks.compare_fns import (
    compare_logprobs,
    compare_prompt_logprobs,
    compare_token_streams,
    mismatch_metrics,
    mode_distances,
)
from harness.processing import log_softmax

GOLDEN = json.loads((Path(__file__).parent.parent / "golden" / "worked_example.json").read_text())


def _worked():
    rows = log_softmax(np.array(GOLDEN["logits_rows"]["rows"]))
    right = [float(rows[r, t]) for r, t in zip(GOLDEN["picked_rows"], GOLDEN["output_ids"])]
    # the seed's expectation: the decode row's value of the *previous* output token
    shifted = [float(rows[r, t]) for r, t in zip(GOLDEN["picked_rows"], [GOLDEN["output_ids"][0]] * 2)]
    return rows, right, shifted


def test_worked_example_shift_is_caught_at_position_1():
    _, right, shifted = _worked()
    c = compare_logprobs(name_0="engine", lp_0=shifted, name_1="reference", lp_1=right)
    assert c.argmax == 1 and not c.within(1e-4)
    assert c.max_abs == pytest.approx(0.2, abs=1e-12)  # 0.6 - 0.4 in the same row
    assert "engine vs reference" in c.describe() and "position 1" in c.describe()
    golden = GOLDEN["expected_logprobs"]["values"]
    assert compare_logprobs(name_0="a", lp_0=right, name_1="b", lp_1=golden).within(1e-12)


def test_worked_example_prompt_logprobs_structure():
    rows, _, _ = _worked()
    prompt = GOLDEN["input_ids"]
    good = [None] + [float(rows[j - 1, prompt[j]]) for j in range(1, len(prompt))]
    assert compare_prompt_logprobs(name_0="x", plp_0=good, name_1="ref", plp_1=good, prompt_len=3).within(0)
    missing_none = good[1:]
    c = compare_prompt_logprobs(name_0="x", plp_0=missing_none, name_1="ref", plp_1=good, prompt_len=3)
    assert c.problem and "2 prompt logprobs for a 3-token prompt" in c.problem
    first_not_none = [0.0] + good[1:]
    assert "not None" in compare_prompt_logprobs(name_0="x", plp_0=first_not_none, name_1="ref", plp_1=good,
                                                 prompt_len=3).problem


def test_worked_example_greedy_streams():
    rows, _, _ = _worked()
    out = GOLDEN["output_ids"]
    tops = [{str(t): float(rows[r, t]) for t in np.argsort(-rows[r])[:2]} for r in GOLDEN["picked_rows"]]
    assert compare_token_streams(name_0="a", ids_0=out, top_0=tops, name_1="b", ids_1=out, top_1=tops,
                                 k=2).outcome == "equal"
    runner_up = int(np.argsort(-rows[GOLDEN["picked_rows"][1]])[1])
    tie = compare_token_streams(name_0="a", ids_0=out, top_0=tops, name_1="b", ids_1=[out[0], runner_up],
                                top_1=tops, k=2)
    assert tie.outcome == "tie" and tie.position == 1 and tie.ok
    far = compare_token_streams(name_0="a", ids_0=out, top_0=tops, name_1="b", ids_1=[out[0], 0], top_1=tops, k=2)
    assert far.outcome == "diverged" and not far.ok and "NOT in" in far.describe()
    cut = compare_token_streams(name_0="a", ids_0=out[:1], top_0=tops, name_1="b", ids_1=out, top_1=tops, k=2)
    assert cut.outcome == "truncated" and not cut.ok


def test_mode_distances_pick_the_mode():
    rows, _, _ = _worked()
    out = GOLDEN["output_ids"]
    r = [GOLDEN["picked_rows"][i] for i in range(2)]
    by_mode = {"raw": [float(log_softmax(rows[i])[t]) for i, t in zip(r, out)],
               "temperature": [float(log_softmax(rows[i] / 0.5)[t]) for i, t in zip(r, out)]}
    d = mode_distances(name="x", lp=by_mode["temperature"], by_mode=by_mode, atol=1e-9)
    assert d.matching == ["temperature"] and d.nearest == "temperature"


def test_mismatch_metrics_on_the_worked_example():
    _, right, shifted = _worked()
    same = mismatch_metrics(rollout_name="e", rollout=[right], trainer_name="r", trainer=[right])
    assert same["k3"] == 0 and same["k1"] == 0 and same["is_outside_frac"] == 0 and same["ppl_ratio"] == 1
    m = mismatch_metrics(rollout_name="e", rollout=[shifted], trainer_name="r", trainer=[right])
    r = np.array(right) - np.array(shifted)
    assert m["k3"] == pytest.approx(float(np.mean(np.exp(r) - r - 1)))
    assert m["k1"] == pytest.approx(float(np.mean(-r)))
    assert m["is_outside_frac"] == 0.5  # exp(0.2) = 1.22 is outside [0.9, 1.1]; position 0 is exact
    assert m["ppl_ratio"] == pytest.approx(math.exp(float(np.mean(shifted) - np.mean(right))))
    assert m["max_abs_dlogp"] == pytest.approx(0.2)


def test_masked_on_both_sides_is_equal_and_one_sided_is_infinite():
    assert compare_logprobs(name_0="a", lp_0=[-math.inf, -1.0], name_1="b", lp_1=[-math.inf, -1.0]).max_abs == 0
    assert compare_logprobs(name_0="a", lp_0=[-math.inf], name_1="b", lp_1=[-1.0]).max_abs == math.inf
    m = mismatch_metrics(rollout_name="a", rollout=[[-math.inf, -1.0]], trainer_name="b", trainer=[[-math.inf, -1.0]])
    assert m["n_tokens"] == 1 and m["k3"] == 0
    assert mismatch_metrics(rollout_name="a", rollout=[[-1.0]], trainer_name="b", trainer=[[-math.inf]])["k3"] > 1


_lp = st.floats(min_value=-30, max_value=0, allow_nan=False)


@given(st.lists(st.tuples(_lp, _lp), min_size=1, max_size=40))
def test_mismatch_properties(pairs):
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    m = mismatch_metrics(rollout_name="a", rollout=[a], trainer_name="b", trainer=[b])
    assert m["k3"] >= -1e-12 and m["max_abs_dlogp"] >= m["mean_abs_dlogp"] >= 0
    assert 0 <= m["is_outside_frac"] <= 1
    if a == b:
        assert m["k3"] == 0 and m["is_outside_frac"] == 0


@given(st.lists(st.integers(0, 9), max_size=12), st.lists(st.integers(0, 9), max_size=12))
def test_stream_comparison_is_symmetric(x, y):
    top = [{str(t): -float(t) for t in range(10)}] * 12
    a = compare_token_streams(name_0="a", ids_0=x, top_0=top, name_1="b", ids_1=y, top_1=top, k=3)
    b = compare_token_streams(name_0="b", ids_0=y, top_0=top, name_1="a", ids_1=x, top_1=top, k=3)
    assert a.outcome == b.outcome and a.matched == b.matched and a.ok == b.ok


# ----------------------------------------------------------------------------- fast paths (large runs)
# compare_logprobs and mismatch_metrics run tens of thousands of times on a large run and take shortcuts
# (plain-Python arithmetic, one numpy pass over all sequences). These reference implementations are the
# code before the shortcuts; the numbers must stay bit for bit the same (they land in checks.json).
def _reference_compare(lp_0, lp_1):
    x, y = np.asarray(lp_0, dtype=np.float64), np.asarray(lp_1, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        d = np.abs(x - y)
    d[x == y] = 0.0
    d[np.isnan(d)] = np.inf
    i = int(np.argmax(d))
    return float(d[i]), float(np.mean(d)), i


def _reference_mismatch(rollout, trainer):
    ro, tr = [], []
    for a, b in zip(rollout, trainer):
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        keep = ~((x == -np.inf) & (y == -np.inf))
        ro.append(x[keep])
        tr.append(y[keep])
    x = np.concatenate(ro) if ro else np.zeros(0)
    y = np.concatenate(tr) if tr else np.zeros(0)
    if x.size == 0:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(x - y)
        d[x == y] = 0.0
        d[np.isnan(d)] = np.inf
        r = np.clip(y - x, -20.0, 20.0)
        r[np.isnan(r)] = 20.0
        ratio = np.exp(r)
        px, py = np.exp(x), np.exp(y)
        pearson = float(np.corrcoef(px, py)[0, 1]) if x.size >= 2 and np.std(px) > 0 and np.std(py) > 0 else None
        seq = [(float(np.mean(a)), float(np.mean(b))) for a, b in zip(ro, tr) if a.size]
        log_ppl = np.array([a - b for a, b in seq]) if seq else np.zeros(1)
    return {"n_tokens": int(x.size), "n_sequences": len(ro), "max_abs_dlogp": float(np.max(d)),
            "mean_abs_dlogp": float(np.mean(d)),
            "k1": float(np.mean(x - y)) if np.all(np.isfinite(x - y)) else math.inf,
            "k3": float(np.mean(ratio - r - 1.0)), "chi2_token": float(np.mean(ratio ** 2) - 1.0),
            "pearson_probs": pearson, "prob_diff_max": float(np.max(np.abs(px - py))),
            "prob_diff_mean": float(np.mean(np.abs(px - py))),
            "is_outside_frac": float(np.mean((ratio < 0.9) | (ratio > 1.1))),
            "ppl_ratio": float(np.mean(np.exp(np.clip(log_ppl, -20.0, 20.0)))), "log_ppl_diff": float(np.mean(log_ppl))}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


_logprob = st.one_of(st.floats(min_value=-30, max_value=0), st.sampled_from([-math.inf, math.nan, 0.0, -1e-300]))
_sequence_pairs = st.lists(st.integers(0, 24).flatmap(
    lambda n: st.tuples(st.lists(_logprob, min_size=n, max_size=n), st.lists(_logprob, min_size=n, max_size=n))),
    max_size=8)


@given(pairs=_sequence_pairs)
def test_fast_paths_give_the_reference_numbers(pairs):
    for a, b in pairs:
        if a:
            c = compare_logprobs(name_0="a", lp_0=a, name_1="b", lp_1=b)
            m, mean, i = _reference_compare(a, b)
            assert (c.max_abs, c.argmax) == (m, i) and _same(c.mean_abs, mean)
            assert (c.value_0, c.value_1) == (float(a[i]), float(b[i])) or math.isnan(a[i]) or math.isnan(b[i])
    rollout, trainer = [a for a, _ in pairs], [b for _, b in pairs]
    want = _reference_mismatch(rollout, trainer)
    got = mismatch_metrics(rollout_name="r", rollout=rollout, trainer_name="t", trainer=trainer)
    if want is not None:
        assert all(_same(got[k], v) for k, v in want.items()), {k: (got[k], v) for k, v in want.items()}
    from harness.checks.compare_fns import k3_kl

    assert _same(k3_kl(rollout_name="r", rollout=rollout, trainer_name="t", trainer=trainer), got["k3"])


def test_compare_logprobs_takes_non_float_lists_the_numpy_way():
    c = compare_logprobs(name_0="a", lp_0=np.array([-1.0, -2.0]), name_1="b", lp_1=(-1, -2.5))
    assert (c.max_abs, c.mean_abs, c.argmax) == (0.5, 0.25, 1)


_abs_diff = st.one_of(st.floats(min_value=0, max_value=50), st.sampled_from([math.inf, math.nan, 0.0, 5e-324]))


@given(diffs=st.lists(st.lists(_abs_diff, max_size=30), max_size=6),
       qs=st.lists(st.one_of(st.floats(min_value=0, max_value=1), st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0])),
                   min_size=1, max_size=5))
def test_abs_quantiles_give_numpys_numbers(diffs, qs):
    from harness.checks.compare_fns import abs_quantile, abs_quantiles

    parts = [np.asarray(d, dtype=np.float64) for d in diffs if len(d)]
    x = np.concatenate(parts) if parts else None
    want = [0.0 if x is None else float(x.max()) if q >= 1.0 else float(np.quantile(x, q, method="higher"))
            for q in qs]
    got = abs_quantiles(diffs, qs)
    assert all(_same(g, w) for g, w in zip(got, want)) and len(got) == len(want), (got, want)
    assert _same(abs_quantile(diffs, qs[0]), want[0])


def test_forked_case_checks_give_the_sequential_verdicts():
    """compare_data spreads a large run's case checks over forked processes; joined in case order, the
    verdicts (and so checks.json) are exactly the sequential ones, for any number of slices."""
    from pathlib import Path

    from harness.checks.data import RunData
    from harness.compare import compare_data

    golden = Path(__file__).resolve().parent.parent / "golden" / "cpu-x86_64-float32"
    ctx = RunData.load(golden)
    one = compare_data(ctx, workers=1)
    assert len(ctx.suite.cases) >= 3 and one
    for n in (2, 3):
        assert compare_data(ctx, workers=n) == one


def test_compare_workers_default_to_the_cores_on_large_runs_only(monkeypatch):
    """PARITY_COMPARE_WORKERS unset or auto: a large run is checked by one process per usable core (capped), a
    small one by this process alone; a number is taken as it is; anything else is refused, naming the variable."""
    from harness import compare

    monkeypatch.delenv("PARITY_COMPARE_WORKERS", raising=False)
    monkeypatch.setattr(compare, "_cores", lambda: 8)
    assert compare._workers(None, compare.AUTO_CASES - 1) == 1
    assert compare._workers(None, compare.AUTO_CASES) == compare.AUTO_MAX_WORKERS
    monkeypatch.setattr(compare, "_cores", lambda: 1)
    assert compare._workers(None, 10 * compare.AUTO_CASES) == 1
    monkeypatch.setenv("PARITY_COMPARE_WORKERS", "3")
    assert compare._workers(None, 2) == 2 and compare._workers(None, 10) == 3
    monkeypatch.setenv("PARITY_COMPARE_WORKERS", "auto")
    assert compare._workers(None, 10) == 1
    monkeypatch.setenv("PARITY_COMPARE_WORKERS", "many")
    with pytest.raises(ValueError, match="PARITY_COMPARE_WORKERS"):
        compare._workers(None, 10)
