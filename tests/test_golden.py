"""Golden baselines (harness/golden.py): the committed golden run, compare against it, and the reviewed update.

Everything runs on the committed golden run (golden/<class>/: real engines' records) in the
driver venv; copies are perturbed the way a regression would change them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from harness import golden as G
from harness.checks import inject
from harness.cli import main
from harness.rundir import read_run


def _golden() -> Path:
    dirs = G.golden_dirs()
    assert dirs, f"no committed golden baseline under {G.GOLDEN_ROOT} (parity golden update --run DIR --yes)"
    return dirs[0]


@pytest.fixture(scope="module")
def golden_dir() -> Path:
    return _golden()


@pytest.fixture(scope="module")
def gm(golden_dir) -> dict:
    return G.read_golden_manifest(golden_dir)


@pytest.fixture
def run_copy(golden_dir, tmp_path):
    """A run directory made of the golden's records (as if this machine recorded them again)."""
    def make(name: str = "run") -> Path:
        d = tmp_path / name
        d.mkdir()
        shutil.copytree(golden_dir / "records", d / "records")
        m = json.loads((golden_dir / "run.json").read_text())
        m["suite"] = str((golden_dir / "suite.yaml").resolve())
        (d / "run.json").write_text(json.dumps(m))
        return d
    return make


def _edit(run_dir: Path, backend: str, phase: str, fn) -> None:
    files = inject.load(run_dir)
    for r in files[f"{backend}.{phase}.jsonl"]:
        if r["kind"] in ("generation", "score"):
            fn(r)
    inject.save(run_dir, files)


def _tree_hash(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(d)).encode() + p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------- the committed golden


def test_committed_golden_is_valid_small_and_described(golden_dir, gm):
    recs = read_run(golden_dir)  # every line a valid record
    backends = {r.backend for r in recs}
    assert {"reference", "vllm", "sglang_jax"} <= backends, backends
    assert all(not getattr(r, "timings", {}) for r in recs), "timings are noise and are dropped from the golden"
    assert golden_dir.name == gm["hardware_class"]
    for field in ("hardware_class", "machine", "devices", "versions", "model_hashes", "suite", "case_hashes",
                  "source_run", "created_at", "files"):
        assert gm.get(field), field
    # the manifest's case hashes are the records' and the suite file's
    from harness.suite import load_suite

    suite = load_suite(str(golden_dir / "suite.yaml"))
    assert gm["case_hashes"] == {c.id: c.content_hash() for c in suite.cases}
    for name, meta in gm["files"].items():
        p = golden_dir / name
        assert p.stat().st_size == meta["bytes"] and G._sha256(p) == meta["sha256"], name
    total = sum(p.stat().st_size for p in golden_dir.rglob("*") if p.is_file())
    assert total < 1_500_000, f"golden is {total} bytes: keep it small enough to commit"
    assert gm["derived"] == "derived.json" and (golden_dir / "derived.json").exists()


def test_committed_golden_is_clean(golden_dir, run_copy):
    from harness.compare import compare_run

    bad = [f"{v.test_id}: {v.verdict}: {v.detail}" for v in compare_run(run_copy()) if v.verdict in ("fail", "error")]
    assert not bad, "\n".join(bad)


