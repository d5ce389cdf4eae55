"""`parity selftest` (harness/selftest.py) on the committed golden run: detection power of the checks.

The self-test injects known defects into copies of a clean run of the real engines and
requires each to be caught by the check that should catch it, with no alarm on the clean run.
These tests check that it does so on the golden run, and that it *fails* when a check is
removed, made to always pass, or loosened: a self-test that cannot fail proves nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness import golden as G
from harness.checks import registry
from harness.cli import main
from harness.selftest import DEFECTS, format_matrix, run_selftest
from harness.verdict import Verdict

# Known gap, reported by the self-test itself: an engine that reports temperature-mode logprobs
# (sglang-jax) and ignores top-k samples tokens whose logprobs are right in that mode; only a check
# of the sampled token against the processed distribution's support (sampling_distribution,
# once missing) can see it. Remove from this set when that check lands.
KNOWN_GAPS: set[str] = set()


@pytest.fixture(scope="module")
def golden_dir() -> Path:
    dirs = G.golden_dirs()
    assert dirs, "no committed golden baseline"
    return dirs[0]


@pytest.fixture(scope="module")
def result(golden_dir) -> dict:
    return run_selftest(golden_dir, log=lambda s: None)


def test_clean_golden_run_raises_no_alarm_over_repetitions(result):
    reps = result["clean"]["repetitions"]
    assert len(reps) == 6  # as recorded + 5 with fresh float32-sized noise
    assert [r["noise_seed"] for r in reps] == [None, 1, 2, 3, 4, 5]
    assert all(r["values_moved"] > 1000 for r in reps[1:])
    assert result["clean"]["alarms"] == 0, [a for r in reps for a in r["alarms"]]
    for r in reps:
        assert r["counts"]["pass"] > 150 and r["counts"]["fail"] == r["counts"]["error"] == 0
        assert r["min_headroom"] is not None and r["min_headroom"] > 2  # thresholds not on the edge of the noise


def test_every_defect_is_injected_into_every_engine(result):
    names = {f["name"] for f in result["faults"]}
    # the rollout-surface defects need a golden recorded with those records (harness.selftest.has_rollout_records)
    expressible = "Not run (the base run has no rollout-surface records)" not in result["note"]
    assert expressible, "the committed golden was recorded without the rollout surface: re-record it"
    assert names == {f"{d.name}@{t}" for d in DEFECTS if expressible or not d.needs_rollout
                     for t in ("vllm", "sglang_jax")}
    core = {d.name for d in DEFECTS if d.core}
    assert {"shifted-logprobs", "temperature-twice", "processed-as-raw", "eos-dropped", "topk-ignored",
            "stale-weights", "samples-duplicated", "samples-reordered", "seed-ignored", "truncated",
            "prompt-logprobs-no-leading-none"} == core
    assert not [f["name"] for f in result["faults"] if f["not_injectable"]]


def test_every_defect_is_caught_by_its_check(result):
    missed = {f["name"]: [e["detail"] for e in f["evidence"] if not e["caught"]]
              for f in result["faults"] if not f["caught"]}
    assert set(missed) == KNOWN_GAPS, missed
    for f in result["faults"]:
        if f["caught"]:
            for e in f["evidence"]:
                # past the threshold: above it, or below it for a p-value (harness.selftest.detection_headroom)
                assert e["value"] is None or e["threshold"] is None or (
                    e["value"] < e["threshold"] if e["metric"].endswith("p_value") else e["value"] > e["threshold"]), e


def test_selftest_passes_on_the_golden_run(result):
    assert result["passed"], format_matrix(result)


def test_expected_checks_per_defect(result):
    rows = {f["name"]: f for f in result["faults"]}
    assert rows["shifted-logprobs@sglang_jax"]["expected"] == ["completion_logprobs"]
    assert rows["temperature-twice@vllm"]["expected"] == ["logprob_mode"]
    assert rows["eos-dropped@vllm"]["expected"] == ["eos_policy"]
    assert rows["stale-weights@sglang_jax"]["expected"] == ["weight_update"]
    # whatever mode an engine reports, a token top-k excludes has processed truth -inf
    assert rows["topk-ignored@vllm"]["expected"] == ["sampling_support"]
    assert rows["topk-ignored@sglang_jax"]["expected"] == ["sampling_support"]


def test_matrix_text_and_selftest_json(result, tmp_path, golden_dir, monkeypatch, capsys):
    text = format_matrix(result)
    assert "shifted-logprobs@sglang_jax" in text and "columns: 1 backend_ran" in text
    # the CLI writes selftest.json in docs/report.md's shape, and its exit code follows `passed`
    rc = main(["selftest", "--golden", str(golden_dir), "--out", str(tmp_path / "out"),
               "--defects", "eos-dropped,samples-reordered", "--repeats", "1"])
    assert rc == 0
    payload = json.loads((tmp_path / "out" / "selftest.json").read_text())
    assert payload["passed"] and payload["checks"][0] == "backend_ran"
    for f in payload["faults"]:
        assert set(f["expected"]) <= set(f["detected"]) and f["description"]
    assert "detection matrix" in capsys.readouterr().out


def test_report_renders_the_matrix(result, tmp_path, golden_dir):
    """`--out RUN_DIR` puts selftest.json next to a run; its HTML report shows the matrix."""
    from harness.compare import compare_run
    from harness.report import write_reports

    d = tmp_path / "run"
    d.mkdir()
    shutil.copytree(golden_dir / "records", d / "records")
    m = json.loads((golden_dir / "run.json").read_text())
    m["suite"] = str((golden_dir / "suite.yaml").resolve())
    (d / "run.json").write_text(json.dumps(m))
    compare_run(d)
    (d / "selftest.json").write_text(json.dumps(result, default=str))
    write_reports(d)
    html = (d / "index.html").read_text()
    assert 'id="selftest-table"' in html
    for f in result["faults"]:
        assert f["name"] in html
    assert "MISSED" in html  # the known gap is shown, not hidden


# ---------------------------------------------------------------- the self-test must be able to fail


def _always_pass(name):
    def fn(ctx, case):
        return [Verdict(check=name, backends=[b], case=case.id, metric="x", value=0.0, threshold=0.0,
                        verdict="pass", detail="patched to always pass") for b in ctx.backends]
    return fn


def test_a_check_that_always_passes_is_reported_not_caught(golden_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(registry.CHECKS, "eos_policy", _always_pass("eos_policy"))
    r = run_selftest(golden_dir, targets=["sglang_jax"], defects=["eos-dropped", "truncated", "seed-ignored"],
                     repeats=1, log=lambda s: None)
    rows = {f["defect"]: f for f in r["faults"]}
    assert not rows["eos-dropped"]["caught"] and not rows["truncated"]["caught"]
    assert "eos_policy" not in rows["eos-dropped"]["detected"]
    assert rows["seed-ignored"]["caught"]
    assert not r["passed"]
    assert "MISSED" in format_matrix(r)
    rc = main(["selftest", "--golden", str(golden_dir), "--out", str(tmp_path), "--targets", "sglang_jax",
               "--defects", "eos-dropped", "--repeats", "1"])
    assert rc == 1
    assert "MISSED" in capsys.readouterr().out


def test_a_removed_check_fails_the_selftest(golden_dir, monkeypatch):
    monkeypatch.delitem(registry.CHECKS, "n_samples")
    r = run_selftest(golden_dir, targets=["vllm"], defects=["samples-duplicated", "samples-reordered"], repeats=1,
                     log=lambda s: None)
    assert not r["passed"]
    assert all(not f["caught"] for f in r["faults"])
    # and the clean run is not clean either: a named check without implementation is an error, never a pass
    assert r["clean"]["alarms"] > 0


def test_a_loosened_threshold_fails_the_selftest(golden_dir, tmp_path):
    """A suite whose logprob tolerance is loosened to 10 nats lets shifted logprobs through."""
    d = tmp_path / golden_dir.name
    shutil.copytree(golden_dir, d)
    suite = yaml.safe_load((d / "suite.yaml").read_text())
    suite.setdefault("defaults", {}).setdefault("tolerances", {})["logprob_atol"] = 10.0
    (d / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    r = run_selftest(d, targets=["sglang_jax"], defects=["shifted-logprobs", "stale-weights"], repeats=0,
                     log=lambda s: None)
    rows = {f["defect"]: f for f in r["faults"]}
    assert not rows["shifted-logprobs"]["caught"] and not rows["stale-weights"]["caught"]
    assert not r["passed"]
