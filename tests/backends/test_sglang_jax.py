"""SglangJaxRollout on the real sglang-jax Engine against the exact reference. No mocks.

Run in the sglang_jax venv (``nox -s sglang_jax_tests``). sglang-jax itself is
never imported here: every engine lives in its own process (the rollout's
EngineProcess, or `python -m harness record` subprocesses), because a failing
engine SIGKILLs its host.

What runs, overlapped to fit ~8 minutes on 2 cores:
- the default suite recorded once by each backend through `python -m harness
  record` (sglang_jax in its own process: one engine compile for all cases;
  the reference in the reference venv), both scoring both's completions, then
  every harness check (`harness.compare`) over the records;
- one "control" rollout (all workarounds on) for the batch API,
  get_per_token_logps on padded batches, and the control side of each compat
  probe;
- one engine per compat workaround, with only that workaround switched off,
  running the probe that must show its defect (background thread, one at a
  time, started at the beginning of the module).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from harness.records import SURFACE_VARIANTS
from harness.backends.sglang_jax import compat
from harness.backends.sglang_jax.engine import EngineCallError, EngineCrashed
from harness.backends.sglang_jax.rollout import (
    EngineOutputError,
    RolloutConfig,
    SglangJaxRollout,
    derive_seed,
)
from harness import paths
from harness.backends import registry
from harness.model import embedded
from harness.recorder import tokenize_suite
from harness.rundir import RunRecords
from harness.suite import load_suite

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/backends/tied.py

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "cases" / "default.yaml"
REF_PY = Path(os.environ.get("PARITY_REFERENCE_PYTHON") or registry.venv_python(registry.reference()))
ATOL = 1e-4
EOS = 1
ENGINE_FAILURES = (EngineCrashed, EngineCallError, EngineOutputError)
os.environ.pop(compat.ENV_OFF, None)  # every engine here says explicitly which workaround is off

MODEL_A, MODEL_B = embedded("A"), embedded("B")
SUITE_TEXT = SUITE.read_text()  # a snapshot: the suite is recorded and compared as it was at import
_SUITE = load_suite(SUITE)
#: measured figures; written as JSON to $PARITY_SGLANG_FIGURES when set
FIGURES: dict[str, float] = {}


def figure(name: str, value: float) -> None:
    FIGURES[name] = round(float(value), 9)
PROMPTS = tokenize_suite(_SUITE, MODEL_A)  # case id -> prompt ids
# a prompt whose top-10 is flat enough that the two top-p conventions keep different token sets
SAMPLING_PROMPTS = tokenize_suite(load_suite(ROOT / "cases" / "sampling.yaml"), MODEL_A)


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.pop(compat.ENV_OFF, None)  # the recording runs with every needed workaround on
    return env


def _record(python: Path | str, backend: str, out: Path, phase: str, log: Path, suite: Path) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run([str(python), "-m", "harness", "record", "--backend", backend, "--suite", str(suite),
                             "--out", str(out), "--phase", phase, "--run-id", "sglang-jax-test"],
                            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=_env(), timeout=900).returncode
    return rc, time.perf_counter() - t0, log.read_text()[-3000:]


# ============================================================================ compat probes
# Each probe drives one rollout and returns observations; EXPECT says what "defect visible" means.
GREEDY = {"max_new_tokens": 4, "temperature": 0.0}


def _probe_start(r: SglangJaxRollout) -> dict:
    return {"started": True, "lm_head_dtype": r.info["lm_head_dtype"]}


def _probe_greedy_plain(r: SglangJaxRollout) -> dict:
    res = r.generate_batch(input_ids=[PROMPTS["greedy-basic"][0]], sampling_params=GREEDY, return_logprob=False)
    return {"ids": res[0].samples[0].token_ids}


def _probe_greedy_logprob(r: SglangJaxRollout) -> dict:
    res = r.generate_batch(input_ids=PROMPTS["greedy-basic"][:2], sampling_params=GREEDY, return_logprob=True)
    return {"logprobs": [s.logprobs for p in res for s in p.samples]}


def _probe_top_logprobs(r: SglangJaxRollout) -> dict:
    res = r.generate_batch(input_ids=PROMPTS["greedy-basic"][:2], sampling_params=GREEDY, return_logprob=True,
                           logprob_start_len=0, top_logprobs_num=5)
    return {"top": [s.top_logprobs for p in res for s in p.samples]}


def _probe_prompt_logprobs(r: SglangJaxRollout) -> dict:
    res = r.generate_batch(input_ids=PROMPTS["greedy-basic"], sampling_params=GREEDY, return_logprob=True,
                           logprob_start_len=0)
    return {"prompt_logprobs": [p.prompt_logprobs for p in res]}


def _probe_top2_support(r: SglangJaxRollout) -> dict:
    """Seeded sampling at T=1 with top_k=2: every sampled token must be one of the step's top 2."""
    res = r.generate_batch(input_ids=PROMPTS["sample-n4"], sampling_params={
        "max_new_tokens": 12, "temperature": 1.0, "top_k": 2, "sampling_seed": 5, "ignore_eos": True},
        return_logprob=True, top_logprobs_num=2)
    outside = total = 0
    for p in res:
        for s in p.samples:
            for tok, top in zip(s.token_ids, s.top_logprobs):
                total += 1
                outside += tok not in top
    return {"outside_top2": outside, "total": total}


