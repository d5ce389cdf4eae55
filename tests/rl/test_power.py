"""The committed power study backs rl.curve_parity's margins and seed counts (docs/rl.md, "Equivalence and power")."""

import json
from pathlib import Path

import pytest

from harness.rl import stats
from harness.rl.config import DEFAULT_MARGINS, PARITY_METRICS, TIERS, margins_for, seeds_for

STUDY = Path(__file__).resolve().parents[2] / "studies" / "rl-power" / "power.json"


@pytest.fixture(scope="module")
def study():
    return json.loads(STUDY.read_text())


def test_the_study_measured_every_metric_of_both_algorithms(study):
    assert set(study["algos"]) == {"grpo", "ppo"}
    for algo, a in study["algos"].items():
        assert set(a["metrics"]) == set(PARITY_METRICS)
        for metric, m in a["metrics"].items():
            assert m["sd"] is not None and m["df"] >= 2, (algo, metric)


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_each_tier_detects_a_difference_of_its_margin_with_80_percent_power(study, tier):
    for algo, a in study["algos"].items():
        n = seeds_for(TIERS[tier]["seeds"], algo)
        margins = margins_for(TIERS[tier]["margins"], algo)
        tests = study["design_engines"] * (study["design_engines"] - 1) // 2 * len(margins)
        for metric, margin in margins.items():
            sd = a["metrics"][metric]["sd"]
            p = stats.design_power(sd, n, margin, alpha=study["alpha"], tests=tests, sims=8000)
            assert p["different_margin"] >= stats.POWER_TARGET, (tier, algo, metric, sd, margin, p)
            # and clean engines are equivalent with the same design, most of the time
            assert p["equivalent_null"] >= stats.POWER_TARGET, (tier, algo, metric, sd, margin, p)


def test_the_study_used_the_default_margins(study):
    assert TIERS["default"]["margins"] == DEFAULT_MARGINS == study["margins"]


def test_the_committed_figures_recompute(study):
    """The study's design table comes from its own inputs (same simulation seed: the same numbers)."""
    from harness.rl.power import measure_spread

    a = study["algos"]["grpo"]
    spread = measure_spread(study["inputs"]["grpo"]["engines"], "auc")
    assert spread["sd"] == pytest.approx(a["metrics"]["auc"]["sd"])
    n = str(seeds_for(TIERS["default"]["seeds"], "grpo"))
    got = stats.design_power(spread["sd"], int(n), study["margins"]["grpo"]["auc"], alpha=study["alpha"],
                             tests=a["difference_tests"], sims=8000)
    want = a["metrics"]["auc"]["designs"]["sd"][n]
    assert got["different_margin"] == pytest.approx(want["different_margin"])


def test_the_injected_temperature_error_is_caught(study):
    """A rollout sampling at 1.1 x the trainer's temperature: the mismatch metric is far outside its margin."""
    inj = study["algos"]["grpo"]["injected"]["vanilla-temp1.1-vs-vanilla"]
    assert inj["mismatch_k3"]["outcome"] == "different"
    assert inj["mismatch_k3"]["diff_in_margins"] > 5


def test_mode_split_counts_each_engines_seeds_in_the_upper_mode_and_tests_the_pair():
    from harness.rl.power import mode_split

    engines = {"a": {"seeds": [0, 1, 2, 3], "final": [0.47, 0.46, 0.48, 0.47]},
               "b": {"seeds": [0, 1, 2, 3], "final": [0.31, 0.32, 0.31, 0.31]},
               "b-stale": {"seeds": [0], "final": [0.0]}}  # injected engines are not pooled
    m = mode_split(engines)
    assert m["engines"]["a"]["upper"] == 4 and m["engines"]["b"]["upper"] == 0 and "b-stale" not in m["engines"]
    assert 0.32 < m["split"] < 0.46
    pair = m["pairs"]["a-vs-b"]
    assert pair["p_fisher"] == pytest.approx(2 / 70)  # 4/4 vs 0/4: the two most extreme tables of C(8, 4)
    assert pair["diff"] == 1.0 and 0 < pair["ci"][0] < 1 and pair["ci"][1] == 1.0
    # the same values split evenly between the engines: no difference
    even = {"a": {"final": [0.47, 0.31, 0.46, 0.32]}, "b": {"final": [0.31, 0.48, 0.31, 0.47]}}
    assert mode_split(even)["pairs"]["a-vs-b"]["p_fisher"] == pytest.approx(1.0)
    # one mode only: nothing to split
    assert mode_split({"a": {"final": [0.30, 0.31, 0.32]}, "b": {"final": [0.31, 0.33, 0.30]}}) is None


def test_merge_inputs_adds_runs_and_a_rerun_seed_replaces_its_old_values():
    from harness.rl.power import merge_inputs

    row = lambda seeds, auc: {"seeds": seeds, "auc": auc, "final": auc, "length": [12.0] * len(seeds),
                              "mismatch_k3": [1e-13] * len(seeds)}
    base = {"grpo": {"steps": 30, "engines": {"vanilla": row([0, 1, 2], [0.1, 0.2, 0.3])}}}
    newer = {"grpo": {"steps": 30, "engines": {"vanilla": row([2, 3], [0.35, 0.4]), "vllm": row([0], [0.5])}},
             "ppo": {"steps": 30, "engines": {"vllm": row([0], [0.6])}}}
    out = merge_inputs(base, newer)
    assert out["grpo"]["engines"]["vanilla"]["seeds"] == [0, 1, 2, 3]
    assert out["grpo"]["engines"]["vanilla"]["auc"] == [0.1, 0.2, 0.35, 0.4]
    assert out["grpo"]["engines"]["vllm"]["auc"] == [0.5] and out["ppo"]["engines"]["vllm"]["auc"] == [0.6]
    assert base["grpo"]["engines"]["vanilla"]["auc"] == [0.1, 0.2, 0.3]  # the study's own inputs untouched
    with pytest.raises(ValueError, match="steps"):
        merge_inputs(base, {"grpo": {"steps": 40, "engines": {}}})
