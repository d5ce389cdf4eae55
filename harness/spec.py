"""The canonical sampling spec: one meaning per field, mapped to each engine by harness.sampling.mapping.

Field names follow vLLM's `SamplingParams` where the meaning is the same, and
every convention that differs between engines is fixed here once (the full
field-by-field table, with each engine's field, default and conversion, is
harness/sampling/table.py, rendered in docs/sampling.md and in every report):

- `temperature`: 0 means greedy (argmax; top_p/top_k/min_p are then ignored).
  Any other value samples from softmax(logits / temperature) and must lie in
  [0.01, 2]: vLLM raises 0 < T < 0.01 to 0.01 and rejects T > 2, sglang-jax
  treats T < 1e-6 as greedy, so a value outside that range would mean
  different things to different engines.
- `top_k`: None means off. Engines spell "off" differently (vLLM 0 or -1,
  sglang-jax -1 and rejects 0, tunix None = "unset": generation_config
  decides); 0 is rejected here so nobody has to guess which was meant.
- `top_p`, `min_p`: vLLM's order (harness.processing): temperature, then
  min_p (relative to the most likely token), then top_k, then top_p on the
  renormalised remainder. sglang-jax measures top_p on the full distribution:
  alone the two agree, combined with top_k or min_p they do not (an explicit
  mapping issue and a sampling_distribution finding, never silent).
- `max_tokens`: always explicit in a spec (defaults: vLLM 16, sglang-jax 128,
  tunix 64), so an engine default never decides a completion's length.
- `min_tokens`: EOS and stop tokens cannot end a completion before this many.
- `seed`: per request. vLLM's `seed` (sample j of n gets seed + j);
  sglang-jax's `sampling_seed` (honoured only in its deterministic sampling
  mode); tunix's `seed`. None: the engine's own randomness.
- `stop_token_ids` / EOS: a stop or EOS token that ends a completion is
  *included* in its token ids and its logprobs (vLLM's behaviour, which tunix
  trainers need: dropping it causes large sampler-trainer logp differences).
  The model's EOS always stops unless `ignore_eos`.
- `repetition_penalty` (0, 2]: over prompt and output tokens, dividing
  positive and multiplying negative logits; `presence_penalty` and
  `frequency_penalty` [-2, 2]: over output tokens only, subtracted (vLLM).
- `logit_bias`: integer token ids -> bias in [-100, 100], added to the logits
  before temperature (sglang-jax wants string keys; the mapping converts).
- `top_logprobs`: top-k logprobs per completion position (vLLM `logprobs`,
  sglang-jax `top_logprobs_num`; the sampled token's own logprob is always
  returned).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator, model_validator

LogprobMode = Literal["raw", "temperature", "processed"]
LOGPROB_MODES: tuple[str, ...] = ("raw", "temperature", "processed")


class SamplingSpec(BaseModel):
    """What to sample, in the harness's canonical names (see module docstring for meanings). Types are strict:
    `seed: "42"`, `temperature: true` or `max_tokens: 4.0` are errors, not silently converted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: StrictInt = Field(16, ge=1, description="new tokens at most, stop/EOS token included")
    min_tokens: StrictInt = Field(0, ge=0, description="EOS and stop tokens are suppressed before this many")
    temperature: StrictFloat = Field(0.0, ge=0.0, le=2.0, description="0 = greedy, else in [0.01, 2]")
    top_p: StrictFloat = Field(1.0, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(None, ge=1, description="None = off")
    min_p: StrictFloat = Field(0.0, ge=0.0, lt=1.0)
    n: StrictInt = Field(1, ge=1, description="samples per prompt")
    seed: StrictInt | None = Field(None, ge=0, description="per-request seed; None = engine's own randomness")
    stop_token_ids: tuple[StrictInt, ...] = ()
    ignore_eos: StrictBool = False
    repetition_penalty: StrictFloat = Field(1.0, gt=0.0, le=2.0)
    presence_penalty: StrictFloat = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: StrictFloat = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[StrictInt, StrictFloat] = Field(default_factory=dict, description="token id -> bias in [-100, 100]")
    top_logprobs: StrictInt = Field(5, ge=0, le=20, description="top-k logprobs per completion position")

    @field_validator("top_k", mode="before")
    @classmethod
    def _top_k_zero(cls, v: object) -> object:
        if v in (0, -1):
            raise ValueError(
                f"top_k={v} is an engine-specific spelling of 'off' (vLLM 0/-1, sglang-jax -1); "
                "write top_k: null (or leave it out) for off, or an integer >= 1"
            )
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float) -> float:
        if 0.0 < v < 0.01:
            raise ValueError(f"temperature {v} is ambiguous across engines (vLLM raises it to 0.01, sglang-jax "
                             "samples at it or, below 1e-6, is greedy): write 0 for greedy or a value >= 0.01")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v: dict[int, float]) -> dict[int, float]:
        for tok, bias in v.items():
            if tok < 0:
                raise ValueError(f"logit_bias key {tok}: token ids are >= 0")
            if not -100.0 <= bias <= 100.0 or bias != bias:
                raise ValueError(f"logit_bias[{tok}] = {bias}: biases lie in [-100, 100] (vLLM clamps to that)")
        return v

    @field_validator("stop_token_ids")
    @classmethod
    def _stop_ids(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(t < 0 for t in v):
            raise ValueError(f"stop_token_ids {list(v)}: token ids are >= 0")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SamplingSpec":
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError("n > 1 with temperature 0 asks for identical greedy copies; set temperature > 0")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def canonical(self) -> dict:
        """JSON-able dict with every field (defaults included): the input to content hashes."""
        d = self.model_dump(mode="json")
        d["logit_bias"] = {str(k): v for k, v in sorted(self.logit_bias.items())}
        return d

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()[:16]
