"""Reports: summary.json (schema, verdict logic), junit.xml (counts, parseable), index.html (self-contained).

Runs are built here from the record and verdict models (harness/records.py,
harness/verdict.py): the default suite's cases, a reference, and two engines
whose logprobs differ from it by a little noise; options break one engine,
fail a check or error a case. `make_run` is shared with test_report_render.py.
"""

from __future__ import annotations

import json
import math
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from harness.records import (
    CaseKey,
    ErrorRecord,
    GenerationRecord,
    RecordWriter,
    ScoreRecord,
    SessionRecord,
    records_path,
)
from harness.report import write_reports
from harness.report.data import finite_or_str, load_run
from harness.report.summary import build_summary, group_verdict, load_schema, overall, validate
from harness.suite import load_suite
from harness.verdict import Verdict

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "cases" / "default.yaml"
ENGINES = ("vllm", "sglang_jax")
NOISE = {"reference": 0.0, "vllm": 2e-6, "sglang_jax": 3e-5}
WORDS = ("<|pad|> <|endoftext|> <|unk|> . the robot cat girl said that was a in kitchen sleeping near door "
         "asked why sun warm and grass green very clever ship on island there dog red ball because walked into "
         "garden with he she it".split())


def _tokenizer(model_dir: Path) -> None:
    vocab = {w: i for i, w in enumerate(WORDS)}
    for i in range(len(WORDS), 384):
        vocab[f"w{i}"] = i
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordLevel", "vocab": vocab},
                                                          "added_tokens": []}))
    (model_dir / "config.json").write_text("{}")


def _ids(text: str) -> list[int]:
    index = {w: i for i, w in enumerate(WORDS)}
    return [index.get(w.lower(), 2) for w in text.split()]


def make_run(root: Path, *, backends=("reference",) + ENGINES, failing: bool = True, crashed: str | None = None,
             case_error: bool = False, extras: bool = True, run_id: str = "test-run") -> Path:
    """A complete run directory (run.json, records, logs, checks.json) of the default suite.

    failing: sglang_jax diverges on greedy-basic prompt 1 at position 6 and two checks fail.
    crashed: that backend's score phase exits 1 (an error record and a log, no score records).
    case_error: sglang_jax errors on case update-b in generate (an error record and an error verdict)."""
    suite = load_suite(SUITE)
    run = root / run_id
    model_dir = root / "model"
    _tokenizer(model_dir)
    model = {"name": "tiny-test-A", "content_hash": "a" * 64, "path": str(model_dir)}
    model_b = {"name": "tiny-test-B", "content_hash": "b" * 64, "path": str(model_dir)}
    status = {}
    for b in backends:
        phases = {}
        for ph in ("generate", "score"):
            bad = crashed == b and ph == "score"
            code = 1 if bad or (case_error and b == "sglang_jax" and ph == "generate") else 0
            phases[ph] = {"exit_code": code, "wall_s": 12.5 if b != "reference" else 3.0, "log": f"logs/{b}.{ph}.log",
                          "timed_out": False}
            log = run / "logs" / f"{b}.{ph}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"[{b} {ph}] 8/8 done\n" if not bad else
                           f"[{b} {ph}] 1/8 greedy-basic\nTraceback (most recent call last):\n"
                           f"RuntimeError: XLA device lost \x1b[31m<boom & bust>\x1b[0m\n")
        status[b] = {"phases": phases}
    manifest = {"run_id": run_id, "suite": str(SUITE), "suite_name": suite.suite, "backends": list(backends),
                "model": model, "model_b": model_b, "git_revision": "0123456789abcdef+dirty", "started_at": 1.7e9,
                "finished_at": 1.7e9 + 100, "argv": ["run", "--backends", ",".join(backends)],
                "backend_status": status}
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps(manifest, indent=2))

    devices = {"reference": "cpu (float64)", "vllm": "cpu (float32)", "sglang_jax": "cpu (float32, jax)"}
    versions = {"reference": {"torch": "2.13.0", "transformers": "5.19.0"}, "vllm": {"vllm": "0.32.0"},
                "sglang_jax": {"sglang-jax": "0.0.2", "jax": "0.8.0"}}
    gens: dict[str, list[GenerationRecord]] = {b: [] for b in backends}
    truth: dict[tuple, list[float]] = {}
    for case in suite.cases:
        weights_hash = model["content_hash"] if case.weights == "A" else model_b["content_hash"]
        variants = ["main"] + [f"repeat-{r}" for r in range(1, case.repeats)]
        for pi, prompt in enumerate(case.prompts):
            pids = list(prompt.ids) if prompt.ids is not None else _ids(prompt.text)
            for si in range(case.sampling.n):
                rng = random.Random(f"{case.id}/{pi}/{si}")
                n = case.sampling.max_tokens
                ref_ids = [rng.randrange(4, len(WORDS)) for _ in range(n)]
                finish = "length"
                if case.id == "greedy-eos":
                    ref_ids = ref_ids[:4] + [1]
                    finish = "stop"
                ref_lp = [rng.uniform(-4.0, -0.05) for _ in ref_ids]
                for b in backends:
                    if case_error and b == "sglang_jax" and case.id == "update-b":
                        continue
                    ids, lps = list(ref_ids), list(ref_lp)
                    if failing and b == "sglang_jax" and case.id == "greedy-basic" and pi == 1:
                        ids = ids[:6] + [(t + 7) % len(WORDS) or 5 for t in ids[6:]]
                        lps = lps[:6] + [x - 0.3 for x in lps[6:]]
                    truth[(b, case.id, pi, si)] = lps
                    noisy = [x + random.Random(f"{b}{i}{case.id}{pi}").gauss(0, NOISE[b]) for i, x in enumerate(lps)]
                    if failing and b == "sglang_jax" and case.id == "greedy-basic" and pi == 0:
                        noisy[3] += 4e-3  # a logprob outside tolerance, tokens equal
                    keys = [(v, pi) for v in variants]
                    if case.alone:
                        keys.append((f"alone-{pi}", pi))
                    for variant, p_index in keys:
                        gens[b].append(GenerationRecord(
                            run_id=run_id, backend=b, phase="generate",
                            key=CaseKey(suite=suite.suite, case_id=case.id, case_hash=case.content_hash(),
                                        weights=case.weights, prompt_index=p_index, sample_index=si, variant=variant),
                            model_hash=weights_hash, prompt_ids=pids, completion_ids=ids, completion_logprobs=noisy,
                            logprob_mode="raw" if b != "sglang_jax" or case.sampling.greedy else "processed",
                            prompt_logprobs=[None] + [-1.5 + NOISE[b]] * (len(pids) - 1),
                            finish_reason=finish, stop_reason=None, text=" ".join(WORDS[t] for t in ids),
                            native_params=case.sampling.canonical()))
    for b in backends:
        sess = dict(run_id=run_id, backend=b, versions=versions.get(b, {}), device=devices.get(b, "cpu"),
                    model=model, models={"A": model, "B": model_b}, logprob_mode="raw", started_at=1.7e9)
        with RecordWriter(records_path(run, b, "generate")) as w:
            w.write(SessionRecord(phase="generate", **sess))
            w.write_many(gens[b])
            if case_error and b == "sglang_jax":
                case = suite.case("update-b")
                w.write(ErrorRecord(run_id=run_id, backend=b, phase="generate",
                                    key=CaseKey(suite=suite.suite, case_id="update-b", case_hash=case.content_hash(),
                                                prompt_index=-1), reason="RuntimeError: update_params timed out",
                                    error_type="RuntimeError", detail="Traceback ...\nRuntimeError: timed out"))
        if crashed == b:
            with RecordWriter(records_path(run, b, "score")) as w:
                w.write(ErrorRecord(run_id=run_id, backend=b, phase="score", error_type="BackendProcessFailed",
                                    reason=f"{b} score exited with code 1", detail="RuntimeError: XLA device lost"))
            continue
        with RecordWriter(records_path(run, b, "score")) as w:
            w.write(SessionRecord(phase="score", **sess))
            for src in backends:
                for g in gens[src]:
                    if g.key.variant != "main":
                        continue
                    t = truth[(src, g.key.case_id, g.key.prompt_index, g.key.sample_index)]
                    w.write(ScoreRecord(run_id=run_id, backend=b, phase="score", key=g.key, model_hash=g.model_hash,
                                        source_backend=src, prompt_ids=g.prompt_ids, completion_ids=g.completion_ids,
                                        logprobs=t, logprob_mode="raw",
                                        by_mode={"raw": t, "temperature": t, "processed": t} if b == "reference" else {}))
    verdicts = make_verdicts(suite, backends, failing=failing, crashed=crashed, case_error=case_error)
    (run / "checks.json").write_text(json.dumps({"schema_version": 1,
                                                 "verdicts": [v.model_dump(mode="json") for v in verdicts]}))
    if extras:
        write_extras(run)
    return run


