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


# ----------------------------------------------------------------------------- the model zoo
ZOO_MODELS = sorted(__import__("harness.model.zoo", fromlist=["ZOO"]).ZOO)


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_model_is_peaked_and_context_moves_it(name, record_property):
    """Each zoo model loads in transformers as its architecture, its tokenizer turns text into ids,
    greedy is not decided by ties (mean top-1 probability over corpus positions in [0.3, 0.9]) and
    context moves the next-token logprobs (full prefix vs the last token alone)."""
    from harness.model import resolve

    m = resolve(f"zoo:{name}", "A")
    tok = transformers.AutoTokenizer.from_pretrained(m.path)
    lm = transformers.AutoModelForCausalLM.from_pretrained(m.path, dtype=torch.float64).eval()
    assert type(lm).__name__ == json.loads((m.path / "config.json").read_text())["architectures"][0]
    tops, moved = [], []
    for line in build.corpus_lines()[:20]:
        ids = tok(line, add_special_tokens=False)["input_ids"]
        assert ids, line
        with torch.no_grad():
            lp = torch.log_softmax(lm(torch.tensor([ids])).logits[0], -1)
            alone = torch.log_softmax(lm(torch.tensor([[ids[-1]]])).logits[0, -1], -1)
        tops += lp.exp().max(-1).values.tolist()
        moved.append(float((lp[-1] - alone).abs().max()))
    top1, ctx = float(np.mean(tops)), float(np.median(moved))
    record_property("mean_top1", top1)
    print(f"\n{name}: mean top-1 {top1:.3f}, median max |dlogp| full context vs last token {ctx:.3f}")
    assert 0.3 < top1 < 0.9 and ctx > 0.05


def test_byte_level_bpe_restatement_equals_the_tokenizer():
    """The builder's corpus statistics use harness.model.bpe.encode; the model must see the same ids from
    the tokenizer transformers loads for it (Qwen2Tokenizer in transformers 5), on the corpus and suites."""
    from harness.model import bpe, resolve, zoo
    from harness.suite import load_suite

    m = resolve("zoo:qwen2-bias", "A")
    tok = transformers.AutoTokenizer.from_pretrained(m.path)
    shape = zoo.ZOO["qwen2-bias"].shape
    vocab, merges = bpe.build_vocab(build.corpus_lines(), shape.n_tokens, shape.specials, shape.tail_specials)
    texts = build.corpus_lines() + [p.text for s in ("default", "sampling")
                                    for c in load_suite(ROOT / "cases" / f"{s}.yaml").cases for p in c.prompts if p.text]
    for t in texts:
        assert tok(t, add_special_tokens=False)["input_ids"] == bpe.encode(t, vocab, merges), t
        assert tok.decode(bpe.encode(t, vocab, merges)) == t
