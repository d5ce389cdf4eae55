"""The exact reference in its own venv: the embedded model loads in transformers and scores exactly."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from harness.backends.reference import ReferenceRunner
from harness.model import build, embedded
from harness.records import read_records, records_path
from harness.spec import SamplingSpec

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture(scope="module")
def runner():
    with ReferenceRunner(embedded("A")) as r:
        yield r


@pytest.fixture(scope="module")
def hf32():
    return transformers.AutoModelForCausalLM.from_pretrained(embedded("A").path, dtype=torch.float32).eval()


def test_loads_unmodified_in_float32_with_untied_head(hf32):
    assert hf32.config.tie_word_embeddings is False
    assert hf32.lm_head.weight.data_ptr() != hf32.model.embed_tokens.weight.data_ptr()
    assert next(hf32.parameters()).dtype == torch.float32


def test_distribution_is_peaked(runner, record_property):
    """Greedy must not be decided by ties: mean top-1 probability over corpus positions > 0.3."""
    tops = []
    for line in build.corpus_lines():
        ids = runner._tok(line)["input_ids"]
        lg = runner.logits(ids)
        p = np.exp(lg - lg.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        tops += p.max(-1).tolist()
    mean_top1 = float(np.mean(tops))
    record_property("mean_top1", mean_top1)
    print(f"mean top-1 probability over {len(tops)} corpus positions: {mean_top1:.3f}")
    assert mean_top1 > 0.3


def test_greedy_matches_transformers_generate(runner):
    prompt = runner._tok("The girl asked the robot why the")["input_ids"]
    ours = runner.generate([prompt], SamplingSpec(max_tokens=10))[0][0]
    ids = torch.tensor([prompt])
    ref = runner._lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                              eos_token_id=list(runner._eos), pad_token_id=0)[0, len(prompt):].tolist()
    assert ours.completion_ids == ref[: len(ours.completion_ids)]


def test_logprobs_equal_an_independent_log_softmax(runner, hf32):
    prompt, completion = [3, 5, 9, 12], [4, 1]
    s = runner.score([prompt], [completion], SamplingSpec())[0]
    with torch.no_grad():
        lp = torch.log_softmax(hf32.double()(torch.tensor([prompt + completion])).logits[0], -1)
    hf32.float()
    expect = [lp[len(prompt) - 1 + i, t].item() for i, t in enumerate(completion)]
    # ~1e-7 apart: the float32-built model keeps its RoPE inv_freq buffer at float32 precision
    assert s.logprobs == pytest.approx(expect, abs=1e-6), (s.logprobs, expect)
    sample = runner.generate([prompt], SamplingSpec(max_tokens=2))[0][0]
    assert sample.prompt_logprobs[0] is None and len(sample.prompt_logprobs) == len(prompt)
    assert sample.prompt_logprobs[1:] == pytest.approx([lp[i, prompt[i + 1]].item() for i in range(3)], abs=1e-6)


def test_weight_set_b_changes_greedy_output(runner):
    prompt = runner._tok("The robot")["input_ids"]
    a = runner.generate([prompt], SamplingSpec(max_tokens=6))[0][0].completion_ids
    runner.set_weights(embedded("B"))
    try:
        b = runner.generate([prompt], SamplingSpec(max_tokens=6))[0][0].completion_ids
    finally:
        runner.set_weights(embedded("A"))
    assert a != b


def test_record_cli_writes_every_case(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "record", "--backend", "reference", "--out",
                           str(tmp_path), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    gens = [r for r in read_records(records_path(tmp_path, "reference", "generate")) if r.kind == "generation"]
    suite = json.loads(json.dumps([c for c in __import__("harness.suite").suite.load_suite(
        ROOT / "cases" / "default.yaml").cases], default=lambda c: c.id))
    assert {g.key.case_id for g in gens} == set(suite)
    scores = read_records(records_path(tmp_path, "reference", "score"))
    assert sum(r.kind == "score" for r in scores) == sum(g.key.variant == "main" for g in gens)