def _probe_topk_topp_support(r: SglangJaxRollout) -> dict:
    """Seeded sampling at T=1 with top_k=10, top_p=0.8: every sampled token must lie in the canonical
    support, computed here from the step's top-10 logprobs (renormalised, then the 0.8 mass cut)."""
    res = r.generate_batch(input_ids=SAMPLING_PROMPTS["dist-topk-topp"][:1], sampling_params={
        "max_new_tokens": 1, "temperature": 1.0, "top_k": 10, "top_p": 0.8, "sampling_seed": 7, "n": 64,
        "ignore_eos": True}, return_logprob=True, top_logprobs_num=10)
    outside = total = 0
    for p in res:
        for s in p.samples:
            for tok, top in zip(s.token_ids, s.top_logprobs):
                ranked = sorted(top.items(), key=lambda kv: -kv[1])
                probs = np.exp([lp for _, lp in ranked])
                before = (np.cumsum(probs) - probs) / probs.sum()
                support = {t for (t, _), b in zip(ranked, before) if b < 0.8}
                total += 1
                outside += tok not in support
    return {"outside_canonical": outside, "total": total}


def _probe_penalty(field: str, value) -> callable:
    """Greedy 10 tokens on the sampling suite's effect prompts, with and without `field`: the
    completions must differ (the suite's fx case shows where, against the reference)."""
    def probe(r: SglangJaxRollout) -> dict:
        prompts = SAMPLING_PROMPTS[f"fx-{field.replace('_', '-')}"]
        base = {"max_new_tokens": 10, "temperature": 0.0}
        plain = r.generate_batch(input_ids=prompts, sampling_params=base)
        with_it = r.generate_batch(input_ids=prompts, sampling_params={**base, field: value})
        return {"plain": [p.samples[0].token_ids for p in plain], "with": [p.samples[0].token_ids for p in with_it]}
    return probe


def _probe_unseeded_twice(r: SglangJaxRollout) -> dict:
    """One prompt (so one batch row: with a frozen key a row's noise depends on its batch position,
    and the scheduler may batch several prompts differently from call to call), called twice."""
    sp = {"max_new_tokens": 16, "temperature": 1.0, "ignore_eos": True}
    a = r.generate_batch(input_ids=PROMPTS["sample-n4"][:1], sampling_params=sp, return_logprob=False)
    b = r.generate_batch(input_ids=PROMPTS["sample-n4"][:1], sampling_params=sp, return_logprob=False)
    return {"first": [s.token_ids for p in a for s in p.samples], "second": [s.token_ids for p in b for s in p.samples]}


def _probe_eos(r: SglangJaxRollout) -> dict:
    out = {}
    try:
        res = r.generate_batch(input_ids=PROMPTS["greedy-eos"][:1], sampling_params=GREEDY, return_logprob=False)
        out["ids"] = res[0].samples[0].token_ids
        out["finish"] = res[0].samples[0].finish_reason
    except ENGINE_FAILURES as e:
        out["plain_error"] = f"{type(e).__name__}: {e}"
    try:
        res = r.generate_batch(input_ids=PROMPTS["greedy-eos"][:1], sampling_params=GREEDY, return_logprob=True)
        out["lp_ids"], out["logprobs"] = res[0].samples[0].token_ids, res[0].samples[0].logprobs
    except ENGINE_FAILURES as e:
        out["logprob_error"] = f"{type(e).__name__}: {e}"
    return out


def _probe_eos_at_limit(r: SglangJaxRollout) -> dict:
    """The greedy EOS completion again, with max_new_tokens exactly its length: EOS is the last allowed token."""
    full = r.generate_batch(input_ids=PROMPTS["greedy-eos"][:1], sampling_params={**GREEDY, "max_new_tokens": 16},
                            return_logprob=False)[0].samples[0].token_ids
    res = r.generate_batch(input_ids=PROMPTS["greedy-eos"][:1],
                           sampling_params={**GREEDY, "max_new_tokens": len(full)}, return_logprob=False)
    s = res[0].samples[0]
    return {"full": full, "ids": s.token_ids, "finish": s.finish_reason}


