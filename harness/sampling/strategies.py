"""Hypothesis strategies over the canonical SamplingSpec (valid and invalid), shared by the driver's
tests and the engine venvs' tests. Imported only by tests (hypothesis is a test dependency)."""

from __future__ import annotations

from hypothesis import strategies as st

from harness.spec import SamplingSpec

VOCAB = 384  # the embedded tiny model's vocabulary (engine-side validation of token ids)

temperatures = st.one_of(st.just(0.0), st.floats(0.01, 2.0, allow_nan=False), st.sampled_from([0.01, 1.0, 2.0]))
token_ids = st.integers(0, VOCAB - 1)


@st.composite
def specs(draw, *, greedy: bool | None = None) -> SamplingSpec:
    t = 0.0 if greedy else draw(temperatures if greedy is None else st.floats(0.01, 2.0, allow_nan=False))
    max_tokens = draw(st.integers(1, 4096))
    return SamplingSpec(
        temperature=t,
        max_tokens=max_tokens,
        min_tokens=draw(st.integers(0, min(max_tokens, 64))),
        top_p=draw(st.one_of(st.just(1.0), st.floats(0.0, 1.0, exclude_min=True, allow_nan=False))),
        top_k=draw(st.one_of(st.none(), st.integers(1, 1000))),
        min_p=draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0, exclude_max=True, allow_nan=False))),
        n=1 if t == 0.0 else draw(st.integers(1, 8)),
        seed=draw(st.one_of(st.none(), st.integers(0, 2**31 - 1), st.integers(2**31, 2**63 - 1))),
        stop_token_ids=tuple(draw(st.lists(token_ids, max_size=4, unique=True))),
        ignore_eos=draw(st.booleans()),
        repetition_penalty=draw(st.one_of(st.just(1.0), st.floats(0.0, 2.0, exclude_min=True, allow_nan=False))),
        presence_penalty=draw(st.one_of(st.just(0.0), st.floats(-2.0, 2.0, allow_nan=False))),
        frequency_penalty=draw(st.one_of(st.just(0.0), st.floats(-2.0, 2.0, allow_nan=False))),
        logit_bias=draw(st.dictionaries(token_ids, st.floats(-100.0, 100.0, allow_nan=False), max_size=4)),
        top_logprobs=draw(st.integers(0, 20)),
    )


# one invalid field at a time: (field, value) pairs the canonical spec must reject
invalid_fields = st.one_of(
    st.tuples(st.just("temperature"), st.one_of(st.floats(max_value=0.0, exclude_max=True, allow_nan=False),
                                                 st.floats(0.0, 0.01, exclude_min=True, exclude_max=True),
                                                 st.floats(2.0, 1e6, exclude_min=True))),
    st.tuples(st.just("top_p"), st.one_of(st.floats(max_value=0.0, allow_nan=False),
                                          st.floats(1.0, 1e6, exclude_min=True))),
    st.tuples(st.just("top_k"), st.integers(-(2**31), 0)),
    st.tuples(st.just("min_p"), st.one_of(st.floats(max_value=0.0, exclude_max=True, allow_nan=False),
                                          st.floats(1.0, 1e6))),
    st.tuples(st.just("max_tokens"), st.integers(-1000, 0)),
    st.tuples(st.just("min_tokens"), st.integers(-1000, -1)),
    st.tuples(st.just("n"), st.integers(-10, 0)),
    st.tuples(st.just("seed"), st.integers(-(2**63), -1)),
    st.tuples(st.just("repetition_penalty"), st.one_of(st.floats(max_value=0.0, allow_nan=False),
                                                       st.floats(2.0, 1e6, exclude_min=True))),
    st.tuples(st.sampled_from(["presence_penalty", "frequency_penalty"]),
              st.one_of(st.floats(2.0, 1e6, exclude_min=True), st.floats(-1e6, -2.0, exclude_max=True))),
    st.tuples(st.just("logit_bias"), st.one_of(
        st.dictionaries(token_ids, st.floats(100.0, 1e9, exclude_min=True), min_size=1, max_size=2),
        st.dictionaries(st.integers(-1000, -1), st.floats(-1.0, 1.0), min_size=1, max_size=2))),
    st.tuples(st.just("stop_token_ids"), st.lists(st.integers(-1000, -1), min_size=1, max_size=2).map(tuple)),
    st.tuples(st.just("top_logprobs"), st.one_of(st.integers(-10, -1), st.integers(21, 1000))),
)