def make_verdicts(suite, backends, *, failing: bool, crashed: str | None, case_error: bool) -> list[Verdict]:
    out = []
    engines = [b for b in backends if b != "reference"]
    for case in suite.cases:
        for check in case.checks:
            for e in engines:
                pair = [e] if check in ("seed_determinism", "eos_policy", "self_consistency") else [e, "reference"]
                v = Verdict(check=check, backends=pair, case=case.id, metric="max_abs_dlogp", value=1.2e-5,
                            threshold=1e-4, verdict="pass")
                if crashed == e and check in ("replay", "self_consistency", "completion_logprobs"):
                    v = v.model_copy(update={"verdict": "error", "value": None,
                                             "detail": f"no score records from {e}: its score phase failed"})
                elif case_error and e == "sglang_jax" and case.id == "update-b":
                    v = v.model_copy(update={"verdict": "error", "value": None,
                                             "detail": "no generation records: the case errored"})
                elif failing and e == "sglang_jax" and case.id == "greedy-basic" and check == "greedy_tokens":
                    v = v.model_copy(update={"metric": "first_divergence", "value": 6.0, "threshold": None,
                                             "verdict": "fail", "detail": "prompt 1: position 6: reference token 9 "
                                             "not in sglang_jax's top-5 <and vice versa>"})
                elif failing and e == "sglang_jax" and case.id == "greedy-basic" and check == "completion_logprobs":
                    v = v.model_copy(update={"value": 4.0e-3, "verdict": "fail",
                                             "detail": "prompt 0 position 3: |dlogp| 4.0e-3 > 1e-4"})
                elif check == "mismatch":
                    v = v.model_copy(update={"metric": "k3", "value": 3.1e-9, "threshold": 1e-6})
                out.append(v)
        if case.weights == "B" and "weight_update" in case.checks and "vllm" in engines:
            out.append(Verdict(check="weight_update", backends=["vllm", "reference"], case=case.id, metric="stale",
                               value=float("inf"), threshold=None, verdict="skipped", detail="no model B"))
    if {"vllm", "sglang_jax"} <= set(engines):
        out.append(Verdict(check="greedy_tokens", backends=["vllm", "sglang_jax"], case="greedy-basic",
                           metric="first_divergence", value=None, threshold=None,
                           verdict="fail" if failing else "pass", detail="prompt 1 diverges at 6" if failing else ""))
    return out