def _probe_last_vocab_id(r: SglangJaxRollout) -> dict:
    res = r.generate_batch(input_ids=PROMPTS["greedy-ids"][:1], sampling_params=GREEDY, return_logprob=True,
                           logprob_start_len=0)
    return {"prompt_logprobs": res[0].prompt_logprobs}


def _probe_n4(r: SglangJaxRollout) -> dict:
    res = r.generate_batch(input_ids=PROMPTS["sample-n4"][:1], sampling_params={
        "max_new_tokens": 12, "temperature": 1.0, "n": 4, "sampling_seed": 99}, return_logprob=True)
    return {"samples": [s.token_ids for s in res[0].samples]}


def _probe_swap(r: SglangJaxRollout) -> dict:
    info_b = r.update_params(MODEL_B.path)
    info_a = r.update_params(MODEL_A.path)
    return {"swaps": [info_b, info_a]}


def _probe_idle(r: SglangJaxRollout) -> dict:
    """After one call, the engine left alone: its scheduler's loops and its process's CPU per second."""
    _probe_greedy_plain(r)
    return r._engine_call("idle_load", seconds=2.0)


PROBES = {
    "flax_always_shard_variable_off": _probe_start,
    "flax_pytree_module_off": _probe_start,
    "min_p_filter_arity": _probe_greedy_plain,
    "sampler_logprobs_escape_jit": _probe_greedy_logprob,
    "top_logprobs_on_device": _probe_top_logprobs,
    "prefill_logprob_rows_padded": _probe_greedy_logprob,
    "lm_head_model_dtype": _probe_prompt_logprobs,
    "seeded_sampler_exact": _probe_top2_support,
    "top_p_renormalised": _probe_topk_topp_support,
    "logit_bias_applied": _probe_penalty("logit_bias", {"11": -100.0, "69": 4.0}),
    "repetition_penalty_applied": _probe_penalty("repetition_penalty", 1.3),
    "unseeded_key_advances": _probe_unseeded_twice,
    "flush_cache_direct": _probe_swap,
    "keep_stop_token": _probe_eos,
    "prompt_id_echo_unclipped": _probe_last_vocab_id,
    "n_as_seeded_requests": _probe_n4,
    "stop_before_length": _probe_eos_at_limit,
    "idle_scheduler_waits": _probe_idle,
}
#: unseeded sampling only exists with the engine's deterministic sampling off (tunix's default)
PROBE_ENGINE = {"unseeded_key_advances": {"enable_deterministic_sampling": False}}


def _run_probe(name: str, off: list[str], rollout: SglangJaxRollout | None = None) -> dict:
    t0 = time.perf_counter()
    own = rollout is None
    try:
        if own:
            # the probes read the engine's own (temperature-mode) logprobs
            rollout = SglangJaxRollout(model_path=MODEL_A.path, compat_off=off, engine_options=PROBE_ENGINE.get(name),
                                       logprob_mode="temperature")
    except Exception as e:  # noqa: BLE001 - the observation is the failure
        return {"start_error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}
    try:
        obs = PROBES[name](rollout)
    except Exception as e:  # noqa: BLE001
        obs = {"error": f"{type(e).__name__}: {e}"}
    finally:
        if own:
            rollout.close()
    obs["seconds"] = time.perf_counter() - t0
    return obs


@pytest.fixture(scope="module", autouse=True)
def _write_figures():
    yield
    if os.environ.get("PARITY_SGLANG_FIGURES"):
        Path(os.environ["PARITY_SGLANG_FIGURES"]).write_text(json.dumps(FIGURES, indent=1, sort_keys=True) + "\n")


_BG = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="compat-off")
_OFF_FUTURES: dict[str, concurrent.futures.Future] = {}


@pytest.fixture(scope="module", autouse=True)
def _start_compat_off_probes():
    """One engine per workaround with only it off, one at a time, behind everything else."""
    for name in compat.REGISTRY:
        _OFF_FUTURES[name] = _BG.submit(_run_probe, name, [name])
    _OFF_FUTURES["unseeded_key_advances:control"] = _BG.submit(_run_probe, "unseeded_key_advances", [])
    yield
    _BG.shutdown(wait=False, cancel_futures=True)


