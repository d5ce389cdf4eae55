"""The comparison on synthetic training results: clean engines pass, a stale one is flagged; file shapes."""

import json

import numpy as np
import pytest

from harness.rl.compare import compare_run
from harness.rl.records import read_step_records, write_json, write_run_records


def _strict(path):
    def no_constants(name):
        raise AssertionError(f"{path}: non-JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=no_constants)


def fake_run(label: str, seed: int, steps: int = 20, stale: bool = False, algo: str = "grpo") -> dict:
    rng = np.random.default_rng([seed, len(label)])
    out = []
    for s in range(steps):
        if stale:
            reward = 0.07 + rng.normal(0, 0.01)
            k3, dmax = 0.05 * s, 0.5 * s
        else:
            reward = 0.07 + 0.4 * s / steps + rng.normal(0, 0.02)
            k3, dmax = 1e-12, 1e-5
        metrics = {"k3_kl": k3, "logp_diff_max": dmax, "logp_diff_mean": dmax / 10, "kl": 0.0,
                   "prob_diff_mean": 0.0, "prob_diff_max": 0.0, "probs_pearson_corr": 1.0, "chi2_token": 0.0,
                   "tokens": 100.0}
        out.append({"step": s, "syncs_before": s, "reward_mean": float(reward), "reward_std": 0.1,
                    "completion_len_mean": 10.0, "identical_group_frac": 0.0, "sample": metrics,
                    "score": metrics, "generate_s": 0.1, "example": "the girl"})
    engine = label.replace("-stale", "")
    return {"config": {"algo": algo, "engine": engine, "seed": seed, "steps": steps, "stale_weights": stale},
            "label": label, "status": "ok", "steps": out, "syncs": steps, "syncs_skipped": steps if stale else 0,
            "warnings": [], "train_seconds": 1.0, "setup_seconds": 1.0}


@pytest.fixture
def run_dir(tmp_path):
    for seed in range(3):
        for label, stale in (("vanilla", False), ("vllm", False), ("sglang_jax-stale", True)):
            r = fake_run(label, seed, stale=stale)
            write_json(tmp_path / "rl" / "runs" / f"grpo.{label}.seed{seed}.json", r)
            write_run_records(tmp_path, r)
    write_json(tmp_path / "rl" / "runs" / "grpo.broken.seed0.json",
               {"config": {"algo": "grpo", "engine": "vllm", "seed": 0}, "label": "broken", "status": "error",
                "error": "exit -9 (SIGKILL)"})
    return tmp_path


def by_id(comparison):
    return {(v["check"], v["case"], "-vs-".join(v["backends"])): v for v in comparison["verdicts"]}


def test_stale_engine_is_flagged_and_clean_engines_pass(run_dir):
    c = compare_run(run_dir, window=5, alpha=0.05, k3_threshold=1e-3)
    v = by_id(c)
    assert v[("rl.curve_parity", "grpo", "vanilla-vs-vllm")]["verdict"] == "pass"
    assert v[("rl.curve_parity", "grpo", "vanilla-vs-sglang_jax-stale")]["verdict"] == "fail"
    assert v[("rl.curve_parity", "grpo", "sglang_jax-stale-vs-vllm")]["verdict"] == "fail"
    assert v[("rl.mismatch", "grpo", "sglang_jax-stale")]["verdict"] == "fail"
    assert v[("rl.mismatch", "grpo", "vllm")]["verdict"] == "pass"
    assert v[("rl.learning", "grpo", "vanilla")]["verdict"] == "pass"
    assert v[("rl.learning", "grpo", "sglang_jax-stale")]["verdict"] == "fail"
    assert v[("rl.run", "grpo", "broken")]["verdict"] == "error"
    clean = v[("rl.curve_parity", "grpo", "vanilla-vs-vllm")]
    assert clean["value"] <= clean["threshold"] == 1.0  # every TOST interval inside its margin
    assert {m["outcome"] for m in clean["data"]["metrics"].values()} == {"equivalent"}
    stale = v[("rl.curve_parity", "grpo", "vanilla-vs-sglang_jax-stale")]["data"]["metrics"]
    assert stale["auc"]["outcome"] == stale["final"]["outcome"] == stale["mismatch_k3"]["outcome"] == "different"
    # the difference tests of all 3 pairs x 4 metrics share alpha (Holm)
    assert clean["data"]["family_tests"] == 12
    assert c["exit_code"] == 2  # an error verdict outranks failures


def test_files_have_the_documented_shape(run_dir):
    compare_run(run_dir, window=5)
    curves = _strict(run_dir / "rl" / "grpo.json")
    assert curves["algo"] == "grpo" and curves["window"] == 5
    assert list(curves["engines"])[0] == "vanilla"  # the baseline first
    e = curves["engines"]["vllm"]
    assert set(e["seeds"]) == {"0", "1", "2"}
    seed = e["seeds"]["0"]
    assert len(seed["reward"]) == 20 and len(seed["mismatch"]["k3_kl"]) == 20
    assert set(e["band"]["reward"]) == {"mean", "lo", "hi", "n"}
    assert set(e["summary"]) == {"first", "final", "gain", "auc", "length", "mismatch_k3"}
    assert set(e["band"]) >= {"reward", "completion_len", "k3_kl"}
    comp = _strict(run_dir / "rl" / "comparison.json")
    from harness.verdict import Verdict

    for v in comp["verdicts"]:
        Verdict(**v)  # the shape the report and summary read
    assert comp["curves"] == {"grpo": "rl/grpo.json"}


def test_step_records_round_trip(run_dir):
    recs = read_step_records(run_dir)
    runs = [r for r in recs if r.kind == "rl_run"]
    steps = [r for r in recs if r.kind == "rl_step"]
    assert len(runs) == 9 and len(steps) == 9 * 20
    assert {r.backend for r in runs} == {"vanilla", "vllm", "sglang_jax-stale"}
