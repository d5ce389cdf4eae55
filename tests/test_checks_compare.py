"""The comparators on seed 001's worked example (the only hand-typed numbers), plus properties."""

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