# ============================================================================ the recorded run
class Run:
    def __init__(self, path: Path, procs: dict, suite: Path):
        self.path, self.procs, self.suite = path, procs, suite
        recs = RunRecords.load(path)
        self.gen: dict = defaultdict(dict)  # backend -> (case, prompt, sample, variant) -> record
        self.score: dict = defaultdict(dict)  # (scorer, source) -> (case, prompt, sample) -> record, main variant
        self.errors = recs.errors
        self.sessions = defaultdict(list)
        for (backend, *key), r in recs.generation_index().items():
            if key[3] not in SURFACE_VARIANTS:  # the rollout-surface variants: checks of their own (checks/tunix.py)
                self.gen[backend][tuple(key)] = r
        for (scorer, source, *key), r in recs.score_index().items():
            if key[3] == "main":
                self.score[(scorer, source)][tuple(key[:3])] = r
        for r in recs.sessions:
            self.sessions[r.backend].append(r)

    def sg(self, case: str, variant: str = "main") -> dict:
        return {k[1:3]: r for k, r in self.gen["sglang_jax"].items() if k[0] == case and k[3] == variant}

    def ref(self, case: str, variant: str = "main") -> dict:
        return {k[1:3]: r for k, r in self.gen["reference"].items() if k[0] == case and k[3] == variant}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """sglang_jax (generate+score) || reference generate; then both score everything (in parallel)."""
    if not REF_PY.exists():
        pytest.fail(f"the reference venv is missing ({REF_PY}): run `nox -s reference` once (or set "
                    f"PARITY_REFERENCE_PYTHON)")
    base = tmp_path_factory.mktemp("sglang-jax-run")
    sdir, rdir = base / "sglang", base / "run"
    suite = base / "default.yaml"
    suite.write_text(SUITE_TEXT)
    procs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        fs = ex.submit(_record, sys.executable, "sglang_jax", sdir, "all", base / "sglang-all.log", suite)
        fr = ex.submit(_record, REF_PY, "reference", rdir, "generate", base / "ref-generate.log", suite)
        procs["sglang_jax all"], procs["reference generate"] = fs.result(), fr.result()
        for f in (sdir / "records").glob("sglang_jax.*.jsonl"):
            shutil.copy(f, rdir / "records" / f.name)
        fs = ex.submit(_record, sys.executable, "sglang_jax", rdir, "score", base / "sglang-score.log", suite)
        fr = ex.submit(_record, REF_PY, "reference", rdir, "score", base / "ref-score.log", suite)
        procs["sglang_jax score"], procs["reference score"] = fs.result(), fr.result()
    return Run(rdir, procs, suite)


@pytest.fixture(scope="module")
def control():
    """All workarounds on: the rollout as the harness uses it, in its own engine process."""
    with SglangJaxRollout(model_path=MODEL_A.path, logprob_mode="temperature") as r:  # the probes' engine view
        yield r


# ============================================================================ the recording
def test_recording_processes_succeeded(run):
    for what, (rc, seconds, tail) in run.procs.items():
        figure(f"{what} seconds", round(seconds, 1))
        assert rc == 0, f"`parity record` {what} exited {rc}:\n{tail}"
    assert not run.errors, [f"{e.backend} {e.phase} {e.key and e.key.case_id}: {e.reason}" for e in run.errors]


def test_session_records_the_compat_state(run):
    s = run.sessions["sglang_jax"][0]
    assert s.logprob_mode == "processed"  # the rollout's default (docs/sglang_jax.md)
    states = s.config["compat"]["workarounds"]
    assert set(states) == set(compat.REGISTRY)
    assert all(v == "on" for v in states.values()), states  # 0.0.2 needs every one of them
    assert s.config["lm_head_dtype"] == "float32"
    assert s.versions["sglang-jax"] == "0.0.2"


def test_every_harness_check_passes(run):
    from harness.compare import compare_run

    verdicts = compare_run(run.path, str(run.suite))
    bad = [f"{v.test_id}: {v.verdict}: {v.detail[:300]}" for v in verdicts if v.verdict in ("fail", "error")]
    figure("verdicts", len(verdicts))
    assert verdicts and not bad, "\n".join(bad)
    checked = {v.check for v in verdicts if v.verdict == "pass" and "sglang_jax" in v.backends}
    assert {"greedy_tokens", "prompt_logprobs", "completion_logprobs", "logprob_mode", "seed_determinism",
            "n_samples", "weight_update", "eos_policy", "replay", "batch_invariance"} <= checked


def test_greedy_tokens_equal_reference(run):
    n = 0
    for (case, p, j, variant), s in run.gen["sglang_jax"].items():
        if s.native_params.get("temperature") != 0.0:
            continue
        r = run.gen["reference"][(case, p, j, variant)]
        assert s.completion_ids == r.completion_ids, (case, p, variant)
        assert s.finish_reason == r.finish_reason, (case, p, variant)
        n += 1
    assert n >= 14


def test_prompt_logprobs_match_reference(run):
    worst = 0.0
    for key, s in run.gen["sglang_jax"].items():
        r = run.gen["reference"][key]
        assert s.prompt_logprobs[0] is None and len(s.prompt_logprobs) == len(s.prompt_ids)
        d = max(abs(a - b) for a, b in zip(s.prompt_logprobs[1:], r.prompt_logprobs[1:]))
        worst = max(worst, d)
    figure("prompt logprob max abs diff", worst)
    assert worst < ATOL


