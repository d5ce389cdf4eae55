"""sampling_distribution, sampling_effects and the mapping verdicts on synthetic runs built here: an exact
engine passes, each defect shape fails with the verdict naming it, and the table lands in the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.checks.data import RunData
from harness.compare import compare_data, compare_run
from harness.processing import apply_penalties, log_softmax, mode_logprobs
from harness.records import CaseKey, GenerationRecord, RecordWriter, ScoreRecord, SessionRecord, records_path
from harness.backends.sglang_jax.sampling import sglang_jax_processed_logits
from harness.sampling.expect import NEUTRAL, borderline_tokens
from harness.spec import SamplingSpec
from harness.suite import load_suite

V = 64
EOS = 1


def _logits(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2.5, V)


class FakeRef:
    """Stands in for ReferenceRunner in expect.py: a fixed logit table per prefix length."""

    _eos = {EOS}

    def logits(self, ids):
        return np.stack([_logits(1000 + len(ids[: i + 1]) * 7 + ids[i]) for i in range(len(ids))])


SUITE = """
suite: t
cases:
  - id: dist
    prompts: [{ids: [5, 6]}]
    sampling: {temperature: 1.0, top_k: 8, top_p: 0.8, max_tokens: 1, n: N, seed: 3, top_logprobs: 0}
    checks: [sampling_distribution]
  - id: unseeded
    prompts: [{ids: [7]}]
    sampling: {temperature: 1.0, max_tokens: 1, n: 700, top_logprobs: 0}
    checks: [sampling_distribution]
    repeats: 2
  - id: fx
    prompts: [{ids: [5, 6]}, {ids: [9]}]
    sampling: {temperature: 0, max_tokens: 6, repetition_penalty: 1.8, top_logprobs: 1}
    checks: [sampling_effects]
