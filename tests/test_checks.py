"""The checks on a real clean run, and on copies of it with one known defect each.

Every record comes from a real recording of the default suite (see checks_fixtures):
the reference, plus synthetic engines that behave like a correct engine in each
logprob mode. A defect is injected into one engine's records the way a real engine
would have produced them (harness.checks.inject); the named check must fail, with
its metric over its threshold, and the clean run must pass everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from checks_fixtures import *  # noqa: F401,F403
from checks_fixtures import CLONE_NOISE, CLONES, ROOT, SUITE, engine_backends
from harness.checks import inject
from harness.checks.catalog import CATALOG
from harness.checks.data import RunData
from harness.compare import compare_run
from harness.rundir import read_checks
from harness.suite import load_suite

TARGET = "clone_raw"


def select(vs, check=None, backend=None, case=None, outcome=None):
    return [v for v in vs if (check is None or v.check == check) and (backend is None or backend in v.backends)
            and (case is None or v.case == case) and (outcome is None or v.verdict == outcome)]


def allowed_skip(v) -> bool:
    """The only verdicts a clean run may skip: self-consistency where generate and score modes differ, and
    the checks of an engine rollout's own surface for backends without one (the reference, the clones)."""
    from harness.checks.tunix import NO_ROLLOUT

    return (v.check == "self_consistency" and "not comparable" in v.detail) or (
        v.check in ("params_sent", "seed_rule", "tunix_surface", "rollout_contract") and NO_ROLLOUT in v.detail)


# ---------------------------------------------------------------- the clean run


@pytest.fixture(scope="module")
def clean_verdicts(clean_run):
    return compare_run(clean_run)


def test_clean_run_passes_every_check(clean_verdicts):
    bad = [f"{v.test_id}: {v.verdict}: {v.detail}" for v in clean_verdicts
           if v.verdict != "pass" and not allowed_skip(v)]
    assert not bad, "\n".join(bad)


def test_every_case_check_has_a_verdict_for_every_backend(clean_run, clean_verdicts):
    suite = load_suite(SUITE)
    backends = ["reference", *CLONES]
    for case in suite.cases:
        for check in case.checks:
            got = select(clean_verdicts, check=check, case=case.id)
            assert got, f"{case.id}/{check}: no verdict"
            if check in ("greedy_tokens",) and not case.sampling.greedy:
                continue
            for b in backends:
                if check in ("mismatch", "prompt_ids", "greedy_tokens") and b == "reference":
                    continue
                assert select(got, backend=b), f"{case.id}/{check}: no verdict naming {b}"
    ran = select(clean_verdicts, check="backend_ran")
    assert {(v.backends[0], v.case) for v in ran} == {(b, f"run:{p}") for b in backends for p in ("generate", "score")}


def test_checks_json_written_and_readable(clean_run, clean_verdicts):
    payload = json.loads((clean_run / "checks.json").read_text())
    assert payload["schema_version"] == 1 and len(payload["verdicts"]) == len(clean_verdicts)
    assert read_checks(clean_run) == clean_verdicts


def test_clean_metric_magnitudes(clean_verdicts):
    """Engines at float32-sized noise (sd 2e-6) against the float64 reference: |dlogp| ~1e-5,
    k3 ~1e-11, no importance ratio outside [0.9, 1.1]."""
    mm = select(clean_verdicts, check="mismatch", outcome="pass")
    assert mm
    for v in mm:
        d = v.data
        assert d["max_abs_dlogp"] < 10 * CLONE_NOISE
        assert 0 <= d["k3"] < 1e-9 and d["is_outside_frac"] == 0.0
        assert abs(d["ppl_ratio"] - 1) < 1e-4
        assert d["pearson_probs"] is None or d["pearson_probs"] > 0.999999
    lp = select(clean_verdicts, check="completion_logprobs")
    assert max(v.value for v in lp) < 1e-4


def test_logprob_mode_detects_each_declared_mode(clean_verdicts):
    """On the truncated sampling case every clone's mode is detected as exactly its declared one."""
    suite = load_suite(SUITE)
    truncated = [c.id for c in suite.cases if "logprob_mode" in c.checks and not c.sampling.greedy
                 and (c.sampling.top_k or c.sampling.top_p < 1) and c.sampling.temperature != 1]
    assert truncated, "the default suite needs a sampled case with top-k/top-p to tell the modes apart"
    for name, mode in CLONES.items():
        v = select(clean_verdicts, check="logprob_mode", backend=name, case=truncated[0])[0]
        assert v.verdict == "pass" and v.data["detected"] == [mode], v.detail


