"""VllmRollout on the real vLLM engine (no mocks) against the exact float64 reference.

Run in the vLLM venv:  ~/.cache/rollout-parity/nox/vllm/bin/python -m pytest tests/backends/test_vllm.py
(or `nox -s vllm_tests`). Needs the reference venv too (`nox -s reference` creates it), whose
python records the reference in a subprocess; override with PARITY_REFERENCE_PYTHON.

Two recordings, each a vLLM process and a reference process writing into one run directory:
- processed: the default suite through `parity record --backend vllm` (processed_logprobs,
  tunix's mode), then the reference (which also scores vLLM's completions exactly in every mode);
- raw: tests/backends/data/vllm_raw.yaml, whose `backends:` block sets vllm.logprobs_mode=raw, including a
  162-token prompt cached under A and generated again right after update_params(B).
Then an in-process engine exercises the tunix API (generate / get_per_token_logps /
update_params) directly, including a negative control for the prefix-cache reset.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm", reason="tests/backends/test_vllm.py runs in the vLLM venv (nox -s vllm_tests)")

from harness.records import SURFACE_VARIANTS  # noqa: E402
from harness.backends import registry  # noqa: E402
from harness.model import embedded  # noqa: E402
from harness.rundir import RunRecords  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/backends/tied.py

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SUITE = ROOT / "cases" / "default.yaml"
RAW_SUITE = ROOT / "tests" / "backends" / "data" / "vllm_raw.yaml"
REFERENCE_PYTHON = Path(os.environ.get("PARITY_REFERENCE_PYTHON") or registry.venv_python(registry.reference()))
ATOL = 1e-4
EOS = 1
GREEDY_CASES = ("greedy-basic", "greedy-eos", "greedy-ids", "update-b", "update-back-a")


# ----------------------------------------------------------------------------- recordings
def _start(python: Path, backend: str, suite: Path, out: Path, phase: str = "all", opts: tuple[str, ...] = (),
           **env: str) -> subprocess.Popen:
    """`parity record` in its own process (the CLI path a nox session runs), output to a log in the run dir;
    OPTS are --backend-opt values. The deprecated mode variable is only passed when given here: the modes come
    from the suite (the raw suite's `backends:` block) and --backend-opt."""
    cmd = [str(python), "-m", "harness", "record", "--backend", backend, "--suite", str(suite), "--out", str(out),
           "--phase", phase, "--quiet", *(a for o in opts for a in ("--backend-opt", o))]
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / f"{backend}.{phase}.log", "w")
    full_env = {k: v for k, v in os.environ.items() if k != "PARITY_VLLM_LOGPROBS_MODE"} | env
    p = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    p.args_text, p.log_path, p.t0 = " ".join(cmd), out / f"{backend}.{phase}.log", time.perf_counter()  # type: ignore[attr-defined]
    return p


def _wait(p: subprocess.Popen, timeout: float = 600) -> float:
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    tail = p.log_path.read_text()[-6000:]  # type: ignore[attr-defined]
    assert rc == 0, f"`{p.args_text}` exited {rc}:\n{tail}"  # type: ignore[attr-defined]
    return time.perf_counter() - p.t0  # type: ignore[attr-defined]