"""


def _session(backend, phase, **cfg):
    return SessionRecord(run_id="r", backend=backend, phase=phase, versions=cfg.pop("versions", {}), device="cpu",
                         model={}, config=cfg, started_at=0.0)


def _key(case, i, j=0, variant="main"):
    return CaseKey(suite="t", case_id=case.id, case_hash=case.content_hash(), prompt_index=i, sample_index=j,
                   variant=variant)


def _gen(backend, case, i, j, ids, prompt, variant="main", finish="length"):
    return GenerationRecord(run_id="r", backend=backend, phase="generate", key=_key(case, i, j, variant),
                            model_hash="m", prompt_ids=prompt, completion_ids=ids, completion_logprobs=None,
                            logprob_mode="raw", finish_reason=finish)


def _greedy(spec: SamplingSpec, prompt: list[int], ignore: str | None = None) -> tuple[list[int], str]:
    sp = spec.model_copy(update={ignore: NEUTRAL[ignore]}) if ignore else spec
    ref, out = FakeRef(), []
    for _ in range(spec.max_tokens):
        x = apply_penalties(ref.logits(prompt + out)[-1], sp, prompt, out)
        out.append(int(np.argmax(x)))
        if out[-1] == EOS:
            return out, "stop"
    return out, "length"


def build(tmp_path: Path, *, n: int = 1500, sampler: str = "exact", frozen: bool = False,
          fx_ignores: str | None = None, engine: str = "vllm", versions: dict | None = None) -> Path:
    from harness.sampling.expect import score_extras

    (tmp_path / "suite.yaml").write_text(SUITE.replace("n: N", f"n: {n}"))
    suite = load_suite(tmp_path / "suite.yaml")
    run = tmp_path / "run"
    rng = np.random.default_rng(11)
    ref = FakeRef()
    gens: dict[str, list] = {"reference": [], engine: []}
    for case in suite.cases:
        spec = case.sampling
        for i, pr in enumerate(case.prompts):
            prompt = list(pr.ids)
            if case.id == "fx":
                for b in gens:
                    ids, fin = _greedy(spec, prompt, fx_ignores if b == engine else None)
                    gens[b].append(_gen(b, case, i, 0, ids, prompt, finish=fin))
                continue
            pen = apply_penalties(ref.logits(prompt)[-1], spec, prompt, [])
            p_true = np.exp(mode_logprobs(pen, spec, pen)["processed"])
            for b in gens:
                if b == engine and sampler == "uniform":
                    p = np.full(V, 1 / V)
                elif b == engine and sampler == "sglang":
                    p = np.exp(log_softmax(sglang_jax_processed_logits(pen, spec)))
                elif b == engine and sampler == "no_top_k":  # a rollout that does not send top_k
                    p = np.exp(mode_logprobs(pen, spec.model_copy(update={"top_k": None}), pen)["processed"])
                else:
                    p = p_true
                for variant in ["main"] + [f"repeat-{r}" for r in range(1, case.repeats)]:
                    if variant != "main" and b == engine and frozen:
                        draws = [g.completion_ids[0] for g in gens[b] if g.key.case_id == case.id
                                 and g.key.variant == "main"]
                    else:
                        draws = rng.choice(V, spec.n, p=p / p.sum()).tolist()
                    gens[b] += [_gen(b, case, i, j, [int(t)], prompt, variant) for j, t in enumerate(draws)]
    for b, recs in gens.items():
        with RecordWriter(records_path(run, b, "generate")) as w:
            cfg = {"engine_kwargs": {"enable_deterministic_sampling": True}} if b == "sglang_jax" else {}
            w.write(_session(b, "generate", versions=(versions or {}) if b != "reference" else {}, **cfg))
            w.write_many(recs)
    with RecordWriter(records_path(run, "reference", "score")) as w:
        w.write(_session("reference", "score"))
        for case in suite.cases:
            for src, recs in gens.items():
                batch = [g for g in recs if g.key.case_id == case.id and g.key.variant == "main"]
                from harness.backends.base import Scored

                scored = [Scored(logprobs=[0.0] * len(g.completion_ids)) for g in batch]
                score_extras(ref, case, batch, scored)
                w.write_many([ScoreRecord(run_id="r", backend="reference", phase="score", key=g.key, model_hash="m",
                                          source_backend=src, prompt_ids=g.prompt_ids, completion_ids=g.completion_ids,
                                          logprobs=s.logprobs, logprob_mode="raw", by_mode=s.by_mode,
                                          distribution=s.distribution, effects=s.effects, sequence=s.sequence)
                              for g, s in zip(batch, scored)])
    (run / "run.json").write_text(json.dumps({"suite": str(tmp_path / "suite.yaml"), "backends": list(gens)}))
    return run


def _verdicts(run: Path, check: str, backend: str, case: str | None = None) -> list:
    ctx = RunData.load(run)
    return [v for v in compare_data(ctx) if v.check == check and v.backends == [backend]
            and (case is None or v.case == case)]


def test_exact_engine_passes_with_power_stated(tmp_path):
    run = build(tmp_path)
    for b in ("reference", "vllm"):
        (v,) = _verdicts(run, "sampling_distribution", b, "dist")
        assert v.verdict == "pass", v.detail
        assert "power" in v.detail and v.data["prompts"][0]["power"] >= 0.95 and v.data["prompts"][0]["n"] == 1500
        vs = _verdicts(run, "sampling_distribution", b, "unseeded")
        assert [x.verdict for x in vs] == ["pass", "pass"], [x.detail for x in vs]
        assert {x.metric for x in vs} == {"p_value", "repeat_independence_p"}


def test_uniform_sampler_fails_on_masked_tokens(tmp_path):
    (v,) = _verdicts(build(tmp_path, sampler="uniform"), "sampling_distribution", "vllm", "dist")
    assert v.verdict == "fail" and "masked tokens" in v.detail and v.value == 0.0


def test_sglang_top_p_convention_is_named(tmp_path):
    run = build(tmp_path, sampler="sglang", engine="sglang_jax")
    (v,) = _verdicts(run, "sampling_distribution", "sglang_jax", "dist")
    tv = v.data["prompts"][0]["sglang_jax_semantics"]["tv_between_semantics"]
    assert tv > 0.1  # this fake distribution makes the two conventions differ
    assert v.verdict == "fail" and "follows sglang-jax's top-p convention" in v.detail


def test_a_dropped_field_is_named_as_the_best_explanation(tmp_path):
    (v,) = _verdicts(build(tmp_path, sampler="no_top_k"), "sampling_distribution", "vllm", "dist")
    fits = v.data["prompts"][0]["explained_by"]
    assert v.verdict == "fail" and fits and fits[0]["explanation"] == "top_k not applied", (v.detail, fits)
    assert "top_k not applied" in v.detail and "top-p convention" not in v.detail.split(" — ")[0]


def test_underpowered_case_is_an_error_not_a_pass(tmp_path):
    (v,) = _verdicts(build(tmp_path, n=40), "sampling_distribution", "vllm", "dist")
    assert v.verdict == "error" and "underpowered" in v.detail and "needs N>=" in v.detail


def test_frozen_prng_key_fails_independence(tmp_path):
    vs = _verdicts(build(tmp_path, frozen=True), "sampling_distribution", "vllm", "unseeded")
    ind = [v for v in vs if v.metric == "repeat_independence_p"][0]
    assert ind.verdict == "fail" and "700/700" in ind.detail


def test_effects_pass_and_name_what_they_exercise(tmp_path):
    (v,) = _verdicts(build(tmp_path), "sampling_effects", "vllm", "fx")
    assert v.verdict == "pass", v.detail
    assert "repetition_penalty" in v.data["exercised"]


def test_ignored_field_fails_as_if_not_set(tmp_path):
    run = build(tmp_path, fx_ignores="repetition_penalty")
    (v,) = _verdicts(run, "sampling_effects", "vllm", "fx")
    assert v.verdict == "fail" and "no effect of repetition_penalty" in v.detail
    (r,) = _verdicts(run, "sampling_effects", "reference", "fx")
    assert r.verdict == "pass"


def test_mapping_verdict_and_table_in_the_run(tmp_path):
    run = build(tmp_path, engine="sglang_jax", versions={"sglang-jax": "0.0.2"})
    verdicts = compare_run(run)
    m = [v for v in verdicts if v.check == "sampling_mapping"]
    assert [(v.case, v.backends, v.verdict) for v in m] == [("fx", ["sglang_jax"], "fail")]
    assert "repetition_penalty" in m[0].detail
    doc = json.loads((run / "sampling_table.json").read_text())
    cols = ["canonical", "vllm_field", "vllm_default", "sglang_field", "sglang_default", "tunix_field", "conversion",
            "status", "reason"]
    assert all(set(cols) <= set(r) for r in doc["rows"])
    assert doc["coverage"]["design"]["missing"] == []
    assert any(r["canonical"] == "top_p (case dist)" for r in doc["rows"])  # the convention note, per case


def test_borderline_tokens_are_those_near_a_threshold():
    x = np.log(np.array([0.5, 0.3, 0.2]))
    # cumulative mass before token 2 is 0.8: top_p 0.8 keeps it under neither rounding
    assert borderline_tokens(x, SamplingSpec(temperature=1.0, top_p=0.8)) == [2]
    assert borderline_tokens(x, SamplingSpec(temperature=1.0, top_p=0.6)) == []


@pytest.mark.parametrize("spec", [SamplingSpec(temperature=1.0, top_k=3), SamplingSpec(temperature=0.7, top_p=0.7),
                                  SamplingSpec(temperature=1.0, min_p=0.1)])
def test_sglang_semantics_equal_canonical_for_single_filters(spec):
    x = _logits(3)
    a = log_softmax(sglang_jax_processed_logits(x, spec))
    b = mode_logprobs(x, spec)["processed"]
    assert np.allclose(np.exp(a), np.exp(b), atol=1e-12)
