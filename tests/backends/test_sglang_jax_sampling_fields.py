"""sglang-jax's SamplingParams against the mapping table and the mapping (sglang-jax venv: nox -s sglang_jax_tests).

Fails loudly when the installed sglang-jax grows or loses a sampling field (or an Engine.generate
request argument) the table does not cover, or changes a default; checks that every mapped spec passes
sglang-jax's own validation and normalisation with the meaning the canonical spec gives it.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sgl_jax")
from hypothesis import example, given  # noqa: E402

from harness.backends.sglang_jax import sampling as SJ  # noqa: E402
from harness.sampling import mapping as M  # noqa: E402
from harness.backends.sglang_jax.sampling import sglang_jax_fields  # noqa: E402
from harness.sampling.introspect import load_snapshots  # noqa: E402
from harness.sampling.strategies import VOCAB, specs  # noqa: E402
from harness.sampling.table import coverage_problems  # noqa: E402
from harness.spec import SamplingSpec  # noqa: E402


def _params():
    from sgl_jax.srt.sampling import sampling_params as P

    return P


def test_table_covers_installed_sglang_jax() -> None:
    problems = coverage_problems(sglang_jax_fields())
    assert not problems, "the mapping table is out of date for the installed sglang-jax:\n" + "\n".join(problems)


def test_committed_snapshot_is_the_installed_sglang_jax() -> None:
    doc = sglang_jax_fields()
    assert json.loads(json.dumps(doc, sort_keys=True)) == load_snapshots()["sglang_jax"], (
        "harness/sampling/fields/sglang_jax.json is stale: run `python -m harness.sampling.introspect --engine "
        "sglang_jax --write` in this venv")


@given(specs())
@example(SamplingSpec(temperature=0.0, top_k=5))  # greedy: sglang-jax's top_k := 1, temperature := 1
@example(SamplingSpec(temperature=1.0, top_k=None))  # off: -1 -> TOP_K_ALL (0 would be rejected)
@example(SamplingSpec(temperature=1.0, repetition_penalty=2.0, logit_bias={383: 1.0}))
def test_sglang_jax_accepts_every_mapped_spec(s: SamplingSpec) -> None:
    P = _params()
    sent = SJ.to_sglang_jax(s)
    sp = P.SamplingParams(**sent)
    sp.verify(VOCAB)
    if s.greedy:
        assert sp.top_k == 1 and sp.temperature == 1.0
    else:
        assert sp.temperature == s.temperature and sp.top_p == s.top_p and sp.min_p == s.min_p
        assert sp.top_k == (P.TOP_K_ALL if s.top_k is None else s.top_k)
    assert sp.max_new_tokens == s.max_tokens and sp.min_new_tokens == s.min_tokens and sp.n == s.n
    assert (sp.stop_token_ids or set()) == set(s.stop_token_ids)
    assert sp.sampling_seed == s.seed
    assert {int(k): v for k, v in (sp.logit_bias or {}).items()} == dict(s.logit_bias)
    assert SJ.from_sglang_jax(sent, SJ.sglang_jax_request(s)) == s


def test_zero_top_k_is_rejected_by_sglang_jax() -> None:
    """Why the canonical spec has no top_k=0: sglang-jax rejects it (vLLM reads it as off)."""
    sp = _params().SamplingParams(top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        sp.verify(VOCAB)