def test_hardware_class_from_sessions():
    def rows(*devices, dtype=None):
        return {"x.generate.jsonl": [{"kind": "session", "backend": f"e{i}", "device": d,
                                      "config": {"dtype": dtype} if dtype else {}} for i, d in enumerate(devices)]
                + [{"kind": "session", "backend": "reference", "device": "cpu (float64)", "config": {}}]}
    assert G.hardware_class(rows("cpu (cpu), float32", "cpu: AMD EPYC, 2 cores (float32)"), machine="x86_64") \
        == "cpu-x86_64-float32"
    assert G.hardware_class(rows("cuda:0 NVIDIA H100 80GB HBM3", dtype="bfloat16"), machine="x86_64") \
        == "gpu-x86_64-bfloat16"
    assert G.hardware_class(rows("TPU v5 lite (bf16)"), machine="x86_64") == "tpu-x86_64-bfloat16"
    assert G.hardware_class(rows("cpu: AMD EPYC 7L43, 2 cores (float32)"), machine="x86_64") == "cpu-x86_64-float32"
    assert G.hardware_class(rows("cpu (float32)", "NVIDIA L4 (float16)"), machine="aarch64") \
        == "cpu+gpu-aarch64-float16+float32"
    only_ref = {"r.jsonl": [{"kind": "session", "backend": "reference", "device": "cpu (float64)", "config": {}}]}
    assert G.hardware_class(only_ref, machine="x86_64") == "cpu-x86_64-float64"
    # the dtype the engine reported (the session's `dtype`) decides over what its options asked for
    reported = rows("cpu: AMD EPYC 7L43, 2 cores", dtype="float32")
    for r in reported["x.generate.jsonl"][:1]:
        r["dtype"] = "bfloat16"
    assert G.hardware_class(reported, machine="x86_64") == "cpu-x86_64-bfloat16"


# ---------------------------------------------------------------- compare


def test_golden_against_itself_passes(golden_dir, gm, run_copy):
    d = run_copy()
    verdicts, info = G.compare_golden(d, golden_dir, machine=gm["machine"])
    assert G.outcome(verdicts) == "pass", [v.detail for v in verdicts if v.verdict != "pass"]
    ran = [v for v in verdicts if v.verdict == "pass"]
    assert {v.backends[0] for v in ran} == {"reference", "vllm", "sglang_jax"}
    assert {v.case for v in ran} == set(gm["case_hashes"])
    assert all(v.check == "golden" and v.data["max_abs_dlogp"] == 0.0 for v in ran)
    out = G.write_golden_result(d, verdicts, info)
    payload = json.loads(out.read_text())
    assert payload["verdict"] == "pass" and payload["hardware_class"] == gm["hardware_class"]


def test_cli_compare_exit_codes(golden_dir, gm, run_copy, monkeypatch, capsys):
    monkeypatch.setattr(G.platform, "machine", lambda: gm["machine"])
    d = run_copy()
    assert main(["golden", "compare", "--run", str(d), "--golden", str(golden_dir)]) == 0
    assert (d / "golden.json").exists()

    def bump(r):
        if r["key"]["case_id"] == "greedy-basic" and r["key"]["prompt_index"] == 0:
            r["completion_ids"][2] += 1
    _edit(d, "sglang_jax", "generate", bump)
    assert main(["golden", "compare", "--run", str(d), "--golden", str(golden_dir)]) == 1
    text = capsys.readouterr().out
    assert "FAIL    golden[greedy-basic:sglang_jax]" in text and "tokens differ from position 2" in text


def test_perturbed_copy_fails_naming_backend_and_case(golden_dir, gm, run_copy):
    d = run_copy()

    def shift_logprobs(r):  # a regression in vLLM's sampled logprobs, beyond tolerance
        if r["key"]["case_id"] == "sample-t08" and r["key"]["variant"] == "main":
            r["completion_logprobs"] = [v - 3e-3 for v in r["completion_logprobs"]]

    def finish(r):  # sglang-jax suddenly reports 'length' where it stopped on EOS
        if r["key"]["case_id"] == "greedy-eos" and r["finish_reason"] == "stop":
            r["finish_reason"] = "length"

    _edit(d, "vllm", "generate", shift_logprobs)
    _edit(d, "sglang_jax", "generate", finish)
    verdicts, _ = G.compare_golden(d, golden_dir, machine=gm["machine"])
    failed = {(v.backends[0], v.case): v for v in verdicts if v.verdict == "fail"}
    assert set(failed) == {("vllm", "sample-t08"), ("sglang_jax", "greedy-eos")}, set(failed)
    assert "max |dlogp| 0.003" in failed[("vllm", "sample-t08")].detail
    assert "finish reason stop -> length" in failed[("sglang_jax", "greedy-eos")].detail
    assert G.outcome(verdicts) == "fail"