def write_extras(run: Path) -> None:
    (run / "sampling_table.json").write_text(json.dumps([
        {"canonical": "top_k", "vllm_field": "top_k", "vllm_default": 0, "sglang_field": "top_k",
         "sglang_default": -1, "tunix_field": "top_k", "conversion": "None -> 0 / -1 / None", "status": "ok",
         "reason": "off spelled differently"},
        {"canonical": "seed", "vllm_field": "seed", "vllm_default": None, "sglang_field": "sampling_seed",
         "sglang_default": None, "tunix_field": "seed", "conversion": "renamed", "status": "mismatch",
         "reason": "sglang-jax needs deterministic sampling mode"}]))
    (run / "rl").mkdir(exist_ok=True)
    (run / "rl" / "grpo-tiny.json").write_text(json.dumps({
        "name": "grpo-tiny", "metric": "mean reward", "x_label": "step",
        "series": {"vllm": [[i, 0.1 + 0.05 * i] for i in range(10)],
                   "sglang_jax": [[i, 0.1 + 0.048 * i] for i in range(10)]},
        "verdict": "pass", "detail": "final rewards within 1%"}))
    (run / "selftest.json").write_text(json.dumps({"faults": [
        {"name": "drop-eos", "description": "EOS stripped from completions", "expected": ["eos_policy"],
         "detected": ["eos_policy", "completion_logprobs"]},
        {"name": "off-by-one", "description": "logprobs shifted by one position",
         "expected": ["completion_logprobs", "replay"], "detected": ["completion_logprobs"]}]}))
    (run / "bench.json").write_text(json.dumps({"device": "cpu", "figures": [
        {"title": "generate throughput", "unit": "tok/s", "lower_is_better": False,
         "values": {"vllm": 812.0, "sglang_jax": 640.5}}]}))


# ----------------------------------------------------------------------------- summary
@pytest.fixture
def passing_run(tmp_path):
    return make_run(tmp_path, failing=False)


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_summary_validates_and_passes(passing_run):
    s = write_reports(passing_run)
    on_disk = json.loads((passing_run / "summary.json").read_text())
    validate(on_disk)
    assert s["verdict"] == on_disk["verdict"] == "pass", s["verdict_reason"]
    assert s["schema_version"] == 3
    assert s["counts"]["fail"] == s["counts"]["error"] == 0
    assert s["counts"]["total"] == len(s["checks"]) == s["counts"]["pass"] + s["counts"]["skipped"]
    assert set(s["backends"]) == {"reference", "vllm", "sglang_jax"}
    assert all(b["ran"] and b["status"] == "ok" for b in s["backends"].values())
    assert s["backends"]["vllm"]["versions"] == {"vllm": "0.32.0"}
    assert s["backends"]["vllm"]["phases"]["score"]["exit_code"] == 0
    assert s["backends"]["sglang_jax"]["unit_under_test"]
    pv = s["provenance"]
    assert pv["model"]["content_hash"] == "a" * 64 and pv["model_b"]["name"] == "tiny-test-B"
    assert pv["git_revision"] == "0123456789abcdef+dirty"
    assert pv["suite"]["name"] == "default"
    # records without a session dtype (older runs): the dtype each backend's device string names
    assert pv["dtypes"] == {"reference": "float64", "vllm": "float32", "sglang_jax": "float32"}
    assert pv["dtype"] == {"run": "float32", "requested": None, "checkpoint": None}
    suite = load_suite(SUITE)
    assert {c.id: c.content_hash() for c in suite.cases} == {k: v["hash"] for k, v in pv["cases"].items()}
    assert all(v["recorded_hashes"] == [v["hash"]] for v in pv["cases"].values())
    labels = {p["label"] for p in s["pairs"]}
    assert {"vllm vs reference", "sglang_jax vs reference", "vllm vs sglang_jax", "vllm (alone)"} <= labels


def test_failed_check_makes_the_run_fail(tmp_path):
    s = write_reports(make_run(tmp_path, failing=True))
    validate(s)
    assert s["verdict"] == "fail"
    assert s["counts"]["fail"] == 3
    pair = {p["label"]: p for p in s["pairs"]}
    assert pair["sglang_jax vs reference"]["verdict"] == "fail"
    assert pair["sglang_jax vs reference"]["failing"] == ["completion_logprobs", "greedy_tokens"]
    assert pair["vllm vs reference"]["verdict"] == "pass"
    assert s["pairs"][0]["verdict"] == "fail"  # worst first


def test_crashed_backend_makes_the_run_an_error(tmp_path):
    s = write_reports(make_run(tmp_path, failing=True, crashed="vllm"))
    validate(s)
    assert s["verdict"] == "error"
    vb = s["backends"]["vllm"]
    assert vb["status"] == "failed" and not vb["ran"]
    assert vb["phases"]["score"]["exit_code"] == 1
    assert "score exited 1" in vb["reason"]
    assert "vllm" in s["verdict_reason"] and "failed" in s["verdict_reason"]
    assert s["backends"]["sglang_jax"]["status"] == "ok"


