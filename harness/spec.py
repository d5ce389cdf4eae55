"""The canonical sampling spec: one meaning per field, mapped to each engine by its backend.

Field names follow vLLM's `SamplingParams` where the meaning is the same, and
every convention that differs between engines is fixed here once:

- `temperature`: 0 means greedy (argmax; top_p/top_k/min_p are then ignored).
  Any value > 0 samples from softmax(logits / temperature).
- `top_k`: None means off. Engines spell "off" differently (vLLM 0 or -1,
  sglang-jax -1 and rejects 0, tunix None); 0 is rejected here so nobody has
  to guess which of them was meant.
- `max_tokens`: always explicit in a spec (defaults: vLLM 16, sglang-jax 128,
  tunix 64), so an engine default never decides a completion's length.
- `seed`: per request. vLLM's `seed`; sglang-jax's `sampling_seed` (which
  needs its deterministic sampling mode); tunix's `seed`.
- `stop_token_ids` / EOS: a stop or EOS token that ends a completion is
  *included* in its token ids and its logprobs (vLLM's behaviour, which tunix
  trainers need: dropping it causes large sampler-trainer logp differences).
- `logit_bias`: integer token ids (sglang-jax wants string keys; its backend
  converts).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LogprobMode = Literal["raw", "temperature", "processed"]
LOGPROB_MODES: tuple[str, ...] = ("raw", "temperature", "processed")


class SamplingSpec(BaseModel):
    """What to sample, in the harness's canonical names (see module docstring for meanings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(16, ge=1, description="new tokens at most, stop/EOS token included")
    min_tokens: int = Field(0, ge=0, description="EOS and stop tokens are suppressed before this many")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1, description="None = off")
    min_p: float = Field(0.0, ge=0.0, lt=1.0)
    n: int = Field(1, ge=1, description="samples per prompt")
    seed: int | None = Field(None, ge=0, description="per-request seed; None = engine's own randomness")
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    repetition_penalty: float = Field(1.0, gt=0.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[int, float] = Field(default_factory=dict)
    top_logprobs: int = Field(5, ge=0, le=20, description="top-k logprobs per completion position")

    @field_validator("top_k", mode="before")
    @classmethod
    def _top_k_zero(cls, v: object) -> object:
        if v in (0, -1):
            raise ValueError(
                f"top_k={v} is an engine-specific spelling of 'off' (vLLM 0/-1, sglang-jax -1); "
                "write top_k: null (or leave it out) for off, or an integer >= 1"
            )
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