# ---------------------------------------------------------------- the basic defect classes


def _failing(run_dir, check, backend=TARGET):
    vs = compare_run(run_dir)
    bad = select(vs, check=check, backend=backend, outcome="fail")
    assert bad, f"{check} did not fail for {backend}: " + "; ".join(
        f"{v.test_id} {v.verdict} {v.detail}" for v in select(vs, check=check, backend=backend))
    for v in bad:
        assert v.value is None or v.threshold is None or not v.value <= v.threshold, v
    return vs, bad


def test_shifted_logprobs_fail_completion_logprobs(run_copy):
    d = run_copy()
    inject.inject_shifted_logprobs(d, TARGET)
    vs, bad = _failing(d, "completion_logprobs")
    assert max(v.value for v in bad) > 0.1
    assert select(vs, check="mismatch", backend=TARGET, outcome="fail")
    assert not select(vs, check="completion_logprobs", backend="clone_processed", outcome="fail")


def test_temperature_applied_twice_fails_logprob_mode(run_copy, t2_values):
    d = run_copy()
    inject.inject_temperature_twice(d, "clone_temperature", t2_values)
    vs, bad = _failing(d, "logprob_mode", "clone_temperature")
    for v in bad:
        assert v.data["detected"] == [] and "no mode matches" in v.detail
    _failing(d, "completion_logprobs", "clone_temperature")


def test_processed_labelled_raw_fails_logprob_mode(run_copy):
    d = run_copy()
    inject.inject_relabelled(d, TARGET, actual="processed", declared="raw")
    vs, bad = _failing(d, "logprob_mode")
    assert any("processed" in v.data["detected"] and "raw" not in v.data["detected"] for v in bad)
    # greedy cases cannot tell the modes apart, and must not pretend to
    suite = load_suite(SUITE)
    for c in suite.cases:
        if c.sampling.greedy and "logprob_mode" in c.checks:
            assert select(vs, check="logprob_mode", backend=TARGET, case=c.id, outcome="pass")


def test_dropped_eos_fails_eos_policy(run_copy):
    d = run_copy()
    inject.inject_dropped_eos(d, TARGET)
    vs, bad = _failing(d, "eos_policy")
    assert any("stop token was dropped" in v.detail for v in bad)
    # the logprobs that remain are right: the defect is named by eos_policy, not by a logprob check
    assert not select(vs, check="completion_logprobs", backend=TARGET, outcome="fail")


def test_stale_weights_fail_weight_update(run_copy):
    d = run_copy()
    inject.inject_stale_weights(d, TARGET)
    vs, bad = _failing(d, "weight_update")
    for v in bad:
        assert "STALE WEIGHTS" in v.detail
        assert v.data["max_abs_vs_stale"] <= v.threshold < v.data["max_abs_vs_live"]


# ---------------------------------------------------------------- more defects (the self-test's core list)


@pytest.mark.parametrize("injector, check", [
    (inject.inject_missing_leading_none, "prompt_logprobs"),
    (inject.inject_duplicate_samples, "n_samples"),
    (inject.inject_seed_ignored, "seed_determinism"),
    (inject.inject_batch_dependent, "batch_invariance"),
    (inject.inject_truncated, "eos_policy"),
    (inject.inject_prompt_ids, "prompt_ids"),
    (inject.inject_replay_shift, "replay"),
    (inject.inject_replay_shift, "self_consistency"),
], ids=lambda x: getattr(x, "__name__", x))
def test_defect_fails_named_check(run_copy, injector, check):
    d = run_copy()
    injector(d, TARGET)
    _failing(d, check)


def test_duplicate_samples_fail_with_their_improbability(run_copy):
    d = run_copy()
    inject.inject_duplicate_samples(d, TARGET)
    vs, bad = _failing(d, "n_samples")
    for v in bad:  # each prompt's copy judged by its own probability; a probable one is excused, and said so
        assert "identical samples [0, 1, 2, 3]" in v.detail
        ps = [t["p_value"] for t in v.data["coincidences"]]
        assert len(ps) == 2 and max(ps) < v.data["alpha_per_prompt"]