def test_backend_requested_but_never_run_is_an_error(tmp_path):
    run = make_run(tmp_path, backends=("reference", "vllm"), failing=False)
    m = json.loads((run / "run.json").read_text())
    m["backends"].append("sglang_jax")
    (run / "run.json").write_text(json.dumps(m))
    s = write_reports(run)
    validate(s)
    assert s["backends"]["sglang_jax"]["status"] == "not_run"
    assert s["verdict"] == "error"


def test_case_error_is_an_error(tmp_path):
    s = write_reports(make_run(tmp_path, failing=False, case_error=True))
    validate(s)
    assert s["verdict"] == "error"
    assert s["counts"]["error"] > 0
    assert any(e["case"] == "update-b" for e in s["backends"]["sglang_jax"]["errors"])


def test_missing_checks_json_is_an_error_not_a_crash(tmp_path):
    run = make_run(tmp_path, failing=False)
    (run / "checks.json").unlink()
    s = write_reports(run)
    validate(s)
    assert s["verdict"] == "error" and "parity compare" in s["verdict_reason"]
    assert (run / "index.html").exists() and (run / "junit.xml").exists()


def test_torn_record_file_is_reported(tmp_path):
    run = make_run(tmp_path, failing=False)
    p = records_path(run, "vllm", "generate")
    lines = p.read_text().splitlines()
    lines.insert(3, "{not json")
    p.write_text("\n".join(lines) + "\n")
    s = write_reports(run)
    assert s["verdict"] == "error"
    assert any("vllm.generate.jsonl:4" in pr for pr in s["problems"])


def test_bare_record_dir_without_manifest(tmp_path):
    run = make_run(tmp_path, backends=("reference",), failing=False)
    (run / "run.json").unlink()
    s = write_reports(run)
    validate(s)
    assert list(s["backends"]) == ["reference"]
    assert s["backends"]["reference"]["status"] == "ok"
    assert s["run_id"] == "test-run"


@pytest.mark.parametrize("outcomes, backend_ok, problems, expected", [
    (["pass", "pass", "skipped"], True, [], "pass"),
    (["pass", "fail", "skipped"], True, [], "fail"),
    (["pass", "fail", "error"], True, [], "error"),
    (["pass", "pass"], False, [], "error"),
    (["pass", "fail"], False, [], "error"),
    (["skipped", "skipped"], True, [], "error"),
    ([], True, [], "error"),
    (["pass"], True, ["no checks.json"], "error"),
])
def test_overall_verdict_logic(outcomes, backend_ok, problems, expected):
    vs = [Verdict(check="c", backends=["a"], case="x", metric="m", value=0.0, threshold=1.0, verdict=o)
          for o in outcomes]
    st = {"a": {"status": "ok" if backend_ok else "failed", "reason": "" if backend_ok else "generate exited 2"}}
    verdict, reason = overall(vs, st, problems)
    assert verdict == expected, reason
    assert reason


def test_group_verdict_order():
    assert group_verdict(["pass", "skipped"]) == "pass"
    assert group_verdict(["pass", "fail", "error"]) == "error"
    assert group_verdict(["skipped"]) == group_verdict([]) == "skipped"


def test_non_finite_values_are_strict_json(tmp_path):
    run = make_run(tmp_path, failing=False)
    s = write_reports(run)
    text = (run / "summary.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert any(c["value"] == "Infinity" for c in s["checks"])
    assert finite_or_str(float("nan")) == "NaN" and finite_or_str(-math.inf) == "-Infinity"


def test_dtype_in_summary_banner_and_warnings(tmp_path):
    """The dtype each engine reported (session records) reaches summary.json and the banner; a checkpoint
    stored in another dtype than the run's is a warning, the verdict unchanged."""
    run = make_run(tmp_path, failing=False)
    manifest = json.loads((run / "run.json").read_text())
    manifest.update(dtype="bfloat16", dtype_requested="auto", checkpoint_dtype="float32")
    (run / "run.json").write_text(json.dumps(manifest))
    for f in (run / "records").glob("*.jsonl"):
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        for r in rows:
            if r["kind"] == "session":
                r["dtype"] = "float64" if r["backend"] == "reference" else "bfloat16"
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = write_reports(run)
    validate(s)
    assert s["verdict"] == "pass"
    assert s["backends"]["vllm"]["dtype"] == s["backends"]["sglang_jax"]["dtype"] == "bfloat16"
    assert s["backends"]["reference"]["dtype"] == "float64"
    assert s["provenance"]["dtype"] == {"run": "bfloat16", "requested": "auto", "checkpoint": "float32"}
    assert any("stored in float32" in w and "computed in bfloat16" in w for w in s["warnings"])
    html = (run / "index.html").read_text()
    banner = html[html.index('id="run-dtype"'):]
    assert banner.index("<b>bfloat16</b>") < banner.index("(reference float64)") < banner.index("</span>")


def test_backend_options_in_summary_and_report(tmp_path):
    """The typed options a backend ran with reach summary.json and the backend table: from its session record
    (config.options), else from what run.json resolved."""
    run = make_run(tmp_path, failing=False)
    manifest = json.loads((run / "run.json").read_text())
    manifest["backend_options"] = {"sglang_jax": {"engine": {}, "compat_off": ["top_p_renormalised"]}}
    (run / "run.json").write_text(json.dumps(manifest))
    for f in (run / "records").glob("vllm.*.jsonl"):
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        for r in rows:
            if r["kind"] == "session":
                r["config"] = {**(r.get("config") or {}), "options": {"logprobs_mode": "raw", "block_size": 32}}
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = write_reports(run)
    validate(s)
    assert s["backends"]["vllm"]["options"] == {"logprobs_mode": "raw", "block_size": 32}
    assert s["backends"]["sglang_jax"]["options"]["compat_off"] == ["top_p_renormalised"]
    assert s["backends"]["reference"]["options"] == {}
    row = (run / "index.html").read_text().split('id="backend-vllm"')[1].split("</tr>")[0]
    assert "logprobs_mode=raw" in row and "block_size=32" in row


def test_schema_rejects_a_wrong_summary(passing_run):
    s = build_summary(load_run(passing_run))
    validate(s)
    for bad in ({**s, "verdict": "skipped"}, {**s, "schema_version": 1}, {k: v for k, v in s.items() if k != "counts"},
                {**s, "checks": [{**s["checks"][0], "verdict": "ok"}]}):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)