def test_jitter_within_tolerance_passes(golden_dir, gm, run_copy):
    d = run_copy()
    _edit(d, "vllm", "generate", lambda r: r.update(completion_logprobs=[
        v + 1e-6 for v in r["completion_logprobs"]]) if r["completion_logprobs"] else None)
    verdicts, _ = G.compare_golden(d, golden_dir, machine=gm["machine"])
    assert G.outcome(verdicts) == "pass"
    worst = max(v.data["max_abs_dlogp"] for v in verdicts if v.backends == ["vllm"] and v.verdict == "pass")
    assert 0 < worst < 2e-6


def test_changed_case_and_missing_backend_are_skipped_not_compared(golden_dir, gm, run_copy):
    d = run_copy()
    files = inject.load(d)
    for r in files["vllm.generate.jsonl"] + files["vllm.score.jsonl"]:
        if r.get("key") and r["key"]["case_id"] == "greedy-ids":
            r["key"]["case_hash"] = "0000000000000000"
    for name in ("sglang_jax.generate.jsonl", "sglang_jax.score.jsonl"):
        del files[name]
        (d / "records" / name).unlink()
    inject.save(d, files)
    verdicts, _ = G.compare_golden(d, golden_dir, machine=gm["machine"])
    skipped = {(tuple(v.backends), v.case): v.detail for v in verdicts if v.verdict == "skipped"}
    assert "the case changed" in skipped[(("vllm",), "greedy-ids")]
    assert "not in this run" in skipped[(("sglang_jax",), "*")]
    assert G.outcome(verdicts) == "pass"


def test_hardware_class_mismatch_is_an_error(golden_dir, gm, run_copy, monkeypatch, capsys):
    d = run_copy()
    with pytest.raises(G.GoldenError, match="hardware class mismatch"):
        G.compare_golden(d, golden_dir, machine="riscv64")
    monkeypatch.setattr(G.platform, "machine", lambda: "riscv64")
    assert main(["golden", "compare", "--run", str(d), "--golden", str(golden_dir)]) == 2
    assert "hardware class mismatch" in capsys.readouterr().err
    assert not (d / "golden.json").exists()


def test_nothing_comparable_is_an_error(golden_dir, gm, run_copy):
    d = run_copy()
    files = inject.load(d)
    for rows in files.values():
        for r in rows:
            if r.get("model_hash"):
                r["model_hash"] = "f" * 64
    inject.save(d, files)
    verdicts, _ = G.compare_golden(d, golden_dir, machine=gm["machine"])
    assert G.outcome(verdicts) == "error"
    assert any("nothing compared" in v.detail for v in verdicts)


# ---------------------------------------------------------------- update


@pytest.fixture
def golden_copy(golden_dir, tmp_path) -> Path:
    d = tmp_path / "golden" / golden_dir.name
    shutil.copytree(golden_dir, d)
    return d


def test_update_without_yes_writes_nothing_and_prints_the_diff(golden_copy, gm, run_copy, monkeypatch):
    monkeypatch.setattr(G.platform, "machine", lambda: gm["machine"])
    d = run_copy()

    def bump(r):
        if r["key"]["case_id"] == "greedy-basic" and r["key"]["prompt_index"] == 1 and r["key"]["variant"] == "main":
            r["completion_ids"][-1] += 1
            r["completion_logprobs"][0] -= 0.01
    _edit(d, "vllm", "generate", bump)
    before = _tree_hash(golden_copy)
    printed: list[str] = []
    rc = G.update_golden(d, golden_copy, yes=False, allow_failing=True, derived=False, confirm=None,
                         out=printed.append)
    text = "\n".join(printed)
    assert rc == 1 and _tree_hash(golden_copy) == before
    assert "vllm / greedy-basic: records changed" in text
    assert "tokens differ from position" in text and "golden:" in text and "run:" in text
    assert "nothing written" in text
    # an interactive "no" writes nothing either; "yes" writes
    assert G.update_golden(d, golden_copy, yes=False, allow_failing=True, derived=False,
                           confirm=lambda: False, out=printed.append) == 1
    assert _tree_hash(golden_copy) == before
    assert G.update_golden(d, golden_copy, yes=False, allow_failing=True, derived=False,
                           confirm=lambda: True, out=printed.append) == 0
    assert _tree_hash(golden_copy) != before
    verdicts, _ = G.compare_golden(d, golden_copy, machine=gm["machine"])
    assert G.outcome(verdicts) == "pass"