def test_completion_logprobs_match_reference_in_declared_mode(run):
    worst = 0.0
    scores = run.score[("reference", "sglang_jax")]
    for (case, p, j, variant), s in run.gen["sglang_jax"].items():
        if variant != "main":
            continue
        assert s.completion_logprobs is not None and len(s.completion_logprobs) == len(s.completion_ids)
        truth = scores[(case, p, j)].by_mode[s.logprob_mode]
        worst = max(worst, max(abs(a - b) for a, b in zip(s.completion_logprobs, truth)))
    figure("completion logprob max abs diff (temperature mode)", worst)
    assert worst < ATOL


def test_teacher_forced_scores_match_reference(run):
    worst, n = 0.0, 0
    for source in ("sglang_jax", "reference"):
        mine, truth = run.score[("sglang_jax", source)], run.score[("reference", source)]
        assert set(mine) == set(truth)
        for key, s in mine.items():
            assert s.completion_ids == truth[key].completion_ids
            worst = max([worst] + [abs(a - b) for a, b in zip(s.logprobs, truth[key].by_mode["raw"])])
            n += 1
    figure("score max abs diff (raw)", worst)
    assert n > 20 and worst < ATOL


def test_eos_is_included(run):
    for (p, _), s in run.sg("greedy-eos").items():
        assert s.completion_ids[-1] == EOS and s.finish_reason == "stop" and s.stop_reason is None
        assert len(s.completion_logprobs) == len(s.completion_ids)


def test_seeded_sampling_reproducible_across_calls(run):
    for case in ("sample-t08", "sample-topk-topp"):
        main, again = run.sg(case), run.sg(case, "repeat-1")
        assert main and {k: r.completion_ids for k, r in main.items()} == {k: r.completion_ids for k, r in again.items()}


def test_n4_gives_four_distinct_samples_in_order(run):
    got = run.sg("sample-n4")
    for p in range(len(PROMPTS["sample-n4"])):
        samples = [got[(p, j)].completion_ids for j in range(4)]
        assert len({tuple(s) for s in samples}) == 4, samples
    seeds = [got[(0, j)].native_params["sampling_seed"] for j in range(4)]  # each record: its own sample's seed
    assert seeds == [derive_seed(99, j, 4) for j in range(4)] and len(set(seeds)) == 4


def test_weight_update_to_b_and_back(run):
    for case, other in (("update-b", "A"), ("update-back-a", "B")):
        for key, s in run.sg(case).items():
            r = run.ref(case)[key]
            assert s.completion_ids == r.completion_ids, case
            truth = run.score[("reference", "sglang_jax")][(case, *key)]
            assert max(abs(a - b) for a, b in zip(s.completion_logprobs, truth.by_mode["raw"])) < ATOL
            stale = truth.other_weights[other]["raw"]
            assert max(abs(a - b) for a, b in zip(s.completion_logprobs, stale)) > 100 * ATOL, "stale weights"
    b = run.sg("update-b")[(0, 0)].completion_ids
    a = run.sg("update-back-a")[(0, 0)].completion_ids  # same prompt "The robot"
    assert a != b and a == run.sg("greedy-basic")[(0, 0)].completion_ids


def test_update_params_reaches_a_tied_output_head(tmp_path):
    """zoo:qwen3-gqa-tied (tied word embeddings, no lm_head.weight in the checkpoint): update to B and
    back, logprobs within float32 tolerance of the reference under the live set, far from the other's."""
    from tied import assert_update_reaches_the_head, record

    record(sys.executable, "sglang_jax", tmp_path, _env())
    record(REF_PY, "reference", tmp_path)
    live = assert_update_reaches_the_head(tmp_path, "sglang_jax")
    print(f"\ntied update, max |dlogp| vs the live set: {live}")


# ============================================================================ the rollout itself
def test_engine_loads_embedded_model(control):
    info = control.info
    assert info["architecture"] == ["Qwen3ForCausalLM"] and info["vocab_size"] == 384
    assert info["eos_token_ids"] == [EOS] and info["lm_head_dtype"] == "float32"
    assert control.pad_id() == 0 and control.eos_id() == EOS
    cache = paths.jax_cache_dir()  # the engine process reads the same environment (PARITY_JAX_CACHE)
    assert info["jax_compile_cache"] == (str(cache) if cache is not None else None)
    figure("engine import seconds", info["timings"]["import_s"])
    figure("engine start seconds", info["timings"]["engine_start_s"])