class Run:
    """The records of one run directory, indexed for comparisons."""

    def __init__(self, path: Path, wall: dict[str, float]):
        recs = RunRecords.load(path)
        self.path, self.wall = path, wall
        self.errors = recs.errors
        self.sessions = {(r.backend, r.phase): r for r in recs.sessions}
        # the rollout-surface variants (tunix, rule-*) have checks of their own (harness/checks/tunix.py)
        self.gen = {k: g for k, g in recs.generation_index().items() if k[4] not in SURFACE_VARIANTS}
        # (scorer, source, case, prompt, sample): the main variant's
        self.score = {k[:5]: s for k, s in recs.score_index().items() if k[5] == "main"}

    def gens(self, backend: str, case: str | None = None, variant: str | None = None) -> list:
        return [g for (b, c, _, _, v), g in sorted(self.gen.items(), key=lambda kv: kv[0])
                if b == backend and (case is None or c == case) and (variant is None or v == variant)]

    def ref_gen(self, g):
        """The reference's generation for the same case/prompt/sample/variant (main if the variant is absent)."""
        k = g.key
        return self.gen.get(("reference", k.case_id, k.prompt_index, k.sample_index, k.variant)) or \
            self.gen[("reference", k.case_id, k.prompt_index, k.sample_index, "main")]

    def ref_score(self, g):
        """The reference's exact teacher-forced scoring of vLLM's own (main-variant) completion."""
        k = g.key
        return self.score[("reference", "vllm", k.case_id, k.prompt_index, k.sample_index)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Both recordings, pipelined two processes at a time (the machine has 2 cores):
    vLLM(processed) | reference generate  ->  vLLM(raw) | reference score  ->  reference on the raw suite."""
    if not REFERENCE_PYTHON.exists():
        pytest.fail(f"no reference interpreter at {REFERENCE_PYTHON}: run `nox -s reference` once "
                    "(or set PARITY_REFERENCE_PYTHON)")
    me = Path(sys.executable)
    proc, raw = tmp_path_factory.mktemp("vllm-processed"), tmp_path_factory.mktemp("vllm-raw")
    wall: dict[str, dict[str, float]] = {"processed": {}, "raw": {}}
    v, r = _start(me, "vllm", DEFAULT_SUITE, proc, opts=("vllm.logprobs_mode=processed",)), \
        _start(REFERENCE_PYTHON, "reference", DEFAULT_SUITE, proc, "generate")
    wall["processed"]["vllm"], wall["processed"]["reference generate"] = _wait(v), _wait(r)
    v, r = _start(me, "vllm", RAW_SUITE, raw), \
        _start(REFERENCE_PYTHON, "reference", DEFAULT_SUITE, proc, "score")
    wall["raw"]["vllm"], wall["processed"]["reference score"] = _wait(v), _wait(r)
    wall["raw"]["reference"] = _wait(_start(REFERENCE_PYTHON, "reference", RAW_SUITE, raw))
    return {"processed": Run(proc, wall["processed"]), "raw": Run(raw, wall["raw"])}


@pytest.fixture(scope="module")
def processed_run(runs) -> Run:
    return runs["processed"]


@pytest.fixture(scope="module")
def raw_run(runs) -> Run:
    return runs["raw"]


def _maxdiff(a, b) -> float:
    assert len(a) == len(b), f"lengths differ: {len(a)} vs {len(b)}"
    d = 0.0
    for x, y in zip(a, b):
        assert (x is None) == (y is None), f"None misaligned: {x} vs {y}"
        if x is None or (math.isinf(x) and math.isinf(y) and (x > 0) == (y > 0)):
            continue
        d = max(d, abs(x - y))
    return d


# ----------------------------------------------------------------------------- recorded: both modes
@pytest.mark.parametrize("which", ["processed", "raw"])
def test_recording_clean_and_mode_declared(which, request):
    run: Run = request.getfixturevalue(f"{which}_run")
    assert not run.errors, [(e.backend, e.key and e.key.case_id, e.reason) for e in run.errors]
    sess = run.sessions[("vllm", "generate")]
    assert sess.logprob_mode == which
    assert sess.config["logprobs_mode"] == f"{which}_logprobs"
    # the raw run's mode comes from the raw suite's `backends:` block alone, recorded as a typed option
    assert sess.config["options"]["logprobs_mode"] == which
    assert sess.config["prompt_logprobs"] == "separate" and sess.config["enable_prefix_caching"]
    assert all(g.logprob_mode == which for g in run.gens("vllm"))
    assert sess.versions["vllm"] and sess.device
    print(f"\n[{which}] wall s: {run.wall}; engine start s: {sess.config['engine_start_s']}")


@pytest.mark.parametrize("which", ["processed", "raw"])
def test_prompt_logprobs_match_reference(which, request):
    run: Run = request.getfixturevalue(f"{which}_run")
    worst = 0.0
    for g in run.gens("vllm"):
        ref = run.ref_gen(g)
        assert g.prompt_ids == ref.prompt_ids
        assert g.prompt_logprobs[0] is None and len(g.prompt_logprobs) == len(g.prompt_ids)
        worst = max(worst, _maxdiff(g.prompt_logprobs, ref.prompt_logprobs))
    print(f"\n[{which}] prompt logprobs max |vllm - reference| = {worst:.2e}")
    assert worst < ATOL


@pytest.mark.parametrize("which", ["processed", "raw"])
def test_completion_logprobs_match_reference_in_declared_mode(which, request):
    """Every vLLM completion logprob equals the reference's exact value of the same token, in vLLM's mode."""
    run: Run = request.getfixturevalue(f"{which}_run")
    worst, other_mode_gap = 0.0, 0.0
    other = "raw" if which == "processed" else "processed"
    for g in run.gens("vllm", variant="main"):
        s = run.ref_score(g)
        assert s.completion_ids == g.completion_ids
        assert len(g.completion_logprobs) == len(g.completion_ids)
        worst = max(worst, _maxdiff(g.completion_logprobs, s.by_mode[which]))
        other_mode_gap = max(other_mode_gap, max((abs(a - b) for a, b in zip(g.completion_logprobs, s.by_mode[other])
                                                  if math.isfinite(a) and math.isfinite(b)), default=0.0))
    print(f"\n[{which}] completion logprobs max |vllm - reference[{which}]| = {worst:.2e}; "
          f"vs reference[{other}]: {other_mode_gap:.2e}")
    assert worst < ATOL
    # sampled cases (T != 1, top-k/top-p) make the modes differ: the comparison above can tell them apart
    assert other_mode_gap > 1e-2


@pytest.mark.parametrize("which", ["processed", "raw"])
def test_get_per_token_logps_scores_with_vllm(which, request):
    """vLLM's own teacher-forced score (get_per_token_logps) of its completion equals the reference's raw values,
    and is not a replay of generate's numbers (they differ in processed mode when sampling)."""
    run: Run = request.getfixturevalue(f"{which}_run")
    worst, differs_from_generate = 0.0, 0.0
    for g in run.gens("vllm", variant="main"):
        own = run.score[("vllm", "vllm", g.key.case_id, g.key.prompt_index, g.key.sample_index)]
        assert own.logprob_mode == "raw" and len(own.logprobs) == len(g.completion_ids)
        worst = max(worst, _maxdiff(own.logprobs, run.ref_score(g).by_mode["raw"]))
        differs_from_generate = max(differs_from_generate, max(
            (abs(a - b) for a, b in zip(own.logprobs, g.completion_logprobs) if math.isfinite(b)), default=0.0))
    print(f"\n[{which}] get_per_token_logps max |vllm - reference raw| = {worst:.2e}")
    assert worst < ATOL
    if which == "processed":
        assert differs_from_generate > 1e-2
    else:
        assert differs_from_generate < ATOL


# ----------------------------------------------------------------------------- recorded: default suite
def test_greedy_tokens_equal_reference(processed_run):
    n = 0
    for case in GREEDY_CASES:
        for g in processed_run.gens("vllm", case):
            ref = processed_run.ref_gen(g)
            assert g.completion_ids == ref.completion_ids, (case, g.key.prompt_index, g.key.variant)
            assert g.finish_reason == ref.finish_reason
            n += 1
    assert n >= 12


def test_greedy_top_logprobs_match_reference(processed_run):
    """Top-k per position (greedy: processed == raw): same ids, values within tolerance."""
    for case in GREEDY_CASES:
        for g in processed_run.gens("vllm", case, "main"):
            ref_top = processed_run.ref_score(g).top
            assert len(g.completion_top) == len(ref_top)
            for mine, ref in zip(g.completion_top, ref_top):
                assert set(mine) == set(ref), (case, mine, ref)
                assert max(abs(mine[t] - ref[t]) for t in mine) < ATOL


def test_eos_is_kept(processed_run):
    stopped = [g for g in processed_run.gens("vllm") if g.finish_reason == "stop"]
    assert stopped, "the default suite should produce EOS-terminated completions (greedy-eos)"
    for g in stopped:
        assert g.completion_ids[-1] == EOS and g.stop_reason is None
        assert len(g.completion_logprobs) == len(g.completion_ids)
        assert math.isfinite(g.completion_logprobs[-1])


def test_n4_gives_four_distinct_samples_per_prompt_in_order(processed_run):
    gens = processed_run.gens("vllm", "sample-n4", "main")
    by_prompt: dict[int, list] = {}
    for g in gens:
        by_prompt.setdefault(g.key.prompt_index, []).append(g)
    assert sorted(by_prompt) == [0, 1]
    for p, samples in by_prompt.items():
        assert [s.key.sample_index for s in samples] == [0, 1, 2, 3]
        toks = [tuple(s.completion_ids) for s in samples]
        assert len(set(toks)) == 4, f"prompt {p}: samples not distinct: {toks}"


@pytest.mark.parametrize("case", ["sample-t08", "sample-topk-topp"])
def test_same_seed_same_samples(processed_run, case):
    mains = processed_run.gens("vllm", case, "main")
    repeats = processed_run.gens("vllm", case, "repeat-1")
    assert len(mains) == len(repeats) == 2
    for a, b in zip(mains, repeats):
        assert a.completion_ids == b.completion_ids
        assert _maxdiff(a.completion_logprobs, b.completion_logprobs) < ATOL


def test_update_to_b_and_back_match_reference(processed_run):
    for case in ("update-b", "update-back-a"):
        for g in processed_run.gens("vllm", case):
            s = processed_run.ref_score(g)
            assert g.completion_ids == processed_run.ref_gen(g).completion_ids, case
            assert _maxdiff(g.completion_logprobs, s.by_mode["processed"]) < ATOL
            stale = s.other_weights.get("A" if case == "update-b" else "B", {}).get("raw")
            if stale is not None:  # the reference's score of the same tokens under the other weight set
                assert _maxdiff(g.completion_logprobs, stale) > 1e-2, f"{case}: looks like the other weight set"
    b = processed_run.gens("vllm", "update-b")
    block = processed_run.sessions[("vllm", "generate")].config["block_size"]
    longest = max(len(g.prompt_ids) for g in b)
    print(f"\nupdate-b longest prompt {longest} tokens, vLLM block {block} tokens "
          f"({'spans' if longest > block else 'does NOT span'} a prefix-cache block; see the raw suite's long-* cases)")


# ----------------------------------------------------------------------------- recorded: raw suite, long prompt
def test_long_prompt_update_through_prefix_cache(raw_run):
    block = raw_run.sessions[("vllm", "generate")].config["block_size"]
    a_main, a_rep = raw_run.gens("vllm", "long-a", "main")[0], raw_run.gens("vllm", "long-a", "repeat-1")[0]
    b = raw_run.gens("vllm", "long-b", "main")[0]
    back = raw_run.gens("vllm", "long-back-a", "main")[0]
    assert len(b.prompt_ids) > max(block, 128), "the prompt must span more than one prefix-cache block"
    assert a_main.completion_ids == a_rep.completion_ids
    for g in (a_main, a_rep, b, back):
        assert g.completion_ids == raw_run.ref_gen(g).completion_ids, g.key.case_id
    for g in (a_main, b, back):
        assert _maxdiff(g.completion_logprobs, raw_run.ref_score(g).by_mode["raw"]) < ATOL
    assert b.completion_ids != a_main.completion_ids, "A and B must differ on this prompt for the check to mean anything"
    assert back.completion_ids == a_main.completion_ids


# ----------------------------------------------------------------------------- in-process: the tunix API
@pytest.fixture(scope="module")
def rollout():
    from harness.backends.vllm_rollout import VllmRollout

    with VllmRollout(model_dir=embedded("A").path, logprobs_mode="raw_logprobs", prompt_logprobs="separate",
                     engine_kwargs={"block_size": 32}) as r:
        yield r


def test_embedded_model_loads_in_vllm(rollout):
    from harness.backends.vllm_rollout import BaseRollout

    assert isinstance(rollout, BaseRollout)
    assert type(rollout.model()).__name__ == "Qwen3ForCausalLM"
    assert rollout.eos_id() == EOS and rollout.pad_id() == 0
    facts = rollout.engine_facts()
    assert facts["in_process"] and facts["dtype"] == "float32" and facts["block_size"] == 32
    print(f"\nengine start {rollout.start_s:.2f} s")


def test_tunix_generate_repeated_prompts_with_one_seed_are_distinct(rollout):
    """RLCluster's GRPO repeats each prompt with one RolloutConfig.seed: the rows must differ (one seed
    per row made every GRPO group identical, advantage 0), and stay reproducible."""
    from harness.backends.vllm_rollout import RolloutConfig

    cfg = RolloutConfig(max_tokens_to_generate=6, temperature=1.0, top_p=1.0, top_k=None, seed=3, max_prompt_length=8)
    a = rollout.generate(["The ship"] * 4, cfg)
    b = rollout.generate(["The ship"] * 4, cfg)
    assert len({tuple(r) for r in a.tokens}) == 4
    assert (a.tokens == b.tokens).all()


def test_update_params_converts_tunix_qwen3_names(rollout):
    """RLCluster.sync_weights hands over tunix names and layouts; with no param_mapping the rollout
    converts them itself (harness.rl.weights.tunix_to_hf): set B in tunix layout must give what set B
    loaded from its directory gives, then back to A."""
    from safetensors.numpy import load_file

    from harness.rl.weights import hf_to_tunix, looks_like_tunix

    MODEL_A, MODEL_B = embedded("A"), embedded("B")
    hf = {}
    for f in sorted(Path(MODEL_B.path).glob("*.safetensors")):
        hf.update(load_file(str(f)))
    tunix = hf_to_tunix(hf, json.loads((Path(MODEL_B.path) / "config.json").read_text()))
    assert looks_like_tunix(tunix)
    prompt = [[5, 17, 9, 3]]
    greedy = {"max_tokens": 8, "temperature": 0.0}
    a_before = rollout.generate_ids(prompt, greedy)[0].samples[0].token_ids
    rollout.update_params(tunix)
    b_tunix = rollout.generate_ids(prompt, greedy)[0].samples[0].token_ids
    rollout.update_params(MODEL_B.path)
    b_dir = rollout.generate_ids(prompt, greedy)[0].samples[0].token_ids
    rollout.update_params(MODEL_A.path)
    assert b_tunix == b_dir != a_before
    assert rollout.generate_ids(prompt, greedy)[0].samples[0].token_ids == a_before


def test_tunix_generate_grouped_padded_and_rescored(rollout):
    from harness.backends.vllm_rollout import RolloutConfig

    cfg = RolloutConfig(max_tokens_to_generate=8, temperature=0.8, top_p=1.0, top_k=None, seed=5, max_prompt_length=16)
    t0 = time.perf_counter()
    out = rollout.generate(["The robot", "The girl said that"], cfg, n=3)
    dt = time.perf_counter() - t0
    assert len(out.text) == 6 and out.tokens.shape == (6, 8) and out.left_padded_prompt_tokens.shape == (6, 16)
    # grouped by prompt, in order: rows 0-2 are prompt 0, rows 3-5 prompt 1
    lp = out.left_padded_prompt_tokens
    assert (lp[0] == lp[1]).all() and (lp[1] == lp[2]).all() and (lp[3] == lp[5]).all() and not (lp[0] == lp[3]).all()
    assert len({tuple(r) for r in out.tokens[:3]}) == 3, "n samples of a prompt must be distinct"
    pad = rollout.pad_id()
    for row, lps in zip(out.tokens, out.logprobs):
        n = len(lps)
        assert n >= 1 and (row[n:] == pad).all()
    ntok = sum(len(x) for x in out.logprobs)
    print(f"\ntunix generate: {ntok} tokens in {dt:.2f} s ({ntok / dt:.0f} tok/s, includes prompt-logprob pass)")
    # re-score with vLLM itself through the padded layout: equals generate's raw logprobs, 0 at padding
    scores = rollout.get_per_token_logps(out.left_padded_prompt_tokens, out.tokens)
    assert scores.shape == (6, 8)
    for row, lps in zip(scores, out.logprobs):
        assert np.abs(row[: len(lps)] - np.asarray(lps)).max() < ATOL
        assert (row[len(lps):] == 0).all()
    # an explicit completion mask gives the same numbers
    mask = np.zeros((6, 8), dtype=bool)
    for i, lps in enumerate(out.logprobs):
        mask[i, : len(lps)] = True
    assert np.abs(rollout.get_per_token_logps(out.left_padded_prompt_tokens, out.tokens, mask) - scores).max() == 0


def test_per_token_logps_alignment_against_step_by_step_decoding(rollout):
    """The alignment rule (harness/alignment.py): completion logprob i = log p(c[i] | prompt + c[:i]), checked against a fresh
    one-token generate at every prefix (an independent code path: decode logprobs, not prompt logprobs)."""
    prompt = rollout.encode("In the kitchen the cat")
    comp = rollout.generate_ids([prompt], {"max_tokens": 5, "temperature": 0.0, "logprobs": 1})[0].samples[0].token_ids
    scored = rollout.get_per_token_logps(np.asarray([prompt]), np.asarray([comp]),
                                         completion_mask=np.ones((1, len(comp)), bool))[0]
    steps = rollout.generate_ids([prompt + comp[:i] for i in range(len(comp))],
                                 {"max_tokens": 1, "temperature": 0.0, "logprobs": 1}, prompt_logprobs="none")
    for i, r in enumerate(steps):
        assert r.samples[0].token_ids == [comp[i]]
        assert abs(r.samples[0].logprobs[0] - scored[i]) < ATOL


def test_update_params_resets_prefix_cache(rollout):
    """update_params(B) -> the very next generate of a long, cached prompt follows B; with the cache reset
    skipped (negative control) vLLM serves A's KV. Accepts a directory and HF-named numpy arrays."""
    from safetensors.numpy import load_file

    A, B = embedded("A"), embedded("B")
    lines = (ROOT / "harness" / "model" / "corpus" / "corpus.txt").read_text().splitlines()
    prompt = rollout.encode(" ".join(lines[:14]))[:-1]
    assert len(prompt) > 4 * 32
    greedy = {"max_tokens": 12, "temperature": 0.0, "logprobs": 1}

    def gen():
        r = rollout.generate_ids([prompt], greedy, prompt_logprobs="none")[0]
        return r.samples[0].token_ids, r.num_cached_tokens

    toks_a, _ = gen()
    again, cached = gen()
    assert again == toks_a and cached >= 4 * 32, f"the prefix cache is not being read ({cached} cached tokens)"

    # negative control: reload B without resetting the prefix cache -> stale KV from A
    weights_b = load_file(str(B.path / "model.safetensors"))
    rollout.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": rollout._weights_from(weights_b, None)})
    stale, cached = gen()
    assert cached > 0
    rollout.llm.reset_prefix_cache()
    fresh_b, _ = gen()
    assert stale != fresh_b, "negative control: stale KV should change the output (else this test proves nothing)"

    rollout.update_params(A.path)  # a directory
    assert gen()[0] == toks_a
    t0 = time.perf_counter()
    rollout.update_params({k: v for k, v in weights_b.items()})  # HF-named numpy arrays
    dt = time.perf_counter() - t0
    toks, cached = gen()
    assert toks == fresh_b and cached == 0
    nested: dict = {}
    for name, v in load_file(str(A.path / "model.safetensors")).items():  # nested dicts are joined with '.'
        node = nested
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    rollout.update_params(nested)
    assert gen()[0] == toks_a
    print(f"\nupdate_params (numpy arrays, {len(weights_b)} tensors) + reset_prefix_cache: {dt * 1000:.0f} ms")


# ----------------------------------------------------------------------------- tied embeddings
def test_update_params_reaches_a_tied_output_head(tmp_path):
    """zoo:qwen3-gqa-tied has no lm_head.weight: vLLM's layer-wise reload_weights alone leaves the CPU
    head computing from its packed copy of A's embedding (docs/vllm.md). Update to B and back: logprobs
    of the live set within float32 tolerance of the reference, far from the other set's."""
    from tied import assert_update_reaches_the_head, record

    record(sys.executable, "vllm", tmp_path, {"PARITY_VLLM_LOGPROBS_MODE": "raw"})
    record(REFERENCE_PYTHON, "reference", tmp_path)
    live = assert_update_reaches_the_head(tmp_path, "vllm")
    print(f"\ntied update, max |dlogp| vs the live set: {live}")



def test_tied_head_is_added_to_any_update_without_one():
    """The update of a tied model gets lm_head.weight = its new embedding whatever form the params came in
    (here a tunix state of zoo:qwen3-gqa-tied's set B, which has no head of its own), once, never twice;
    an untied model's update is left as it is."""
    import torch
    from safetensors.numpy import load_file

    from harness.backends.vllm_rollout import with_tied_head
    from harness.model import resolve
    from harness.rl.weights import hf_to_tunix, tunix_to_hf

    b = resolve("zoo:qwen3-gqa-tied", "B")
    hf = load_file(str(b.path / "model.safetensors"))
    tunix = hf_to_tunix(hf, json.loads((b.path / "config.json").read_text()))
    assert "lm_head.w" not in tunix
    pairs = [(n, torch.from_numpy(v)) for n, v in tunix_to_hf(tunix).items()]
    done = with_tied_head(pairs, tied=True, dtype=torch.bfloat16)
    head = dict(done)["lm_head.weight"]
    assert head is dict(done)["model.embed_tokens.weight"] and head.dtype == torch.bfloat16
    assert [n for n, _ in with_tied_head(done, tied=True)].count("lm_head.weight") == 1
    assert "lm_head.weight" not in dict(with_tied_head(pairs, tied=False))
