"""sglang-jax's sampling parameters: the conventions in which its sampling dict differs from the canonical spec.

Pure (no jax / sgl_jax import at module level): the driver, the reference and every venv read it through
the registry (`Backend.sampling`) and harness.sampling.mapping, which generates the mapping from the
table's sglang-jax column (harness/sampling/table.py) and applies the converters below.

- greedy: T < 1e-6 (then top_k = 1); canonical 0 is sent as is.
- top_k off: -1 (0 is rejected).
- seed: `sampling_seed`, honoured only with enable_deterministic_sampling; not sent when unseeded.
  `n` is passed through: SglangJaxRollout turns n > 1 into n requests with derived seeds (0.0.2's native n
  gives n identical copies).
- logit_bias: string keys; stop_token_ids and logit_bias are not sent when empty.
- logprobs are request-level arguments of Engine.generate (return_logprob, top_logprobs_num).
- top-p order: top_p is measured on the full distribution, before the top-k / min-p cut (the reference
  computes that distribution too: `SGLANG_JAX_TOP_P_ORDER`).
- a tunix rollout on sglang-jax (tunix's SglangJaxSampler) cannot forward what RolloutConfig lacks.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from harness.sampling.mapping import (
    OMIT,
    MappingIssue,
    ProcessedConvention,
    SamplingDialect,
    from_native,
    native,
    to_native,
    version_tuple,
)
from harness.spec import SamplingSpec

SGLANG_GREEDY_BELOW = 1e-6  # sgl_jax SamplingParams._SAMPLING_EPS
SGLANG_TOP_K_OFF = -1


def _top_p_differs(spec: SamplingSpec) -> bool:
    """With top_k or min_p set, sglang-jax's top_p (over the full distribution) keeps another set."""
    return spec.top_p < 1.0 and (spec.top_k is not None or spec.min_p > 0.0)


def sglang_jax_processed_logits(logits: Any, spec: SamplingSpec) -> Any:
    """sglang-jax 0.0.2's CPU sampler (sampler.top_k_top_p_min_p_sampling_from_probs_jax_not_tpu_runtime):
    probabilities softmax(logits / T) sorted descending; top-k keeps the first k; top-p drops a token
    when the *full* cumulative mass before it exceeds top_p; min_p drops p < min_p * p_max; the
    survivors are renormalised. Returns logits with -inf where masked."""
    import numpy as np

    from harness.processing import log_softmax

    if spec.greedy:
        return np.array(logits, dtype=np.float64)
    x = np.asarray(logits, dtype=np.float64) / spec.temperature
    p = np.exp(log_softmax(x))
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    keep = np.ones(ps.size, dtype=bool)
    if spec.top_k is not None:
        keep &= np.arange(ps.size) < spec.top_k
    keep &= ~((np.cumsum(ps) - ps) > spec.top_p)
    if spec.min_p > 0:
        keep &= ~(ps < ps[0] * spec.min_p)
    out = np.full(x.shape, -np.inf)
    out[order[keep]] = x[order[keep]]
    return out


SGLANG_JAX_TOP_P_ORDER = ProcessedConvention("sglang-jax", "top-p", _top_p_differs, sglang_jax_processed_logits)


def _issues(spec: SamplingSpec, engine: str, *, deterministic: bool | None = None, version: str | None = None,
            workarounds: dict | None = None) -> list[MappingIssue]:
    """`deterministic` None: unknown, assumed on (the harness's CPU defaults); defects are those of <= 0.0.2;
    a field a SglangJaxRollout workaround makes the engine honour is no issue while that workaround is on."""
    out: list[MappingIssue] = []
    sampled = not spec.greedy
    old = version_tuple(version) <= (0, 0, 2) if version else True
    fixed = {k for k, v in (workarounds or {}).items() if v == "on"}
    if old and spec.repetition_penalty != 1.0 and "repetition_penalty_applied" not in fixed:
        out.append(MappingIssue(engine, "repetition_penalty", "engine bug", "fail",
                                "sglang-jax 0.0.2 validates repetition_penalty but has no penalizer for it: "
                                "it has no effect (SglangJaxRollout's workaround repetition_penalty_applied is off)"))
    if old and spec.logit_bias and "logit_bias_applied" not in fixed:
        out.append(MappingIssue(engine, "logit_bias", "engine bug", "fail",
                                "sglang-jax 0.0.2 validates logit_bias but never adds it to the logits: "
                                "it has no effect (SglangJaxRollout's workaround logit_bias_applied is off)"))
    if sampled and _top_p_differs(spec):
        out.append(MappingIssue(engine, "top_p", "differs", "note",
                                "sglang-jax applies top_p to the full distribution (cumulative mass before the "
                                "top-k / min-p cut); vLLM and the canonical spec apply it after top-k and min-p, "
                                "renormalised: with top_k or min_p set the distributions differ (SglangJaxRollout's compat "
                                "workaround top_p_renormalised, on by default, restores the canonical order)"))
    if spec.seed is not None and sampled and deterministic is False:
        out.append(MappingIssue(engine, "seed", "ignored", "fail",
                                "sampling_seed is honoured only with enable_deterministic_sampling, which this "
                                "engine runs without: the seed is ignored"))
    return out


