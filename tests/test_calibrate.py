"""The calibration study's rule (harness/calibrate.py) and the committed profile it generated."""

import json
from pathlib import Path

import pytest

from harness import calibrate
from harness.checks.profiles import PROFILE_DIR, profile

ROOT = Path(__file__).resolve().parent.parent
STUDIES = sorted((ROOT / "calibration").glob("*.json"))


def _row(check, backend, **stats):
    return {"check": check, "backends": [backend, "reference"], "case": "c", "run": "r", **stats}


def test_rule_takes_margin_times_the_largest_calibration_value_rounded_up():
    rows = [_row("completion_logprobs", "vllm", max=0.1, **{"q0.9": 0.011}),
            _row("completion_logprobs", "sglang_jax", max=0.05, **{"q0.9": 0.02}),
            _row("completion_logprobs", "reference", max=9.0, **{"q0.9": 9.0}),  # the reference never calibrates
            _row("mismatch", "vllm", k3=1e-3, is_outside_frac=0.04),
            _row("batch_invariance", "vllm", max=0.0, differing=0),
            _row("batch_invariance", "sglang_jax", max=0.03, differing=0)]
    prof = calibrate.derive({"dtype": "bfloat16", "path": "x.json", "rows": rows})
    t = prof["tolerances"]
    assert t["completion_logprobs"]["logprob_atol"] == pytest.approx(0.06)
    assert t["completion_logprobs"]["logprob_max_atol"] == pytest.approx(0.3)
    assert t["completion_logprobs"]["logprob_quantile"] == calibrate.GATE_QUANTILE
    assert t["logprob_mode"] == t["completion_logprobs"]
    assert t["mismatch"]["k3_max"] == pytest.approx(9e-3) and t["mismatch"]["is_outside_max"] == pytest.approx(0.12)
    assert t["replay"]["logprob_atol"] == 1e-4  # nothing measured: never below float32's default
    assert prof["measured_only"] == {"batch_invariance": ["sglang_jax"]}  # vLLM was bitwise batch-invariant
    assert calibrate._round_up(0.0123) == 0.013 and calibrate._round_up(4.1e-6) == 4.1e-6
    assert calibrate._round_up(3 * 0.017296) == 0.052
    quiet = calibrate.derive({"dtype": "bfloat16", "path": "x.json",
                              "rows": [_row("mismatch", "vllm", k3=1e-5, is_outside_frac=0.0)]})
    assert quiet["tolerances"]["mismatch"]["is_outside_max"] == pytest.approx(1 - calibrate.GATE_QUANTILE)


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_committed_profile_is_what_the_committed_study_gives(study):
    doc = json.loads(study.read_text())
    prof = calibrate.derive(doc)
    path = PROFILE_DIR / f"{prof['dtype']}.yaml"
    assert path.read_text() == calibrate.profile_text(prof), \
        f"regenerate: python -m harness.calibrate derive {study.relative_to(ROOT)}"
    assert not set(doc["calibration_runs"]) & set(doc["held_out_runs"])  # false alarms counted on other runs
    loaded = profile(prof["dtype"])
    assert loaded.calibrated and loaded.tolerances


def test_seeded_suites_move_only_the_seeds(tmp_path):
    from harness.suite import load_suite

    base = load_suite(ROOT / "cases" / "default.yaml")
    (p,) = calibrate.seeded_suites([3], tmp_path)
    s = load_suite(p)
    assert [c.id for c in s.cases] == [c.id for c in base.cases]
    for a, b in zip(base.cases, s.cases):
        assert a.prompts == b.prompts and a.checks == b.checks
        if a.sampling.seed is None:
            assert b.sampling.seed is None
        else:
            assert b.sampling.seed == a.sampling.seed + 3 * calibrate.SEED_STRIDE


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_docs_show_the_committed_study(study):
    doc = json.loads(study.read_text())
    assert calibrate.table(doc) in (ROOT / "docs" / "checks.md").read_text(), \
        f"docs/checks.md: paste `python -m harness.calibrate table {study.relative_to(ROOT)}`"


def test_appending_runs_moves_them_out_of_the_held_out_set_and_says_why():
    study = {"dtype": "bfloat16", "path": "s.json", "calibration_runs": ["a"], "held_out_runs": ["b", "c"],
             "models": {"a": "m1"}, "rows": [_row("replay", "vllm", max=0.1)]}
    new = {"dtype": "bfloat16", "calibration_runs": ["b"], "held_out_runs": ["d"], "models": {"b": "m2"},
           "rows": [_row("replay", "vllm", max=0.3)]}
    out = calibrate.appended(study, new, "b raised alarms on a shape a lacks")
    assert out["calibration_runs"] == ["a", "b"] and out["held_out_runs"] == ["c", "d"]
    assert len(out["rows"]) == 2 and out["models"] == {"a": "m1", "b": "m2"}
    assert out["history"] == [{"added_to_calibration": ["b"], "why": "b raised alarms on a shape a lacks"}]
    with pytest.raises(ValueError, match="--why"):
        calibrate.appended(study, new, "")
    with pytest.raises(ValueError, match="already"):
        calibrate.appended(out, new, "again")
