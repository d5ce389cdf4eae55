"""The canonical spec's mapping to vLLM, sglang-jax and tunix: invariants, round-trips, validation.

Hypothesis profiles (conftest.py): dev fast, ci derandomized. Every regression found is an @example.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from harness.backends import vllm_sampling as V
from harness.backends.sglang_jax import sampling as SJ
from harness.sampling import mapping as M
from harness.sampling.strategies import invalid_fields, specs
from harness.spec import SamplingSpec

GREEDY = SamplingSpec(temperature=0.0)


def _meaningful(s: SamplingSpec) -> dict:
    """What a spec means: greedy ignores top_p, top_k, min_p."""
    d = s.canonical()
    if s.greedy:
        d.update(top_p=1.0, top_k=None, min_p=0.0)
    return d


# ------------------------------------------------------------------------------- invariants
@given(specs())
@example(GREEDY)
@example(SamplingSpec(temperature=0.0, top_p=0.5, top_k=3, min_p=0.2))  # greedy ignores the filters everywhere
def test_greedy_maps_to_each_engines_greedy(s: SamplingSpec) -> None:
    v, g = V.to_vllm(s), SJ.to_sglang_jax(s)
    if s.greedy:
        assert v["temperature"] < V.VLLM_GREEDY_BELOW
        assert g["temperature"] < SJ.SGLANG_GREEDY_BELOW
        for engine in ("vllm", "sglang_jax"):
            t = M.to_tunix(s, engine)
            assert t["temperature"] == 0.0 and t["top_p"] is None  # tunix: T=0 with top_p 1.0 divides by zero
    else:
        # never in a range an engine would reinterpret (vLLM raises 0<T<0.01 to 0.01, sglang-jax: <1e-6 greedy)
        assert V.VLLM_MIN_TEMPERATURE <= v["temperature"] <= V.VLLM_MAX_TEMPERATURE
        assert g["temperature"] >= SJ.SGLANG_GREEDY_BELOW


@given(specs())
@example(SamplingSpec(temperature=1.0, top_k=None))
@example(SamplingSpec(temperature=1.0, top_k=1))
def test_top_k_off_is_each_engines_off(s: SamplingSpec) -> None:
    v, g = V.to_vllm(s), SJ.to_sglang_jax(s)
    tv, tg = M.to_tunix(s, "vllm"), M.to_tunix(s, "sglang_jax")
    if s.top_k is None:
        assert v["top_k"] == 0 and g["top_k"] == -1
        # tunix: None would mean "unset" (generation_config decides): the rollout engine's explicit off
        assert tv["top_k"] == 0 and tg["top_k"] == -1
    else:
        assert v["top_k"] == g["top_k"] == tv["top_k"] == tg["top_k"] == s.top_k >= 1


@given(specs())
@example(SamplingSpec(temperature=1.0, seed=0))
@example(SamplingSpec(temperature=1.0, seed=2**40))  # > 31 bits: the sglang-jax rollout hashes it down
def test_seed_field_and_deterministic_mode(s: SamplingSpec) -> None:
    v, g = V.to_vllm(s), SJ.to_sglang_jax(s)
    assert v["seed"] == s.seed
    assert g.get("sampling_seed") == s.seed and (("sampling_seed" in g) == (s.seed is not None))
    tg = M.to_tunix(s, "sglang_jax")
    assert tg["rollout_sglang_jax_enable_deterministic_sampling"] == (s.seed is not None)
    # a seed the engine would ignore is an explicit issue, never silent
    ignored = [i for i in M.issues(s, "sglang_jax", deterministic=False) if i.field == "seed"]
    assert bool(ignored) == (s.seed is not None and not s.greedy)


@given(specs())
@example(SamplingSpec(logit_bias={0: -100.0, 383: 100.0}))
def test_logit_bias_key_types(s: SamplingSpec) -> None:
    v, g = V.to_vllm(s), SJ.to_sglang_jax(s)
    if not s.logit_bias:
        assert v["logit_bias"] is None and "logit_bias" not in g
        return
    assert all(type(k) is int for k in v["logit_bias"])
    assert all(type(k) is str for k in g["logit_bias"])
    assert {int(k): b for k, b in g["logit_bias"].items()} == v["logit_bias"] == dict(s.logit_bias)


@given(specs())
def test_max_tokens_always_explicit(s: SamplingSpec) -> None:
    assert V.to_vllm(s)["max_tokens"] == SJ.to_sglang_jax(s)["max_new_tokens"] == s.max_tokens
    assert M.to_tunix(s, "vllm")["max_tokens_to_generate"] == s.max_tokens


# ------------------------------------------------------------------------------- round trips
@given(specs())
@example(SamplingSpec(temperature=0.01))
@example(SamplingSpec(temperature=1.0, top_logprobs=0, logit_bias={}))
def test_round_trip_vllm(s: SamplingSpec) -> None:
    assert V.from_vllm(V.to_vllm(s)) == s


@given(specs())
@example(SamplingSpec(temperature=1.0, top_k=None, seed=None, stop_token_ids=()))
def test_round_trip_sglang_jax(s: SamplingSpec) -> None:
    assert SJ.from_sglang_jax(SJ.to_sglang_jax(s), SJ.sglang_jax_request(s)) == s


@given(specs(), st.sampled_from(["vllm", "sglang_jax"]))
@example(SamplingSpec(temperature=0.0, top_p=0.3), "vllm")  # greedy: top_p None in tunix, meaning unchanged
@example(SamplingSpec(temperature=1.0, min_p=0.1), "sglang_jax")  # dropped for the sglang-jax rollout: an issue
def test_tunix_loses_only_what_issues_name(s: SamplingSpec, engine: str) -> None:
    """Sending a spec never silently drops a field: what the tunix mapping loses, issues() names."""
    back = M.from_tunix(M.to_tunix(s, engine), engine)
    named = {i.field for i in M.issues(s, f"tunix/{engine}")}
    got, want = _meaningful(back), _meaningful(s)
    lost = {k for k in want if got[k] != want[k]}
    # n lives outside RolloutConfig (a generate kwarg), return_logprobs is a bool (named as top_logprobs)
    assert lost <= named | {"n", "top_logprobs"}, (lost, named)
    if engine == "vllm":
        assert lost <= {"n", "top_logprobs"}


@given(specs())
def test_no_silent_drop_on_recorded_engines(s: SamplingSpec) -> None:
    """vLLM and sglang-jax carry every canonical field; what they ignore is an explicit issue."""
    assert V.from_vllm(V.to_vllm(s)) == s and M.issues(s, "vllm") == []
    fields = {i.field for i in M.issues(s, "sglang_jax", version="0.0.2")}
    assert ("repetition_penalty" in fields) == (s.repetition_penalty != 1.0)
    assert ("logit_bias" in fields) == bool(s.logit_bias)
    assert ("top_p" in fields) == (not s.greedy and s.top_p < 1.0 and (s.top_k is not None or s.min_p > 0))
    assert M.issues(s, "sglang_jax", version="0.0.3") == [i for i in M.issues(s, "sglang_jax", version="0.0.3")
                                                          if i.field in ("top_p", "seed")]


# ------------------------------------------------------------------------------- validation
@given(invalid_fields)
@example(("temperature", 0.005))  # vLLM raises it to 0.01, sglang-jax samples at it: ambiguous
@example(("temperature", 2.5))  # vLLM rejects > 2
@example(("top_k", 0))  # vLLM: off, sglang-jax: rejected
@example(("top_k", -1))  # vLLM and sglang-jax: off, tunix: rejected
@example(("logit_bias", {5: 150.0}))  # vLLM's from_optional clamps to 100
@example(("repetition_penalty", 2.5))  # sglang-jax rejects > 2
def test_invalid_values_rejected(case: tuple) -> None:
    field, value = case
    with pytest.raises(ValidationError):
        SamplingSpec(**{"temperature": 1.0, field: value})


def test_inconsistent_combinations_rejected() -> None:
    with pytest.raises(ValidationError, match="min_tokens"):
        SamplingSpec(max_tokens=2, min_tokens=3)
    with pytest.raises(ValidationError, match="n > 1"):
        SamplingSpec(temperature=0.0, n=2)


def test_from_engine_dicts_refuse_what_has_no_canonical_meaning() -> None:
    with pytest.raises(M.MappingError, match="raises it"):
        V.from_vllm({"temperature": 0.005})
    with pytest.raises(M.MappingError, match="no canonical counterpart"):
        SJ.from_sglang_jax({"regex": "a+"})
    assert V.from_vllm({"temperature": 1.0, "top_k": -1, "seed": -1}) == SamplingSpec(temperature=1.0, top_k=None,
                                                                                       top_logprobs=0)


def test_generation_config_defaults_that_tunix_would_apply() -> None:
    gen = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "repetition_penalty": 1.05}
    assert M.generation_config_issues(gen, "vllm") == []
    assert M.generation_config_issues(gen, "sglang_jax") == []
    named = {i.field for i in M.generation_config_issues(gen, "tunix/sglang_jax")}
    assert named == {"min_p", "repetition_penalty"}
    # the vLLM rollout mapping overrides them explicitly, neutral values included
    kw = M.to_tunix(SamplingSpec(temperature=1.0), "vllm")
    assert kw["rollout_vllm_sampling_kwargs"]["min_p"] == 0.0
    assert kw["rollout_vllm_sampling_kwargs"]["repetition_penalty"] == 1.0


@given(specs())
def test_sglang_penalty_workarounds_clear_only_their_issue(s: SamplingSpec) -> None:
    """With SglangJaxRollout's penalizer workarounds on (as the session records them), logit_bias and
    repetition_penalty are honoured: no issue for them, every other issue unchanged."""
    on = {"logit_bias_applied": "on", "repetition_penalty_applied": "on"}
    off = {k: "off" for k in on}
    fields = lambda ws: {i.field for i in M.issues(s, "sglang_jax", version="0.0.2", workarounds=ws)}  # noqa: E731
    assert fields(off) == fields(None)
    assert fields(on) == fields(off) - {"logit_bias", "repetition_penalty"}
    assert ("logit_bias" in fields(off)) == bool(s.logit_bias)
    assert ("repetition_penalty" in fields(off)) == (s.repetition_penalty != 1.0)


# ------------------------------------------------------------------------------- generated from the table
def test_every_spec_field_is_one_table_row_and_every_engine_sends_it_or_says_why() -> None:
    """The mapping is generated from table.ROWS: a spec field without a row (or with two) would map nowhere."""
    from harness.sampling import table

    rows = [r.canonical for r in table.ROWS if r.canonical in SamplingSpec.model_fields]
    assert sorted(rows) == sorted(SamplingSpec.model_fields), "one table row per SamplingSpec field"
    for engine, d in M.dialects().items():
        for row in table.ROWS:
            side = getattr(row, d.column)
            if row.canonical in SamplingSpec.model_fields and not side.fields:
                # not sent: a status that says so (one-sided / converted by another route), with the reason
                assert side.status and (side.note or row.reason), (engine, row.canonical)
        assert set(d.to) | set(d.back) <= set(SamplingSpec.model_fields), engine  # converters name spec fields


@given(specs())
def test_a_field_the_table_says_is_sent_is_sent(s: SamplingSpec) -> None:
    """Every engine column's sent fields reach the engine (None-valued where the spec leaves them unset)."""
    sent = {k for k in M.to_engine(s, "vllm")}
    assert sent == set(M.native_fields(M.dialect("vllm")))
    g = M.to_engine(s, "sglang_jax")
    optional = {"stop_token_ids", "logit_bias", "sampling_seed"}  # not sent when empty (the dialect's OMIT)
    assert set(M.native_fields(M.dialect("sglang_jax"))) - optional <= set(g) <= set(M.native_fields(M.dialect("sglang_jax")))