def test_get_per_token_logps_padded_batch_matches_reference(run, control):
    """Prompts of unequal length left-padded, completions of unequal length right-padded (tunix's layout)."""
    keys = [("greedy-basic", 0, 0), ("greedy-basic", 1, 0), ("greedy-eos", 0, 0), ("greedy-eos", 1, 0),
            ("sample-t08", 1, 0), ("update-back-a", 1, 0)]
    truth = run.score[("reference", "reference")]
    recs = [truth[k] for k in keys]
    P = max(len(r.prompt_ids) for r in recs)
    C = max(len(r.completion_ids) for r in recs) + 2
    pad = control.pad_id()
    prompts = np.full((len(recs), P), pad, np.int32)
    comps = np.full((len(recs), C), pad, np.int32)
    for i, r in enumerate(recs):
        prompts[i, P - len(r.prompt_ids):] = r.prompt_ids
        comps[i, :len(r.completion_ids)] = r.completion_ids
    assert len({len(r.prompt_ids) for r in recs}) > 2 and len({len(r.completion_ids) for r in recs}) > 2
    got = np.asarray(control.get_per_token_logps(prompts, comps))
    assert got.shape == (len(recs), C)
    worst = 0.0
    for i, r in enumerate(recs):
        n = len(r.completion_ids)
        worst = max(worst, float(np.max(np.abs(got[i, :n] - np.array(r.by_mode["raw"])))))
        assert np.all(got[i, n:] == 0.0)
    figure("get_per_token_logps max abs diff", worst)
    assert worst < ATOL
    # with a mask instead of the pad/EOS rule, and as ragged lists: the same numbers
    mask = (np.arange(C)[None, :] < np.array([len(r.completion_ids) for r in recs])[:, None]).astype(np.int32)
    assert np.allclose(np.asarray(control.get_per_token_logps(prompts, comps, mask)), got, atol=1e-6)
    ragged = control.score_batch([r.prompt_ids for r in recs], [r.completion_ids for r in recs])
    for i, s in enumerate(ragged):
        assert np.allclose(s.logprobs, got[i, :len(s.logprobs)], atol=1e-6)


def test_generate_batch_api(control):
    """Text prompts, one sampling dict per prompt, prompt/top/token-id logprobs, n, EOS included."""
    out = control.generate_batch(
        prompt=["The sun was warm and the grass was green .", "The robot"],
        sampling_params=[{"max_new_tokens": 6, "temperature": 0.0},
                         {"max_new_tokens": 5, "temperature": 0.9, "n": 3, "sampling_seed": 11, "ignore_eos": True}],
        return_logprob=True, logprob_start_len=0, top_logprobs_num=3, token_ids_logprob=[EOS, 3])
    assert [len(p.samples) for p in out] == [1, 3]
    eos, sampled = out[0].samples[0], out[1].samples
    assert eos.token_ids[-1] == EOS and eos.finish_reason == "stop" and len(eos.logprobs) == len(eos.token_ids)
    assert "<|endoftext|>" in eos.text
    for p in out:
        assert p.prompt_logprobs[0] is None and all(v is not None for v in p.prompt_logprobs[1:])
        assert len(p.prompt_logprobs) == len(p.prompt_ids) and p.prompt_top_logprobs[0] is None
        for s in p.samples:
            assert len(s.logprobs) == len(s.token_ids) == len(s.top_logprobs) == len(s.token_ids_logprobs)
            for tok, lp, top, tid in zip(s.token_ids, s.logprobs, s.top_logprobs, s.token_ids_logprobs):
                assert len(top) == 3 and set(tid) == {EOS, 3}
                if tok in top:
                    assert abs(top[tok] - lp) < 1e-6
                assert all(abs(tid[t] - top[t]) < 1e-6 for t in tid if t in top)
    assert [s.sample_index for s in sampled] == [0, 1, 2]
    assert len({tuple(s.token_ids) for s in sampled}) == 3 and all(len(s.token_ids) == 5 for s in sampled)
    assert [s.native_params["sampling_seed"] for s in sampled] == [derive_seed(11, j, 3) for j in range(3)]
    assert all(s.native_params["skip_special_tokens"] is False and s.native_params["no_stop_trim"] for s in sampled)


def test_seeded_sampling_independent_of_batch_position(control):
    sp = {"max_new_tokens": 10, "temperature": 1.0, "sampling_seed": 4321, "ignore_eos": True}
    target = PROMPTS["sample-t08"][1]
    alone = control.generate_batch(input_ids=[target], sampling_params=sp, return_logprob=True)[0].samples[0]
    batch = control.generate_batch(input_ids=PROMPTS["greedy-basic"] + [target], return_logprob=True,
                                   sampling_params=[{**sp, "sampling_seed": 7}] * 3 + [sp])[3].samples[0]
    assert alone.token_ids == batch.token_ids
    assert np.allclose(alone.logprobs, batch.logprobs, atol=ATOL)


