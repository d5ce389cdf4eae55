"""Canonical SamplingSpec -> each engine's own parameters, and back: every convention normalised here.

Pure functions, no engine import (the driver, the reference and every engine venv import this).

    to_vllm(spec)                  vllm.SamplingParams keyword arguments
    to_sglang_jax(spec)            sglang-jax sampling dict (one request; the rollout expands n)
    sglang_jax_request(spec)       sglang-jax request-level arguments (logprobs)
    to_tunix(spec, engine=...)     tunix RolloutConfig keyword arguments for a vLLM or sglang-jax rollout
    from_vllm / from_sglang_jax / from_tunix   the way back (round-trip: to_X(from_X(to_X(s))) == to_X(s))
    issues(spec, engine, ...)      what an engine cannot do as the spec says: explicit, never silent

Conventions (docs/sampling.md has the table with reasons):

- greedy: canonical temperature 0. vLLM: exactly 0 (it treats T < 1e-5 as greedy but first raises
  0 < T < 1e-2 to 1e-2); sglang-jax: T < 1e-6 (then top_k = 1); tunix: T = 0 with top_p None
  (top_p 1.0 at T 0 divides by zero in tunix's vanilla sampler). The canonical spec rejects
  0 < T < 0.01 and T > 2 (vLLM's range), so no engine reinterprets a temperature it is sent.
- top_k off: canonical None; vLLM 0; sglang-jax -1 (0 rejected); tunix: None means *unset*, so
  the generation_config default applies: the mapping sends the rollout engine's explicit off.
- seed: vLLM `seed` (sample j of n gets seed + j); sglang-jax `sampling_seed`, honoured only with
  enable_deterministic_sampling; tunix `seed` (an int: a jax.Array seed is donated and deleted).
- max tokens: always sent (defaults differ: vLLM 16, sglang-jax 128, tunix 64).
- logit_bias: canonical int keys, values in [-100, 100] (vLLM clamps to that in from_optional);
  sglang-jax wants string keys.
- generation_config.json: vLLM's LLM.generate and sglang-jax's Engine.generate apply it only when
  no sampling parameters are passed at all; tunix's samplers start from it and override only what
  RolloutConfig sets. Every mapping here sends every field, and `generation_config_issues` names
  what a tunix rollout would still take from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from harness.spec import SamplingSpec

# ---------------------------------------------------------------- engine conventions (measured/read from source)
VLLM_GREEDY_BELOW = 1e-5  # vllm.sampling_params._SAMPLING_EPS
VLLM_MIN_TEMPERATURE = 1e-2  # vllm.sampling_params._MAX_TEMP: 0 < T < this is raised to it
VLLM_MAX_TEMPERATURE = 2.0
VLLM_TOP_K_OFF = 0
SGLANG_GREEDY_BELOW = 1e-6  # sgl_jax SamplingParams._SAMPLING_EPS
SGLANG_TOP_K_OFF = -1
LOGIT_BIAS_LIMIT = 100.0

Engine = Literal["vllm", "sglang_jax", "tunix/vllm", "tunix/sglang_jax"]
ENGINES: tuple[str, ...] = ("vllm", "sglang_jax", "tunix/vllm", "tunix/sglang_jax")

#: fields whose effect the sampling_effects check measures (greedy): the neutral value of each
EFFECT_NEUTRAL: dict[str, Any] = {
    "stop_token_ids": (), "ignore_eos": False, "min_tokens": 0, "repetition_penalty": 1.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "logit_bias": {},
}


class MappingError(ValueError):
    """An engine dict that no canonical spec maps to (from_*), naming the field."""


# ---------------------------------------------------------------- canonical -> engines
def to_vllm(spec: SamplingSpec, *, prompt_logprobs: int | None = None) -> dict:
    """vllm.SamplingParams(**to_vllm(spec)): every field explicit, so no engine default decides."""
    return {
        "n": spec.n,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "top_k": VLLM_TOP_K_OFF if spec.top_k is None else spec.top_k,
        "min_p": spec.min_p,
        "seed": spec.seed,
        "max_tokens": spec.max_tokens,
        "min_tokens": spec.min_tokens,
        "stop_token_ids": list(spec.stop_token_ids),  # vLLM adds the model's EOS itself
        "ignore_eos": spec.ignore_eos,
        "repetition_penalty": spec.repetition_penalty,
        "presence_penalty": spec.presence_penalty,
        "frequency_penalty": spec.frequency_penalty,
        "logit_bias": {int(k): float(v) for k, v in spec.logit_bias.items()} or None,
        "logprobs": spec.top_logprobs,
        "prompt_logprobs": prompt_logprobs,
        "skip_special_tokens": True,  # as tunix's VllmSampler; token ids are unaffected
        "detokenize": True,
    }


def to_sglang_jax(spec: SamplingSpec) -> dict:
    """One sglang-jax request's sampling dict. `n` is passed through: SglangJaxRollout turns n > 1
    into n requests with derived seeds (0.0.2's native n gives n identical copies)."""
    p: dict[str, Any] = {
        "max_new_tokens": spec.max_tokens,
        "min_new_tokens": spec.min_tokens,
        "temperature": spec.temperature,  # 0 -> sglang-jax's greedy (T < 1e-6 => top_k = 1)
        "top_p": spec.top_p,
        "top_k": SGLANG_TOP_K_OFF if spec.top_k is None else spec.top_k,
        "min_p": spec.min_p,
        "n": spec.n,
        "ignore_eos": spec.ignore_eos,
        "repetition_penalty": spec.repetition_penalty,
        "presence_penalty": spec.presence_penalty,
        "frequency_penalty": spec.frequency_penalty,
    }
    if spec.stop_token_ids:
        p["stop_token_ids"] = list(spec.stop_token_ids)
    if spec.logit_bias:
        p["logit_bias"] = {str(k): float(v) for k, v in sorted(spec.logit_bias.items())}
    if spec.seed is not None:
        p["sampling_seed"] = spec.seed
    return p


def sglang_jax_request(spec: SamplingSpec) -> dict:
    """The request-level arguments of Engine.generate that carry vLLM's `logprobs`."""
    return {"return_logprob": True, "top_logprobs_num": spec.top_logprobs}


def to_tunix(spec: SamplingSpec, engine: Literal["vllm", "sglang_jax"] = "vllm", *,
             max_prompt_length: int | None = None) -> dict:
    """tunix RolloutConfig keyword arguments. What RolloutConfig has no field for goes to
    `rollout_vllm_sampling_kwargs` for a vLLM rollout (set even at neutral values, so that the
    model's generation_config cannot fill it in); for an sglang-jax rollout it cannot be sent
    (`issues` says so)."""
    kw: dict[str, Any] = {
        "max_tokens_to_generate": spec.max_tokens,
        "temperature": spec.temperature,
        # greedy: tunix's vanilla sampler needs top_p None at T = 0
        "top_p": None if spec.greedy else spec.top_p,
        "top_k": (VLLM_TOP_K_OFF if engine == "vllm" else SGLANG_TOP_K_OFF) if spec.top_k is None else spec.top_k,
        "seed": spec.seed,
        "return_logprobs": spec.top_logprobs > 0,
    }
    if spec.stop_token_ids:
        kw["eos_tokens"] = list(spec.stop_token_ids)
    if max_prompt_length is not None:
        kw["max_prompt_length"] = max_prompt_length
    if engine == "vllm":
        kw["rollout_vllm_sampling_kwargs"] = {
            "min_p": spec.min_p, "min_tokens": spec.min_tokens, "ignore_eos": spec.ignore_eos,
            "repetition_penalty": spec.repetition_penalty, "presence_penalty": spec.presence_penalty,
            "frequency_penalty": spec.frequency_penalty,
            "logit_bias": {int(k): float(v) for k, v in spec.logit_bias.items()} or None,
            **({"stop_token_ids": list(spec.stop_token_ids)} if spec.stop_token_ids else {}),
        }
        kw["rollout_vllm_logprobs_mode"] = "processed_logprobs"
    else:
        # seeds need the deterministic mode; unseeded requests in it would all get seed 42
        kw["rollout_sglang_jax_enable_deterministic_sampling"] = spec.seed is not None
    return kw


# ---------------------------------------------------------------- engines -> canonical
def _top_k_back(v: Any, off: tuple[int, ...]) -> int | None:
    if v is None or int(v) in off:
        return None
    return int(v)


def from_vllm(d: dict) -> SamplingSpec:
    """The canonical spec an explicit vLLM dict means (vLLM's own conventions undone)."""
    t = float(d.get("temperature", 1.0))
    if 0 < t < VLLM_MIN_TEMPERATURE:
        raise MappingError(f"temperature {t}: vLLM raises it to {VLLM_MIN_TEMPERATURE} (no canonical spelling)")
    for k, harness_value in (("skip_special_tokens", True), ("detokenize", True)):
        if k in d and d[k] != harness_value:
            raise MappingError(f"{k}={d[k]!r}: the harness always sends {harness_value!r}")
    seed = d.get("seed")
    return SamplingSpec(
        n=int(d.get("n", 1)), temperature=0.0 if t < VLLM_GREEDY_BELOW else t, top_p=float(d.get("top_p", 1.0)),
        top_k=_top_k_back(d.get("top_k", 0), (0, -1)), min_p=float(d.get("min_p", 0.0)),
        seed=None if seed in (None, -1) else int(seed), max_tokens=int(d.get("max_tokens", 16)),
        min_tokens=int(d.get("min_tokens", 0)), stop_token_ids=tuple(d.get("stop_token_ids") or ()),
        ignore_eos=bool(d.get("ignore_eos", False)), repetition_penalty=float(d.get("repetition_penalty", 1.0)),
        presence_penalty=float(d.get("presence_penalty", 0.0)),
        frequency_penalty=float(d.get("frequency_penalty", 0.0)),
        logit_bias={int(k): float(v) for k, v in (d.get("logit_bias") or {}).items()},
        top_logprobs=int(d.get("logprobs") or 0),
    )


def from_sglang_jax(d: dict, request: dict | None = None) -> SamplingSpec:
    request = request or {}
    t = float(d.get("temperature", 1.0))
    unknown = sorted(set(d) - {"max_new_tokens", "min_new_tokens", "temperature", "top_p", "top_k", "min_p", "n",
                               "ignore_eos", "repetition_penalty", "presence_penalty", "frequency_penalty",
                               "stop_token_ids", "logit_bias", "sampling_seed", "skip_special_tokens", "no_stop_trim"})
    if unknown:
        raise MappingError(f"sglang-jax field(s) {unknown} have no canonical counterpart")
    return SamplingSpec(
        max_tokens=int(d.get("max_new_tokens", 128)), min_tokens=int(d.get("min_new_tokens", 0)),
        temperature=0.0 if t < SGLANG_GREEDY_BELOW else t, top_p=float(d.get("top_p", 1.0)),
        top_k=_top_k_back(d.get("top_k", -1), (-1,)), min_p=float(d.get("min_p", 0.0)), n=int(d.get("n", 1)),
        seed=None if d.get("sampling_seed") is None else int(d["sampling_seed"]),
        stop_token_ids=tuple(d.get("stop_token_ids") or ()), ignore_eos=bool(d.get("ignore_eos", False)),
        repetition_penalty=float(d.get("repetition_penalty", 1.0)),
        presence_penalty=float(d.get("presence_penalty", 0.0)),
        frequency_penalty=float(d.get("frequency_penalty", 0.0)),
        logit_bias={int(k): float(v) for k, v in (d.get("logit_bias") or {}).items()},
        top_logprobs=int(request.get("top_logprobs_num") or 0) if request.get("return_logprob", True) else 0,
    )


def from_tunix(kw: dict, engine: Literal["vllm", "sglang_jax"] = "vllm") -> SamplingSpec:
    extra = dict(kw.get("rollout_vllm_sampling_kwargs") or {})
    t = float(kw.get("temperature", 0.9))
    top_p = kw.get("top_p")
    return SamplingSpec(
        max_tokens=int(kw.get("max_tokens_to_generate", 64)), temperature=t,
        top_p=1.0 if top_p is None else float(top_p),
        top_k=_top_k_back(kw.get("top_k"), (0, -1)), seed=kw.get("seed"),
        stop_token_ids=tuple(extra.get("stop_token_ids") or kw.get("eos_tokens") or ()),
        top_logprobs=5 if kw.get("return_logprobs") else 0,
        min_p=float(extra.get("min_p", 0.0)), min_tokens=int(extra.get("min_tokens", 0)),
        ignore_eos=bool(extra.get("ignore_eos", False)),
        repetition_penalty=float(extra.get("repetition_penalty", 1.0)),
        presence_penalty=float(extra.get("presence_penalty", 0.0)),
        frequency_penalty=float(extra.get("frequency_penalty", 0.0)),
        logit_bias={int(k): float(v) for k, v in (extra.get("logit_bias") or {}).items()},
    )


# ---------------------------------------------------------------- what an engine cannot do as the spec says
Severity = Literal["fail", "note"]


@dataclass(frozen=True)
class MappingIssue:
    engine: str
    field: str
    status: str  # the table's vocabulary: one-sided, unsupported by design, engine bug, differs, ignored
    severity: Severity  # fail: the field is dropped or has no effect; note: it means something else here
    reason: str

    def as_dict(self) -> dict:
        return {"engine": self.engine, "field": self.field, "status": self.status, "severity": self.severity,
                "reason": self.reason}


def _version_tuple(v: str | None) -> tuple[int, ...]:
    out = []
    for part in (v or "").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def set_fields(spec: SamplingSpec) -> dict[str, Any]:
    """Fields the spec sets to a non-default value."""
    default = SamplingSpec()
    return {k: getattr(spec, k) for k in SamplingSpec.model_fields if getattr(spec, k) != getattr(default, k)}


def issues(spec: SamplingSpec, engine: str, *, deterministic: bool | None = None,
           version: str | None = None, workarounds: dict | None = None) -> list[MappingIssue]:
    """Everything `engine` would do differently from the canonical meaning of `spec`.

    `deterministic`: sglang-jax's enable_deterministic_sampling as the run's engine had it (None: unknown,
    assumed on, as the harness's CPU defaults have it). `version`: the engine version (sglang-jax
    defects are those of <= 0.0.2). `workarounds`: SglangJaxRollout's compat state as the run's
    session recorded it (name -> "on"/"off"/"not needed"); a field a workaround makes the engine honour
    is no issue while that workaround is on."""
    out: list[MappingIssue] = []
    sampled = not spec.greedy
    if engine == "sglang_jax":
        old = _version_tuple(version) <= (0, 0, 2) if version else True
        fixed = {k for k, v in (workarounds or {}).items() if v == "on"}
        if old and spec.repetition_penalty != 1.0 and "repetition_penalty_applied" not in fixed:
            out.append(MappingIssue(engine, "repetition_penalty", "engine bug", "fail",
                                    "sglang-jax 0.0.2 validates repetition_penalty but has no penalizer for it: "
                                    "it has no effect (SglangJaxRollout's workaround repetition_penalty_applied is off)"))
        if old and spec.logit_bias and "logit_bias_applied" not in fixed:
            out.append(MappingIssue(engine, "logit_bias", "engine bug", "fail",
                                    "sglang-jax 0.0.2 validates logit_bias but never adds it to the logits: "
                                    "it has no effect (SglangJaxRollout's workaround logit_bias_applied is off)"))
        if sampled and spec.top_p < 1.0 and (spec.top_k is not None or spec.min_p > 0.0):
            out.append(MappingIssue(engine, "top_p", "differs", "note",
                                    "sglang-jax applies top_p to the full distribution (cumulative mass before the "
                                    "top-k / min-p cut); vLLM and the canonical spec apply it after top-k and min-p, "
                                    "renormalised: with top_k or min_p set the distributions differ (SglangJaxRollout's compat "
                                    "workaround top_p_renormalised, on by default, restores the canonical order)"))
        if spec.seed is not None and sampled and deterministic is False:
            out.append(MappingIssue(engine, "seed", "ignored", "fail",
                                    "sampling_seed is honoured only with enable_deterministic_sampling, which this "
                                    "engine runs without: the seed is ignored"))
    elif engine.startswith("tunix/"):
        rollout = engine.split("/", 1)[1]
        if spec.n > 1:
            out.append(MappingIssue(engine, "n", "converted", "note",
                                    "RolloutConfig has no n: pass it to generate(..., n=) (tunix's VllmSampler "
                                    "keeps only the first of n samples)"))
        if rollout == "sglang_jax":
            for f in ("min_p", "min_tokens", "ignore_eos", "repetition_penalty", "presence_penalty",
                      "frequency_penalty", "logit_bias"):
                if getattr(spec, f) != SamplingSpec.model_fields[f].get_default(call_default_factory=True):
                    out.append(MappingIssue(engine, f, "one-sided", "fail",
                                            f"tunix's RolloutConfig has no {f}, and its SglangJaxSampler cannot "
                                            "forward extra sampling kwargs (SamplingParams.update does not exist; "
                                            "the error is swallowed)"))
        if rollout == "sglang_jax" and spec.seed is None and sampled:
            out.append(MappingIssue(engine, "seed", "engine bug", "fail",
                                    "unseeded sampling without deterministic mode uses sglang-jax 0.0.2's frozen "
                                    "PRNG key: repeated calls return the same 'samples' (sglang-jax defect no. 9); give a seed"))
        if spec.top_logprobs > 1:
            out.append(MappingIssue(engine, "top_logprobs", "converted", "note",
                                    "RolloutConfig.return_logprobs is a bool: tunix asks for the sampled token's "
                                    "logprob only"))
    return out


# ---------------------------------------------------------------- generation_config.json
GENERATION_CONFIG_SAMPLING = {  # generation_config key -> canonical field (what the engines read from it)
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
    "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens",
}


def generation_config_issues(gen: dict, engine: str) -> list[MappingIssue]:
    """What a model's generation_config.json would decide for a request mapped here.

    vllm / sglang_jax (the harness's runners, LLM.generate / Engine.generate with explicit params):
    nothing. tunix rollouts start from it: every key RolloutConfig cannot override is an issue."""
    present = {k: gen[k] for k in GENERATION_CONFIG_SAMPLING if gen.get(k) is not None}
    out = []
    if engine == "tunix/sglang_jax":
        for k in ("min_p", "repetition_penalty"):
            if k in present:
                out.append(MappingIssue(engine, GENERATION_CONFIG_SAMPLING[k], "engine default", "fail",
                                        f"generation_config.json sets {k}={present[k]!r}; tunix's SglangJaxSampler "
                                        "starts from it and RolloutConfig cannot override it"))
    return out
