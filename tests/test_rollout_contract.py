"""Pure logic of the swap contract: the sglang-jax rollout's logprob modes, the documented seed rules."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from harness.backends.sglang_jax.rollout import PromptOutput, SampleOutput, SglangJaxRollout, derive_seed
from harness.processing import log_softmax, mode_logprobs
from harness.backends.seeds import documented_seed, row_seed, sample_seed
from harness.spec import SamplingSpec


def _sample(tl: list[np.ndarray], toks: list[int]) -> SampleOutput:
    return SampleOutput(prompt_index=0, sample_index=0, token_ids=toks, text="",
                        logprobs=[float(t[k]) for t, k in zip(tl, toks)],
                        top_logprobs=[dict(enumerate(t.tolist())) for t in tl], token_ids_logprobs=None,
                        finish_reason="length", stop_reason=None, native_params={})


@pytest.mark.parametrize("top_k,top_p,min_p", [(5, 1.0, 0.0), (None, 0.8, 0.0), (5, 0.8, 0.05), (None, 1.0, 0.1)])
def test_processed_mode_is_the_references_processed_logprob(top_k, top_p, min_p):
    """The rollout's processed logprobs, computed from the engine's temperature distribution, equal the
    exact processed values (harness.processing) of the same logits, and its top entries are processed too."""
    rng = np.random.default_rng(0)
    V, T = 12, 0.7
    logits = rng.normal(size=(4, V)) * 2
    spec = SamplingSpec(temperature=T, top_k=top_k, top_p=top_p, min_p=min_p)
    toks = [int(np.argmax(lg)) for lg in logits]
    smp = _sample([log_softmax(lg / T) for lg in logits], toks)
    pr = PromptOutput(prompt_ids=[1], prompt_logprobs=None, prompt_top_logprobs=None, samples=[smp])
    me = SimpleNamespace(logprob_mode="processed", vocab_size=V, _truncating=SglangJaxRollout._truncating)
    params = {"temperature": T, "top_k": -1 if top_k is None else top_k, "top_p": top_p, "min_p": min_p}
    SglangJaxRollout._to_mode(me, [pr], [params], [True], [2])
    want = [mode_logprobs(lg, spec)["processed"][k] for lg, k in zip(logits, toks)]
    assert np.max(np.abs(np.array(smp.logprobs) - want)) < 1e-12
    temperature = [mode_logprobs(lg, spec)["temperature"][k] for lg, k in zip(logits, toks)]
    assert np.max(np.abs(np.array(smp.logprobs) - temperature)) > 1e-3  # the conversion did something
    assert all(len(d) == 2 for d in smp.top_logprobs)


def test_temperature_mode_and_untruncated_processed_leave_the_engine_values():
    rng = np.random.default_rng(1)
    tl = [log_softmax(rng.normal(size=8)) for _ in range(3)]
    for mode, params in (("temperature", {"temperature": 0.9, "top_k": 3}), ("processed", {"temperature": 0.9})):
        smp = _sample(tl, [0, 1, 2])
        before = list(smp.logprobs)
        pr = PromptOutput(prompt_ids=[1], prompt_logprobs=None, prompt_top_logprobs=None, samples=[smp])
        me = SimpleNamespace(logprob_mode=mode, vocab_size=8, _truncating=SglangJaxRollout._truncating)
        SglangJaxRollout._to_mode(me, [pr], [params], [True], [0])
        assert smp.logprobs == before


@pytest.mark.parametrize("seed", [0, 5, 99, 2**31 - 1, 2**40])
def test_documented_rules_are_what_the_clean_rollouts_do(seed):
    """harness/backends/seeds.py states the rules; the unmodified rollouts follow them (a rollout that does not
    fails seed_rule and params_sent with real engines)."""
    from harness.backends.tunix_contract import row_seed as rule

    for j in range(4):
        assert sample_seed("sglang_jax", seed, j, 4) == derive_seed(seed, j, 4)
        assert documented_seed("sglang_jax", "rich", seed, 0, j, 4, 2) == derive_seed(seed, j, 4)
    assert sample_seed("sglang_jax", seed, 0, 1) == derive_seed(seed, 0, 1)
    for i in range(3):
        assert row_seed("vllm", seed, i, 3) == row_seed("sglang_jax", seed, i, 3) == rule(seed, i, 3)
    assert len({row_seed("vllm", seed, i, 3) for i in range(3)}) == 3  # a GRPO group's rows differ
    assert sample_seed("vllm", seed, 2, 4) == seed + 2
