"""The model zoo end to end: prompts tokenize alike in every backend's venv, and the default suite
PASSes on the tied-GQA zoo model (Qwen3's shape: GQA, tied embeddings, vocab padded past the tokenizer)
in float32 with all three real backends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.model.zoo import ZOO
from harness.rundir import read_run

ROOT = Path(__file__).parent.parent.parent
BACKENDS = ["reference", "vllm", "sglang_jax"]
MODELS = ["embedded"] + [f"zoo:{n}" for n in ZOO]


def _nox(backend: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nox", "--no-error-on-missing-interpreters", "-f",
                           str(ROOT / "noxfile.py"), "-s", backend, "--", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)


@pytest.mark.parametrize("suite", ["cases/default.yaml", "cases/sampling.yaml"])
def test_text_prompts_tokenize_non_empty_and_alike_in_every_backend(suite, tmp_path):
    """Each backend tokenizes the suite in its own venv (its own transformers: 5.x loads a qwen2 directory
    with Qwen2Tokenizer whatever tokenizer_config.json says, 4.x reads tokenizer.json as it is)."""
    got = {}
    for b in BACKENDS:
        out = tmp_path / f"{b}.json"
        p = _nox(b, "tokenize", "--suite", suite, "--models", ",".join(MODELS), "--out", str(out))
        assert p.returncode == 0, p.stderr[-3000:]
        got[b] = json.loads(out.read_text())["models"]
    for m in MODELS:
        ref = got["reference"][m]
        empty = [(case, i) for case, prompts in ref.items() for i, ids in enumerate(prompts) if not ids]
        assert not empty, f"{m}: prompts that tokenize to nothing: {empty}"
        for b in BACKENDS[1:]:
            assert got[b][m] == ref, f"{m}: {b} tokenizes the suite differently from the reference"


@pytest.fixture(scope="module")
def tied_run(tmp_path_factory):
    out = Path(os.environ.get("PARITY_E2E_OUT") or tmp_path_factory.mktemp("reports"))
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(out), "--run-id", "zoo-tied-f32",
                           "--model", "zoo:qwen3-gqa-tied", "--dtype", "float32", "--no-selftest",
                           "--backends", ",".join(BACKENDS)], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    sys.stderr.write(proc.stderr[-6000:])
    return proc, out / "zoo-tied-f32"


def test_default_suite_passes_on_the_tied_gqa_zoo_model(tied_run):
    proc, run = tied_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["counts"]["error"] == summary["counts"]["fail"] == 0
    assert summary["provenance"]["model"]["name"] == "qwen3-gqa-tied-A"
    assert summary["provenance"]["model_b"]["name"] == "qwen3-gqa-tied-B"
    assert {b: summary["backends"][b]["dtype"] for b in BACKENDS} == \
        {"reference": "float64", "vllm": "float32", "sglang_jax": "float32"}
    # the update cases ran and were judged (B is the zoo model's own set B)
    judged = {(c["name"], c["case"]) for c in summary["checks"] if c["verdict"] == "pass"}
    assert {("weight_update", "update-b"), ("weight_update", "update-back-a")} <= judged
    sessions = [r for r in read_run(run) if r.kind == "session"]
    assert {s.dtype for s in sessions if s.backend != "reference"} == {"float32"}