def test_duplicate_samples_of_a_peaked_model_pass_by_chance(run_copy):
    """Two equal samples whose sequence the reference's exact sampling distribution gives probability 0.2
    (a peaked model) are no evidence of shared seeds: pass, saying so; the same copies at 1e-6 fail."""
    import math

    def run(prob: float):
        d = run_copy(f"peaked-{prob:g}")
        inject.inject_duplicate_samples(d, TARGET)
        files = inject.load(d)
        for s in inject._scores(files, scorer="reference", source=TARGET):
            if s["key"]["case_id"] == "sample-n4":
                n = len(s["completion_ids"])
                s["by_mode"]["processed"] = [math.log(prob) / n] * n
        inject.save(d, files)
        return select(compare_run(d), check="n_samples", backend=TARGET, case="sample-n4")

    peaked = run(0.2)
    assert peaked and all(v.verdict == "pass" for v in peaked), [v.detail for v in peaked]
    assert all("by chance" in v.detail for v in peaked)
    rare = run(1e-6)
    assert rare and all(v.verdict == "fail" for v in rare)


def test_greedy_divergence_outside_top_k_fails(run_copy):
    d = run_copy()
    inject.inject_token_swap(d, TARGET, rank=-1)
    vs, bad = _failing(d, "greedy_tokens")
    assert any("NOT in" in v.detail for v in bad)


def test_greedy_tie_noise_passes_with_a_note(run_copy):
    """vLLM's rule: at the first divergence each side's token is in the other's top-k -> not a defect."""
    d = run_copy()
    inject.inject_token_swap(d, TARGET, rank=1)
    vs = compare_run(d)
    got = select(vs, check="greedy_tokens", backend=TARGET)
    assert got and all(v.verdict == "pass" for v in got), [v.detail for v in got if v.verdict != "pass"]
    assert any("tie noise" in v.detail for v in got)


# ---------------------------------------------------------------- errors, skips, other versions


def test_crashed_phase_is_an_error_never_a_pass(run_copy):
    d = run_copy()
    inject.remove_backend_phase(d, TARGET, "generate", exit_code=137)
    vs = compare_run(d)
    ran = select(vs, check="backend_ran", backend=TARGET, case="run:generate")
    assert ran[0].verdict == "error" and "137" in ran[0].detail
    mine = [v for v in vs if TARGET in v.backends and v.check not in ("backend_ran", "replay")]
    assert mine and all(v.verdict == "error" for v in mine), [v.test_id for v in mine if v.verdict != "error"]
    assert all("exited with code 137" in v.detail for v in mine)


def test_requested_backend_without_records_is_an_error(run_copy):
    d = run_copy()
    m = json.loads((d / "run.json").read_text())
    m["backends"].append("ghost")
    m["backend_status"]["ghost"] = {"phases": {}}
    (d / "run.json").write_text(json.dumps(m))
    vs = compare_run(d)
    ran = select(vs, check="backend_ran", backend="ghost")
    assert len(ran) == 2 and all(v.verdict == "error" for v in ran)
    ghost = [v for v in vs if "ghost" in v.backends]
    assert ghost and not [v for v in ghost if v.verdict not in ("error",) and not allowed_skip(v)]


def _append_error(run_dir: Path, backend: str, case_id: str, error_type: str, reason: str) -> None:
    from harness.records import CaseKey, ErrorRecord

    suite = load_suite(SUITE)
    case = suite.case(case_id)
    key = CaseKey(suite=suite.suite, case_id=case.id, case_hash=case.content_hash(), weights=case.weights,
                  prompt_index=-1)
    path = run_dir / "records" / f"{backend}.generate.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows = [r for r in rows if r.get("key", {}).get("case_id") != case_id]
    rows.append(json.loads(ErrorRecord(run_id="x", backend=backend, phase="generate", key=key,
                                       error_type=error_type, reason=reason).model_dump_json()))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_skipped_case_gives_skipped_verdicts_with_the_reason(run_copy):
    d = run_copy()
    _append_error(d, TARGET, "update-b", "Skipped", "case needs weight set B: pass --model-b DIR")
    vs = compare_run(d)
    mine = [v for v in select(vs, case="update-b", backend=TARGET) if v.check != "replay" or v.backends[1] == TARGET]
    assert mine and all(v.verdict == "skipped" and "--model-b" in v.detail for v in mine), \
        [(v.test_id, v.verdict) for v in mine]