# ----------------------------------------------------------------------------- junit
def test_junit_counts_match_verdicts(tmp_path):
    run = make_run(tmp_path, failing=True, crashed="vllm")
    s = write_reports(run)
    root = ET.parse(run / "junit.xml").getroot()
    assert root.tag == "testsuites"
    main, harness = root.findall("testsuite")
    cases = main.findall("testcase")
    assert len(cases) == s["counts"]["total"] == int(main.get("tests"))
    assert int(main.get("failures")) == s["counts"]["fail"] == len(main.findall("testcase/failure"))
    assert int(main.get("errors")) == s["counts"]["error"] == len(main.findall("testcase/error"))
    assert int(main.get("skipped")) == s["counts"]["skipped"] == len(main.findall("testcase/skipped"))
    assert int(root.get("tests")) == int(main.get("tests")) + int(harness.get("tests"))
    names = [(c.get("classname"), c.get("name")) for c in cases]
    assert len(names) == len(set(names)), "testcase ids must be unique"
    c0 = next(c for c in cases if c.find("failure") is not None)
    props = {p.get("name"): p.get("value") for p in c0.findall("properties/property")}
    assert {"metric", "value", "threshold", "backends", "case"} <= set(props)
    assert c0.get("classname") in {"greedy_tokens", "completion_logprobs"}
    assert re.fullmatch(r"[a-z0-9-]+\[[a-z_]+(-vs-[a-z_]+)*\]", c0.get("name"))
    backend_cases = {c.get("name"): c for c in harness.findall("testcase") if c.get("classname") == "backend"}
    assert backend_cases["vllm"].find("error") is not None
    assert backend_cases["reference"].find("error") is None


def test_junit_all_pass(passing_run):
    write_reports(passing_run)
    root = ET.parse(passing_run / "junit.xml").getroot()
    assert root.get("failures") == "0" and root.get("errors") == "0"