def test_tunix_generate_contract(control):
    cfg = RolloutConfig(max_tokens_to_generate=5, temperature=0.0, top_p=None, top_k=None, max_prompt_length=12)
    out = control.generate(["The robot", "In the kitchen the cat was sleeping near the"], cfg)
    assert out.left_padded_prompt_tokens.shape == (2, 12) and out.logits is None
    row0 = out.left_padded_prompt_tokens[0]
    assert (row0[:-len(PROMPTS["greedy-basic"][0])] == control.pad_id()).all()
    assert list(row0[-len(PROMPTS["greedy-basic"][0]):]) == PROMPTS["greedy-basic"][0]
    assert out.tokens.shape == (2, 5) and [len(lp) for lp in out.logprobs] == [5, 5]
    assert all(isinstance(x, str) and "<|" not in x for x in out.text)
    assert control.model() is None  # no actor given; with one, a clone (never the actor itself)
    for m in ("generate", "get_per_token_logps", "update_params", "pad_id", "eos_id", "model"):
        assert callable(getattr(control, m))


def test_tunix_generate_repeated_prompts_with_one_seed_are_distinct(control):
    """RLCluster's GRPO repeats each prompt with one RolloutConfig.seed: the rows must differ."""
    cfg = RolloutConfig(max_tokens_to_generate=6, temperature=1.0, top_p=1.0, seed=3, max_prompt_length=8)
    a = control.generate(["The ship"] * 4, cfg)
    b = control.generate(["The ship"] * 4, cfg)
    assert len({tuple(r) for r in a.tokens}) == 4
    assert (a.tokens == b.tokens).all()
    c = control.generate(["The ship"], cfg, n=4)  # or n samples of one prompt
    assert c.tokens.shape == (4, 6) and len({tuple(r) for r in c.tokens}) == 4


def test_update_params_converts_tunix_qwen3_names(control):
    """RLCluster.sync_weights hands over tunix names and layouts; with no param_mapping / state_to_hf the
    rollout converts them itself: set B in tunix layout must give what set B from its directory gives."""
    from safetensors.numpy import load_file

    from harness.rl.weights import hf_to_tunix, looks_like_tunix

    hf = {}
    for f in sorted(Path(MODEL_B.path).glob("*.safetensors")):
        hf.update(load_file(str(f)))
    tunix = hf_to_tunix(hf, json.loads((Path(MODEL_B.path) / "config.json").read_text()))
    assert looks_like_tunix(tunix)
    ids = PROMPTS["greedy-basic"][:1]

    def greedy():
        return control.generate_batch(input_ids=ids, sampling_params={"max_new_tokens": 8, "temperature": 0.0}
                                      )[0].samples[0].token_ids

    a_before = greedy()
    control.update_params(tunix)
    b_tunix = greedy()
    control.update_params(MODEL_B.path)
    b_dir = greedy()
    control.update_params(MODEL_A.path)
    assert b_tunix == b_dir != a_before
    assert greedy() == a_before


# ============================================================================ compat workarounds
def _off(name: str) -> dict:
    return _OFF_FUTURES[name].result(timeout=900)


def _err(obs: dict) -> str:
    return obs.get("start_error") or obs.get("error") or ""


def test_compat_registry_is_complete():
    for name, w in compat.REGISTRY.items():
        assert name in PROBES, f"{name} has no probe"
        assert w.symptom_off and w.caught_by and w.defect
    assert compat.parse_off("all") == set(compat.REGISTRY)
    with pytest.raises(compat.CompatError, match="unknown"):
        compat.parse_off("no_such_fix")


def _control_probe(control, name):
    obs = _run_probe(name, [], rollout=control)
    assert not _err(obs), obs
    return obs


@pytest.mark.parametrize("name", ["flax_always_shard_variable_off", "flax_pytree_module_off"])
def test_compat_off_env(name):
    expect = {"flax_always_shard_variable_off": "auto mesh context",
              "flax_pytree_module_off": "Duplicate custom PyTreeDef"}[name]
    obs = _off(name)
    assert expect in obs.get("start_error", ""), obs


@pytest.mark.parametrize("name,expect", [
    ("min_p_filter_arity", "values to unpack"),
    ("sampler_logprobs_escape_jit", "NoneType"),
    ("top_logprobs_on_device", "ConcretizationTypeError"),
    ("prefill_logprob_rows_padded", "Temperature batch size"),
])
def test_compat_off_crashes(control, name, expect):
    obs = _off(name)
    assert expect in _err(obs), obs
    _control_probe(control, name)