def test_case_error_gives_error_verdicts_with_the_reason(run_copy):
    d = run_copy()
    _append_error(d, TARGET, "greedy-eos", "EngineCallError", "TypeError in engine: boom")
    vs = compare_run(d)
    mine = [v for v in select(vs, case="greedy-eos", backend=TARGET) if v.check != "replay" or v.backends[1] == TARGET]
    assert mine and all(v.verdict == "error" and "boom" in v.detail for v in mine)
    assert all(v.verdict == "pass" or allowed_skip(v) for v in select(vs, case="greedy-basic", backend=TARGET))


def test_records_of_another_case_version_are_not_compared(run_copy, tmp_path):
    import yaml

    d = run_copy()
    raw = yaml.safe_load(SUITE.read_text())
    changed = raw["cases"][0]
    changed["sampling"] = {**changed.get("sampling", {}), "max_tokens": 11}
    suite = tmp_path / "changed.yaml"
    suite.write_text(yaml.safe_dump(raw))
    vs = compare_run(d, str(suite))
    mine = select(vs, case=changed["id"])
    assert mine and all(v.verdict in ("error", "skipped") for v in mine)
    assert any("another version of the case" in v.detail for v in mine)
    assert all(v.verdict == "pass" or allowed_skip(v) for v in vs if v.case != changed["id"])


def test_a_check_without_implementation_is_an_error(run_copy, monkeypatch):
    """A check the suite names but the registry cannot run (declarations make every catalog check runnable,
    so the registry loses one here) is an error verdict, never a silent pass or a missing row."""
    from harness.checks import registry
    from harness.suite import load_suite

    first = load_suite(str(SUITE)).cases[0]
    name = sorted(first.checks)[0]
    monkeypatch.delitem(registry.CHECKS, name)
    vs = compare_run(run_copy(), str(SUITE))
    assert select(vs, check=name, case=first.id, outcome="error")


def test_run_without_manifest_compares_every_backend_recorded(run_copy):
    d = run_copy()
    (d / "run.json").unlink()
    ctx = RunData.load(d, str(SUITE))
    assert ctx.backends[0] == "reference" and set(ctx.backends) == {"reference", *CLONES}


# ---------------------------------------------------------------- pytest plugin / JUnit


def test_pytest_plugin_maps_verdicts_onto_junit(run_copy, tmp_path):
    d = run_copy()
    inject.inject_dropped_eos(d, TARGET)
    inject.remove_backend_phase(d, "clone_processed", "score", exit_code=1)
    verdicts = compare_run(d)
    xml = tmp_path / "junit.xml"
    # -p: the pytest11 entry point registers the plugin where the package is installed; a venv installed before
    # it was declared has no entry point yet (the explicit -p and the entry point load it once, not twice)
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "harness.checks.pytest_plugin",
                        "--parity-run", str(d), f"--junitxml={xml}", "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    cases = list(ET.parse(xml).getroot().iter("testcase"))
    assert len(cases) == len(verdicts)
    kinds = {"fail": 0, "error": 0, "skipped": 0, "pass": 0}
    for tc in cases:
        if tc.find("failure") is not None:
            kinds["fail"] += 1
        elif tc.find("error") is not None:
            kinds["error"] += 1
        elif tc.find("skipped") is not None:
            kinds["skipped"] += 1
        else:
            kinds["pass"] += 1
    want = {k: sum(v.verdict == k for v in verdicts) for k in kinds}
    assert kinds == want and want["fail"] and want["error"]
    names = {tc.get("name") for tc in cases}
    assert f"test_recorded[eos_policy:greedy-eos:{TARGET}-vs-reference]" in names


# ---------------------------------------------------------------- real engines (opt-in)