# a value other than the default for every spec field but temperature (a new field must say its own)
_SET = {"max_tokens": 5, "min_tokens": 2, "top_p": 0.5, "top_k": 2, "min_p": 0.3, "n": 2, "seed": 3,
        "stop_token_ids": (1,), "ignore_eos": True, "repetition_penalty": 1.5, "presence_penalty": 1.0,
        "frequency_penalty": 1.0, "logit_bias": {0: 5.0}, "top_logprobs": 2}


def test_a_rows_acts_is_what_the_reference_does_with_the_field() -> None:
    """table.acting (what the checks read to treat fields by kind) against harness/processing.py: a `filter`
    field truncates the processed distribution, a `logits` field changes the penalised logits, and no other
    field changes either."""
    import numpy as np

    from harness.processing import apply_penalties, processed_logits
    from harness.sampling.table import acting

    assert set(_SET) == set(SamplingSpec.model_fields) - {"temperature"}
    logits = np.linspace(-2.0, 2.0, 8)
    base = SamplingSpec(temperature=1.0)
    for f, value in _SET.items():
        spec = base.model_copy(update={f: value})
        truncates = not np.array_equal(processed_logits(logits, spec), processed_logits(logits, base))
        penalises = not np.array_equal(apply_penalties(logits, spec, [0, 3], [3]),
                                       apply_penalties(logits, base, [0, 3], [3]))
        assert truncates == (f in acting("filter")), f
        assert penalises == (f in acting("logits")), f