# ----------------------------------------------------------------------------- html
RESOURCE_REF = re.compile(r"""(?:\b(?:src|href|action|poster|data|xlink:href|srcset)\s*=\s*["']?\s*(?:https?:)?//)"""
                          r"""|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)


def test_html_is_self_contained(tmp_path):
    run = make_run(tmp_path, failing=True, crashed="vllm")
    write_reports(run)
    html = (run / "index.html").read_text()
    assert not RESOURCE_REF.search(html), RESOURCE_REF.search(html)
    assert "http://" not in html and "https://" not in html
    assert "<script src" not in html and "<link" not in html
    assert "default-src 'none'" in html


def test_html_content(tmp_path):
    run = make_run(tmp_path, failing=True)
    s = write_reports(run)
    html = (run / "index.html").read_text()
    assert 'data-verdict="fail"' in html
    # failing checks come before provenance and before the cases
    assert html.index('id="failing-table"') < html.index('id="provenance"') < html.index('id="case-greedy-basic"')
    assert html.count('class="tok div-first"') >= 1  # sglang_jax's divergence on greedy-basic prompt 1
    assert html.count("<svg") >= len(s["backends"]) + 1
    for section in ("sampling-table", "rl", "selftest", "bench", "pair-matrix", "dlogp-stats"):
        assert f'id="{section}"' in html
    assert "MISSED" in html  # the self-test row whose expected check did not fire
    assert "&lt;and vice versa&gt;" in html  # verdict detail is escaped
    assert "the robot" in html.lower()  # prompt text from the suite, tokens from the vocabulary


def test_html_optional_sections_absent_without_data(tmp_path):
    run = make_run(tmp_path, failing=False, extras=False)
    write_reports(run)
    html = (run / "index.html").read_text()
    for section in ("sampling-table", "rl", "selftest", "bench"):
        assert f'id="{section}"' not in html


def test_html_marks_errors(tmp_path):
    run = make_run(tmp_path, failing=False, crashed="vllm", case_error=True)
    write_reports(run)
    html = (run / "index.html").read_text()
    assert 'data-verdict="error"' in html
    assert 'id="backend-errors"' in html
    assert "XLA device lost" in html and "\x1b" not in ET.tostring(ET.parse(run / "junit.xml").getroot(),
                                                                    encoding="unicode")
    assert "&lt;boom &amp; bust&gt;" in html
    assert 'class="log-cause"' in html and "RuntimeError: XLA device lost" in html
    assert 'class="box error case-error"' in html


def test_many_prompts_are_capped_interesting_first(tmp_path, monkeypatch):
    import harness.report.html as html_mod

    monkeypatch.setattr(html_mod, "MAX_PROMPTS_PER_CASE", 2)
    run = make_run(tmp_path, failing=True, extras=False)
    write_reports(run)
    html = (run / "index.html").read_text()
    case = html[html.index('id="case-greedy-basic"'):html.index('id="case-greedy-eos"')]
    assert "1 more prompt/sample panel(s) not shown" in case
    assert "div-first" in case  # the diverging prompt 1 is among those shown


def test_config_with_non_finite_values_is_strict_json(tmp_path):
    run = make_run(tmp_path, backends=("reference",), failing=False, extras=False)
    for phase in ("generate", "score"):
        p = records_path(run, "reference", phase)
        lines = p.read_text().splitlines()
        first = json.loads(lines[0])
        first["config"] = {"max_model_len": float("inf"), "dtype": "float64"}
        lines[0] = json.dumps(first)
        p.write_text("\n".join(lines) + "\n")
    s = write_reports(run)
    assert s["backends"]["reference"]["config"]["max_model_len"] == "Infinity"


# ----------------------------------------------------------------------------- properties
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from harness.report.junit import build_junit  # noqa: E402

_verdicts = st.lists(st.builds(
    Verdict, check=st.sampled_from(["greedy_tokens", "mismatch", "replay"]),
    backends=st.lists(st.sampled_from(["reference", "vllm", "sglang_jax"]), min_size=0, max_size=2, unique=True),
    case=st.sampled_from(["a", "b", "run:generate"]), metric=st.sampled_from(["k3", "max_abs_dlogp"]),
    value=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    threshold=st.one_of(st.none(), st.floats(min_value=0, max_value=1)),
    verdict=st.sampled_from(["pass", "fail", "error", "skipped"]),
    detail=st.text(max_size=30)), max_size=25)


@given(vs=_verdicts, backend_ok=st.booleans())
def test_verdict_and_junit_properties(vs, backend_ok):
    backends = {"vllm": {"status": "ok" if backend_ok else "failed", "reason": "", "wall_s": 1.0, "errors": []}}
    verdict, _ = overall(vs, backends, [])
    outcomes = {v.verdict for v in vs}
    if not backend_ok or "error" in outcomes or not outcomes - {"skipped"}:
        assert verdict == "error"
    elif "fail" in outcomes:
        assert verdict == "fail"
    else:
        assert verdict == "pass"
    summary = {"run_id": "r", "generated_at": "2025-01-01T00:00:00Z", "backends": backends, "problems": []}
    root = build_junit(vs, summary)
    ET.fromstring(ET.tostring(root))  # well-formed whatever the detail text holds
    main = root.find("testsuite")
    cases = main.findall("testcase")
    assert len(cases) == len(vs)
    assert len({(c.get("classname"), c.get("name")) for c in cases}) == len(vs)
    assert int(main.get("failures")) == sum(v.verdict == "fail" for v in vs)
    assert int(main.get("errors")) == sum(v.verdict == "error" for v in vs)
    assert int(main.get("skipped")) == sum(v.verdict == "skipped" for v in vs)


def test_errors_caused_by_a_crashed_backend_are_folded(tmp_path):
    run = make_run(tmp_path, failing=True, crashed="vllm", extras=False)
    s = write_reports(run)
    html = (run / "index.html").read_text()
    failing = html[html.index('id="failing-table"'):html.index('id="backends"')]
    n_vllm_errors = sum(1 for c in s["checks"] if c["verdict"] == "error" and "vllm" in c["backends"])
    assert n_vllm_errors > 1
    assert f"{n_vllm_errors} check(s) involving vllm errored because vllm did not run cleanly" in failing
    # the parity failures are listed on their own, before the folded errors
    assert failing.index("greedy_tokens") < failing.index("consequential")


def test_case_sections_fold_errors_of_a_crashed_backend(tmp_path):
    run = make_run(tmp_path, failing=False, crashed="vllm", extras=False)
    write_reports(run)
    html = (run / "index.html").read_text()
    case = html[html.index('id="case-greedy-basic"'):html.index('id="case-greedy-eos"')]
    assert 'class="small folded"' in case and "check(s) involving vllm" in case


# ----------------------------------------------------------------------------- large runs
from harness.report.junit import junit_text, write_junit, write_junit_etree  # noqa: E402


@given(vs=_verdicts, backend_ok=st.booleans(), problems=st.lists(st.text(max_size=20), max_size=2))
def test_junit_text_is_what_elementtree_writes(vs, backend_ok, problems, tmp_path_factory):
    backends = {"vllm": {"status": "ok" if backend_ok else "failed", "reason": "r <&> \"q\"\n", "wall_s": 1.5,
                         "errors": [] if backend_ok else [{"phase": "score", "case": None, "error_type": "E",
                                                           "reason": "x\x1b[0m"}]},
                "sglang_jax": {"status": "ok", "reason": "", "wall_s": None, "errors": []}}
    summary = {"run_id": "r&<", "generated_at": "2025-01-01T00:00:00Z", "backends": backends, "problems": problems}
    d = tmp_path_factory.mktemp("junit")
    write_junit(d / "fast.xml", vs, summary)
    write_junit_etree(d / "etree.xml", vs, summary)
    assert (d / "fast.xml").read_bytes() == (d / "etree.xml").read_bytes()


@pytest.mark.parametrize("kw", [{"failing": True}, {"failing": True, "crashed": "vllm", "case_error": True}])
def test_junit_of_a_run_is_what_elementtree_writes(tmp_path, kw):
    run = make_run(tmp_path, **kw)
    s = write_reports(run)
    write_junit_etree(tmp_path / "etree.xml", load_run(run).verdicts, s)
    assert (run / "junit.xml").read_bytes() == (tmp_path / "etree.xml").read_bytes()
    assert junit_text([], {**s, "backends": {}, "problems": []}).endswith("/>\n</testsuites>")


def test_validation_of_many_rows_still_rejects_one_bad_row(passing_run):
    s = build_summary(load_run(passing_run))
    rows = s["checks"] * (200 // len(s["checks"]) + 1)
    validate({**s, "checks": rows})
    for bad in ({**rows[-1], "verdict": "ok"}, {**rows[-1], "value": True}, {**rows[-1], "value": "Inf"},
                {**rows[-1], "backends": ["vllm", 3]}, {**rows[-1], "extra": 1}, {**rows[-1], "detail": None}):
        with pytest.raises(jsonschema.ValidationError) as e:
            validate({**s, "checks": rows[:-1] + [bad]})
        assert list(e.value.absolute_path)[:2] == ["checks", len(rows) - 1]  # where it really is


def test_check_row_schema_is_what_the_shape_shortcut_assumes():
    """summary.validate checks one row per _check_shape; it assumes $defs.check constrains these strings by
    type only and numbers by type only. A change to $defs.check must revisit _check_shape."""
    from harness.report.summary import FREE_CHECK_STRINGS

    d = load_schema()["$defs"]
    props = d["check"]["properties"]
    assert {k for k, v in props.items() if v == {"type": "string"}} == set(FREE_CHECK_STRINGS)
    assert props["backends"] == {"type": "array", "items": {"type": "string"}}
    assert props["value"] == props["threshold"] == {"$ref": "#/$defs/number"}
    assert d["number"]["oneOf"] == [{"type": "number"}, {"enum": ["Infinity", "-Infinity", "NaN"]},
                                    {"type": "null"}]
    assert props["verdict"] == {"$ref": "#/$defs/outcome"} and set(props) == set(d["check"]["required"])


def test_report_takes_what_compare_handed_it_else_reads_the_files(tmp_path):
    from harness.rundir import Compared, RunRecords, checks_json, write_checks

    run = make_run(tmp_path, failing=True)
    vs = load_run(run).verdicts
    assert json.loads(checks_json(vs)) == json.loads(json.dumps(
        {"schema_version": 1, "verdicts": [v.model_dump(mode="json") for v in vs]}))
    write_checks(run, vs)
    records = RunRecords.load(run)
    handed = load_run(run, Compared(run, vs, records))
    assert handed.verdicts[0] is vs[0]  # the objects compare made, not parsed again
    assert handed.generations[0] is records.generations[0]  # nor the records
    doc = json.loads((run / "checks.json").read_text())
    doc["verdicts"][0]["detail"] = "edited by hand"
    (run / "checks.json").write_text(json.dumps(doc))
    again = load_run(run).verdicts
    assert again[0] is not vs[0] and again[0].detail == "edited by hand" and again[1:] == vs[1:]


def test_many_cases_are_shown_compact_failing_first(tmp_path, monkeypatch):
    import harness.report.html as html_mod

    monkeypatch.setattr(html_mod, "MAX_CASES_IN_FULL", 2)
    monkeypatch.setattr(html_mod, "MAX_TABLE_ROWS", 5)
    run = make_run(tmp_path, failing=True, extras=False)
    s = write_reports(run)
    html = (run / "index.html").read_text()
    sections = re.findall(r'<section class="case ([a-z ]+)" id="case-([^"]+)"', html)
    assert len(sections) == len(load_suite(SUITE).cases)  # every case keeps its section (links land)
    full = [cid for cls, cid in sections if "compact" not in cls]
    assert len(full) == 2 and "greedy-basic" in full  # the failing case first
    last = sections[-1][1]
    assert last not in full
    compact = html[html.index(f'id="case-{last}"'):]
    compact = compact[:compact.index("</section>")]
    assert "case-compact" in compact and 'class="stream"' not in compact and "check(s) passed" in compact
    assert f"{s['counts']['total'] - 5} more verdict(s) not listed here" in html
    assert f"All checks ({s['counts']['total']})" in html


def test_logprob_statistics_cover_panels_not_shown(tmp_path, monkeypatch):
    import harness.report.html as html_mod

    run = make_run(tmp_path, failing=False, extras=False)
    data = load_run(run)
    mains = [g for g in data.generations if g.key.variant == "main" and g.backend == "vllm"]
    monkeypatch.setattr(html_mod, "MAX_PROMPTS_PER_CASE", 1)
    monkeypatch.setattr(html_mod, "MAX_CASES_IN_FULL", 1)
    write_reports(run)
    html = (run / "index.html").read_text()
    row = html[html.index('id="dlogp-stats"'):]
    row = row[row.index("vllm</td>"):]
    assert f'<td class="num">{sum(len(g.completion_ids) for g in mains)}</td>' in row[:200]


def test_junit_written_by_a_forked_process_is_the_same(tmp_path, monkeypatch):
    """A large run's summary.json and junit.xml are written by a forked process while the page renders: the
    same bytes."""
    import harness.report as report_mod

    def written():
        return (re.sub(r'timestamp="[^"]*"', "", (run / "junit.xml").read_text()),
                re.sub(r'"generated_at": "[^"]*"', "", (run / "summary.json").read_text()))

    run = make_run(tmp_path, failing=True)
    write_reports(run)
    here = written()
    (run / "junit.xml").unlink()
    (run / "summary.json").unlink()
    monkeypatch.setattr(report_mod, "FORK_FILES_VERDICTS", 0)
    write_reports(run)
    assert written() == here


def test_summary_written_by_a_forked_process_when_the_page_fails(tmp_path, monkeypatch):
    import harness.report as report_mod
    import harness.report.html as html_mod

    run = make_run(tmp_path, failing=True)
    monkeypatch.setattr(report_mod, "FORK_FILES_VERDICTS", 0)

    def broken(*a, **k):
        raise RuntimeError("template bug")

    monkeypatch.setattr(html_mod, "render_html", broken)
    with pytest.raises(RuntimeError, match="template bug"):
        write_reports(run)
    assert json.loads((run / "summary.json").read_text())["verdict"] == "fail"


def test_summary_json_is_json_dumps_indent_2():
    """summary.json's own writer spells every value as json.dumps(indent=2, allow_nan=False) does: scalars,
    subclasses of them, keys of every kind, empty and nested containers, non-ASCII text; and refuses what it
    refuses."""
    import enum

    from harness.report.summary import summary_json

    class Text(str):
        pass

    class Number(enum.IntEnum):
        THREE = 3

    leaves = [None, True, False, 0, -1, 10 ** 30, 1.5, 1e-7, 1e16, -0.0, 0.1 + 0.2, "a\"b\\c\n\u00e9\u4e2d\U0001f600", "",
              Text("t"), Number.THREE]
    keys = ["k", "", "\u00e9", 1, 2.5, True, False, None, Text("tk"), Number.THREE]
    rng = random.Random(0)

    def tree(depth=0):
        r = rng.random()
        if depth > 4 or r < 0.5:
            return rng.choice(leaves)
        if r < 0.75:
            items = [tree(depth + 1) for _ in range(rng.randint(0, 4))]
            return items if rng.random() < 0.8 else tuple(items)
        return {rng.choice(keys): tree(depth + 1) for _ in range(rng.randint(0, 4))}

    for _ in range(3000):
        x = tree()
        assert summary_json(x) == json.dumps(x, indent=2, allow_nan=False) + "\n"
    for bad, error in ((math.nan, ValueError), ([math.inf], ValueError), ({"a": -math.inf}, ValueError),
                       ({math.nan: 1}, ValueError), ([object()], TypeError), ({(1,): 2}, TypeError)):
        with pytest.raises(error):
            json.dumps(bad, indent=2, allow_nan=False)
        with pytest.raises(error):
            summary_json(bad)


def test_a_failed_forked_junit_writer_fails_the_report(tmp_path, monkeypatch):
    import harness.report as report_mod
    import harness.report.junit as junit_mod

    run = make_run(tmp_path, failing=True)
    monkeypatch.setattr(report_mod, "FORK_FILES_VERDICTS", 0)

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(junit_mod, "write_junit", broken)
    with pytest.raises(RuntimeError, match="forked process failed"):
        write_reports(run)
    assert (run / "summary.json").exists()  # written first: CI still has the verdict


def test_dlogp_is_the_per_position_statement() -> None:
    """html._dlogp (one comprehension) against the position-by-position statement it replaced: None past the
    shorter list or where the backend has no logprob, 0.0 where equal (-inf == -inf), else the difference."""
    from types import SimpleNamespace as NS

    from harness.report.html import _dlogp

    def plain(gen, ref):
        n = len(gen.completion_ids)
        if gen.completion_logprobs is None or ref is None:
            return [None] * n
        out = []
        for i in range(n):
            if i >= len(ref) or i >= len(gen.completion_logprobs) or gen.completion_logprobs[i] is None:
                out.append(None)
            else:
                a, b = gen.completion_logprobs[i], ref[i]
                out.append(0.0 if a == b else a - b)
        return out

    inf, nan = float("inf"), float("nan")
    lps = [None, [], [-0.5], [-0.5, -inf, -1.25, nan], [-0.5, None, -2.0], [-1.0] * 6]
    refs = [None, [], [-0.25], [-0.5, -inf, -1.0, -3.0], [-0.5, -1.0, -inf, -0.1, -0.2, -0.3, -0.4]]
    for lp in lps:
        for ref in refs:
            for n in (0, 1, 3, 5):
                gen = NS(completion_ids=list(range(n)), completion_logprobs=lp, logprob_mode="raw")
                score = None if ref is None else NS(by_mode={"raw": ref}, logprob_mode="raw", logprobs=ref)
                want, got = plain(gen, ref), _dlogp(gen, score)
                assert len(want) == len(got) and all(
                    w is g or w == g or (w != w and g != g) for w, g in zip(want, got)), (lp, ref, n, want, got)


def test_a_run_whose_engines_computed_in_float64_has_a_valid_summary(passing_run):
    """run.json names no dtype and every engine's session says float64 (a user's exact rollout, or the
    test fixtures' reference clones): the run's dtype is float64, which the schema must accept."""
    s = json.loads(json.dumps(write_reports(passing_run)))
    s["provenance"]["dtype"]["run"] = "float64"
    validate(s)