@pytest.mark.skipif(not engine_backends(), reason="set PARITY_CHECKS_ENGINES=vllm,sglang_jax to record real engines")
def test_real_engines_pass_every_check(recorded_run):
    vs = compare_run(recorded_run)
    bad = [f"{v.test_id}: {v.verdict}: {v.detail}" for v in vs if v.verdict != "pass" and not allowed_skip(v)]
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------- tolerance profiles


def _set_engine_dtype(run_dir, dtype: str) -> None:
    files = inject.load(run_dir)
    for name, rows in files.items():
        if name.startswith("clone_"):
            for r in rows:
                if r["kind"] == "session":
                    r["config"] = {**(r.get("config") or {}), "dtype": dtype}
    inject.save(run_dir, files)


@pytest.fixture
def bf16_profile(tmp_path, monkeypatch):
    """A stand-in bfloat16 profile (the committed one's shape, not its numbers)."""
    from harness.checks import profiles

    d = tmp_path / "profiles"
    d.mkdir()
    (d / "bfloat16.yaml").write_text(
        "dtype: bfloat16\ncalibrated: true\n"
        "tolerances: {logprob_atol: 0.02, logprob_quantile: 0.9, logprob_max_atol: 0.3, k3_max: 0.001, "
        "is_outside_max: 0.1}\nmeasured_only: {batch_invariance: [clone_raw]}\n")
    monkeypatch.setattr(profiles, "PROFILE_DIR", d)
    profiles.profile.cache_clear()
    yield
    profiles.profile.cache_clear()


def test_uncalibrated_dtype_is_an_error_never_a_pass(run_copy):
    d = run_copy()
    _set_engine_dtype(d, "float16")
    vs = compare_run(d)
    prof = select(vs, check="tolerance_profile")
    assert len(prof) == 1 and prof[0].verdict == "error" and "float16" in prof[0].detail
    assert select(vs, check="completion_logprobs", backend=TARGET)[0].threshold == 1e-4  # float32's, said so


def test_profile_gates_a_quantile_a_rare_outlier_passes_a_shift_fails(run_copy, bf16_profile):
    d = run_copy("outlier")
    _set_engine_dtype(d, "bfloat16")
    files = inject.load(d)
    # sample-n4 (8 completions of 12 tokens): one token in each of 4 off by 0.1, a rounding outlier's size
    for r in files[f"{TARGET}.generate.jsonl"]:
        if r["kind"] == "generation" and r["key"]["case_id"] == "sample-n4" and r["key"]["sample_index"] < 2:
            r["completion_logprobs"][0] -= 0.1
    inject.save(d, files)
    vs = compare_run(d)
    got = select(vs, check="completion_logprobs", backend=TARGET, case="sample-n4")
    assert got and all(v.verdict == "pass" and v.metric == "q0.9_abs_dlogp" for v in got), \
        [v.detail for v in got if v.verdict != "pass"]
    assert any(v.data["max_abs_dlogp"] > 0.09 for v in got)
    os_f32 = run_copy("outlier-f32")
    shutil_copy_records(d, os_f32)
    _set_engine_dtype(os_f32, "float32")
    assert select(compare_run(os_f32), check="completion_logprobs", backend=TARGET, case="sample-n4", outcome="fail")
    s = run_copy("shift")
    _set_engine_dtype(s, "bfloat16")
    inject.inject_shifted_logprobs(s, TARGET)
    _failing(s, "completion_logprobs")


def shutil_copy_records(src, dst) -> None:
    import shutil

    shutil.rmtree(dst / "records")
    shutil.copytree(src / "records", dst / "records")


def test_measured_only_check_is_shown_never_passed(run_copy, bf16_profile):
    from harness.report.summary import counts

    d = run_copy()
    _set_engine_dtype(d, "bfloat16")
    inject.inject_batch_dependent(d, TARGET, delta=0.1)
    vs = compare_run(d)
    mine = select(vs, check="batch_invariance", backend=TARGET)
    assert mine and all(v.verdict == "measured" and v.data["would_have"] == "fail" for v in mine)
    assert all("measured, not gated at bfloat16" in v.detail for v in mine)
    other = select(vs, check="batch_invariance", backend="clone_processed")
    assert other and all(v.verdict == "pass" for v in other)  # gated for the engines the profile does not name
    c = counts(vs)
    assert c["measured"] == len(mine) and c["pass"] == sum(v.verdict == "pass" for v in vs)