def test_compat_off_lm_head_model_dtype(run, control):
    truth = [r.prompt_logprobs for _, r in sorted(run.ref("greedy-basic").items())]

    def worst(obs):
        return max(abs(a - b) for got, ref in zip(obs["prompt_logprobs"], truth) for a, b in zip(got[1:], ref[1:]))

    off, on = _off("lm_head_model_dtype"), _control_probe(control, "lm_head_model_dtype")
    assert not _err(off), off
    figure("prompt logprob max abs diff with bf16 lm_head", worst(off))
    assert worst(on) < ATOL < 10 * ATOL < worst(off)


def test_compat_off_seeded_sampler_exact(control):
    off, on = _off("seeded_sampler_exact"), _control_probe(control, "seeded_sampler_exact")
    assert on["outside_top2"] == 0 and on["total"] == 24
    assert off["outside_top2"] > off["total"] // 2, off


def test_compat_off_top_p_renormalised(control):
    off, on = _off("top_p_renormalised"), _control_probe(control, "top_p_renormalised")
    assert not _err(off), off
    assert on["total"] == off["total"] > 0
    figure("top_k 10 + top_p 0.8 draws outside the canonical support, workaround off", off["outside_canonical"])
    assert on["outside_canonical"] == 0, on
    assert off["outside_canonical"] > 0, off  # sglang-jax's own top-p keeps more tokens


@pytest.mark.parametrize("name", ["logit_bias_applied", "repetition_penalty_applied"])
def test_compat_off_penalties_applied(control, name):
    off, on = _off(name), _control_probe(control, name)
    assert not _err(off), off
    assert off["with"] == off["plain"], off  # accepted, validated, and ignored
    assert on["with"] != on["plain"], on
    assert on["plain"] == off["plain"]


def test_compat_off_unseeded_key_advances():
    off, on = _off("unseeded_key_advances"), _off("unseeded_key_advances:control")
    assert not _err(off) and not _err(on), (off, on)
    assert off["first"] == off["second"]
    assert on["first"] != on["second"]


def test_compat_off_flush_cache_direct(control):
    obs = _off("flush_cache_direct")
    assert "FlushCacheReqInput" in _err(obs), obs
    on = _control_probe(control, "flush_cache_direct")
    assert [s["jit"] for s in on["swaps"]] == ["leaves", "leaves"]
    figure("weight swap seconds (max of 2)", max(s["total_s"] for s in on["swaps"]))


def test_compat_off_keep_stop_token(control):
    off, on = _off("keep_stop_token"), _control_probe(control, "keep_stop_token")
    assert on["ids"][-1] == EOS and on["lp_ids"] == on["ids"] and len(on["logprobs"]) == len(on["ids"])
    assert off["finish"] == "stop" and EOS not in off["ids"]  # silently dropped
    assert "disagree" in off["logprob_error"]  # and refused where logprobs show it


def test_compat_off_prompt_id_echo_unclipped(control):
    off, on = _off("prompt_id_echo_unclipped"), _control_probe(control, "prompt_id_echo_unclipped")
    assert 383 in PROMPTS["greedy-ids"][0]
    assert "echoes prompt ids" in _err(off), off
    assert len(on["prompt_logprobs"]) == 4 and on["prompt_logprobs"][0] is None


def test_compat_off_n_as_seeded_requests(control):
    off, on = _off("n_as_seeded_requests"), _control_probe(control, "n_as_seeded_requests")
    assert not _err(off), off
    assert len(off["samples"]) == 4 and len({tuple(s) for s in off["samples"]}) == 1
    assert len(on["samples"]) == 4 and len({tuple(s) for s in on["samples"]}) == 4


def test_compat_off_idle_scheduler_waits(control):
    """Off, an idle scheduler loops without blocking; on, it waits on its sockets: at most one loop per
    IDLE_WAIT_MS (and a few around the call), and the engine's CPU is figured, not asserted."""
    off, on = _off("idle_scheduler_waits"), _control_probe(control, "idle_scheduler_waits")
    assert not _err(off), off
    figure("idle engine CPU s/s, workaround off", off["cpu_s_per_s"])
    figure("idle engine CPU s/s, workaround on", on["cpu_s_per_s"])
    figure("idle scheduler loops/s, workaround off", off["loops_per_s"])
    figure("idle scheduler loops/s, workaround on", on["loops_per_s"])
    assert on["loops_per_s"] <= 2 * 1000 / compat.IDLE_WAIT_MS, on
    assert off["loops_per_s"] > 20 * on["loops_per_s"], (off, on)


def test_compat_off_stop_before_length(control):
    off, on = _off("stop_before_length"), _control_probe(control, "stop_before_length")
    assert not _err(off), off
    assert on["full"] == off["full"] and on["full"][-1] == EOS  # the completion stops on EOS by itself
    assert on["ids"] == off["ids"] == on["full"]
    assert off["finish"] == "length", off  # the engine's own answer
    assert on["finish"] == "stop", on