def test_update_refuses_a_failing_run_and_a_foreign_class(golden_copy, gm, run_copy, tmp_path):
    d = run_copy()
    inject.inject_dropped_eos(d, "sglang_jax")  # eos_policy fails: not fit to be a golden
    before = _tree_hash(golden_copy)
    with pytest.raises(G.GoldenError, match="not clean"):
        G.update_golden(d, golden_copy, yes=True, derived=False, machine=gm["machine"], out=lambda s: None)
    with pytest.raises(G.GoldenError, match="hardware class mismatch"):
        G.update_golden(run_copy("other"), golden_copy, yes=True, derived=False, machine="riscv64",
                        out=lambda s: None)
    assert _tree_hash(golden_copy) == before
    with pytest.raises(G.GoldenError, match="named after its hardware class"):
        G.update_golden(run_copy("third"), tmp_path / "golden" / "my-golden", yes=True, derived=False,
                        machine=gm["machine"], out=lambda s: None)


def test_update_of_an_unchanged_run_reports_no_change(golden_copy, gm, run_copy):
    printed: list[str] = []
    assert G.update_golden(run_copy(), golden_copy, yes=False, derived=False, machine=gm["machine"],
                           out=printed.append) == 0
    assert "no change beyond tolerance" in printed[0]


def test_changed_tokens_are_the_generating_backends_regression_not_the_scorers(golden_dir, gm, run_copy):
    """sglang-jax generates other tokens (and every backend scores those): only sglang-jax fails;
    the scorers' scores of the new tokens are noted, not blamed on them."""
    d = run_copy()
    files = inject.load(d)
    for name, rows in files.items():
        for r in rows:
            k = r.get("key")
            if not k or k["case_id"] != "greedy-ids" or k["prompt_index"] != 0:
                continue
            if (r["kind"] == "generation" and r["backend"] == "sglang_jax") or \
                    (r["kind"] == "score" and r["source_backend"] == "sglang_jax"):
                r["completion_ids"] = r["completion_ids"][:-1] + [r["completion_ids"][-1] + 1]
    inject.save(d, files)
    verdicts, _ = G.compare_golden(d, golden_dir, machine=gm["machine"])
    bad = {(v.backends[0], v.case) for v in verdicts if v.verdict != "pass"}
    assert bad == {("sglang_jax", "greedy-ids")}, bad
    ref = next(v for v in verdicts if v.backends == ["reference"] and v.case == "greedy-ids")
    assert "whose tokens changed (see sglang_jax)" in ref.detail


def test_a_backend_that_did_not_run_cleanly_is_an_error(golden_dir, gm, run_copy):
    d = run_copy()
    inject.remove_backend_phase(d, "vllm", "generate", exit_code=1)
    verdicts, _ = G.compare_golden(d, golden_dir, machine=gm["machine"])
    errors = {v.case for v in verdicts if v.verdict == "error" and v.backends == ["vllm"]}
    assert errors == set(gm["case_hashes"])
    assert all("generate exited with code 1" in v.detail for v in verdicts if v.verdict == "error")
    # the others are not blamed for vLLM's missing completions
    assert {v.verdict for v in verdicts if v.backends != ["vllm"]} == {"pass"}
    assert G.outcome(verdicts) == "error"


def test_golden_provenance_names_the_suite_relative_to_its_checkout(tmp_path):
    from harness.golden import checkout_relative

    clone = tmp_path / "some-clone"
    (clone / "harness").mkdir(parents=True)
    (clone / "noxfile.py").write_text("")
    (clone / "cases").mkdir()
    assert checkout_relative(str(clone / "cases" / "default.yaml")) == "cases/default.yaml"
    assert checkout_relative(str(tmp_path / "elsewhere" / "mine.yaml")) == str(tmp_path / "elsewhere" / "mine.yaml")
    assert checkout_relative("cases/default.yaml") == "cases/default.yaml"
    assert checkout_relative(None) is None