def _tunix_issues(spec: SamplingSpec, engine: str) -> list[MappingIssue]:
    if spec.seed is None and not spec.greedy:
        return [MappingIssue(engine, "seed", "engine bug", "fail",
                             "unseeded sampling without deterministic mode uses sglang-jax 0.0.2's frozen "
                             "PRNG key: repeated calls return the same 'samples' (sglang-jax defect no. 9); give a seed")]
    return []


def sglang_jax_fields() -> dict | None:
    """The `sgl_jax.srt.sampling.sampling_params.SamplingParams.__init__` signature (its sampling dict), and
    `Engine.generate`'s request-level arguments (return_logprob, top_logprobs_num, ...), which carry what vLLM
    keeps in SamplingParams."""
    from harness.sampling.introspect import plain, version

    dist = version("sglang-jax")
    if dist is None:
        return None
    import inspect

    from sgl_jax.srt.sampling.sampling_params import SamplingParams

    sig = inspect.signature(SamplingParams.__init__)
    fields = {n: ("<required>" if p.default is inspect.Parameter.empty else plain(p.default))
              for n, p in sig.parameters.items() if n != "self"}
    request = {}
    try:  # importing the engine module has process-wide side effects (uvloop policy): read the source instead
        import importlib.util

        spec = importlib.util.find_spec("sgl_jax.srt.entrypoints.engine")
        tree = ast.parse(Path(spec.origin).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "Engine":
                for fn in node.body:
                    if isinstance(fn, ast.FunctionDef) and fn.name == "generate":
                        args = fn.args.args[1:]
                        defs = [None] * (len(args) - len(fn.args.defaults)) + list(fn.args.defaults)
                        for a, d in zip(args, defs):
                            request[a.arg] = "<required>" if d is None else ast.literal_eval(d)
    except Exception as e:  # pragma: no cover - reported, not fatal
        request = {"<error>": f"{type(e).__name__}: {e}"}
    return {"engine": "sglang_jax", "distribution": dist[0], "version": dist[1],
            "class": "sgl_jax.srt.sampling.sampling_params.SamplingParams", "fields": fields,
            "request_fields": request, "request_class": "sgl_jax.srt.entrypoints.engine.Engine.generate"}


SGLANG_JAX = SamplingDialect(
    column="sglang", label="sglang-jax",
    to={"top_k": lambda v, s: SGLANG_TOP_K_OFF if v is None else v,
        "seed": lambda v, s: v if v is not None else OMIT,
        "stop_token_ids": lambda v, s: list(v) if v else OMIT,
        "logit_bias": lambda v, s: {str(k): float(x) for k, x in sorted(v.items())} if v else OMIT,
        "top_logprobs": lambda v, s: (True, v)},
    back={"temperature": lambda t: 0.0 if float(t) < SGLANG_GREEDY_BELOW else float(t),
          "top_k": lambda v: None if v is None or int(v) == SGLANG_TOP_K_OFF else int(v),
          "top_logprobs": lambda asked, k: int(k or 0) if asked else 0},
    strict=True,
    tolerated=("skip_special_tokens", "no_stop_trim"),  # set by SglangJaxRollout's keep_stop_token workaround
    issues=_issues,
    introspect=sglang_jax_fields,
    not_sampling={"request:prompt": "request content", "request:input_ids": "request content",
                  "request:sampling_params": "the sampling dict itself"},
    processed=SGLANG_JAX_TOP_P_ORDER,
    tunix_issues=_tunix_issues,
    # seeds need the deterministic mode; unseeded requests in it would all get seed 42
    tunix_settings=lambda spec: {"rollout_sglang_jax_enable_deterministic_sampling": spec.seed is not None},
    tunix_sampler="SglangJaxSampler",
    tunix_no_extras="its SglangJaxSampler cannot forward extra sampling kwargs (SamplingParams.update does not "
                    "exist; the error is swallowed)",
)


def to_sglang_jax(spec: SamplingSpec) -> dict:
    """One sglang-jax request's sampling dict (SglangJaxRollout expands n > 1 into seeded requests)."""
    return to_native(spec, SGLANG_JAX)


def sglang_jax_request(spec: SamplingSpec) -> dict:
    """The request-level arguments of Engine.generate that carry vLLM's `logprobs`."""
    return native(spec, SGLANG_JAX)[1]


def from_sglang_jax(params: dict, request: dict | None = None) -> SamplingSpec:
    return from_native(params, SGLANG_JAX, request)
