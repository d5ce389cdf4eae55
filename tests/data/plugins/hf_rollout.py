"""HfRollout: a tunix BaseRollout on plain transformers, written outside rollout-parity.

It imports nothing of the harness: it stands for a user's own rollout, run with

    PYTHONPATH=tests/data/plugins ./dev parity --backends reference,mine=hf_rollout:HfRollout

It has only the BaseRollout surface (no prompt logprobs, no top-k logprobs, no n samples),
takes text prompts like tunix's rollouts, and samples with a torch generator seeded per row.
Its generate logprobs are log_softmax(logits / T) of the sampled token (greedy: raw), tunix's
vanilla sampler's meaning, which it declares in `logprob_mode`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

try:  # tunix's own classes where tunix is installed
    from tunix.rl.rollout.base_rollout import BaseRollout, RolloutOutput
except ImportError:  # the contract is duck-typed: the same methods and output fields
    BaseRollout = object

    @dataclasses.dataclass
    class RolloutOutput:
        text: list[str]
        logits: Any
        tokens: Any
        left_padded_prompt_tokens: Any
        logprobs: Any


class HfRollout(BaseRollout):
    logprob_mode = "temperature"

    def __init__(self, rollout_config: Any = None, model_path: str | None = None, dtype: str | None = None, **_: Any):
        path = model_path or rollout_config.rollout_vllm_model_version
        self._dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype or "", torch.float32)
        self.tok = AutoTokenizer.from_pretrained(path)
        self.lm = AutoModelForCausalLM.from_pretrained(path, torch_dtype=self._dtype).eval()
        self.config = rollout_config

    def dtype(self) -> str:
        return str(next(self.lm.parameters()).dtype).removeprefix("torch.")

    @torch.no_grad()
    def _logits(self, ids: list[int]) -> torch.Tensor:
        return self.lm(torch.tensor([ids])).logits[0].float()

    @torch.no_grad()
    def generate(self, prompts: list[str], rollout_config: Any, **kwargs: Any) -> RolloutOutput:
        cfg = rollout_config
        stops = set(cfg.eos_tokens or [self.eos_id()])
        rows, lps, texts = [], [], []
        prompt_ids = [self.tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        for r, ids in enumerate(prompt_ids):
            gen = torch.Generator().manual_seed(int(cfg.seed) * 1000003 + r if cfg.seed is not None
                                                else torch.seed() + r)
            seq, out, lp = list(ids), [], []
            for _ in range(cfg.max_tokens_to_generate):
                logits = self._logits(seq)[-1]
                if cfg.temperature == 0:
                    t = int(torch.argmax(logits))
                    lp.append(float(torch.log_softmax(logits, -1)[t]))
                else:
                    scaled = logits / cfg.temperature
                    masked = scaled.clone()
                    if cfg.top_k:
                        kth = torch.topk(masked, cfg.top_k).values[-1]
                        masked[masked < kth] = -float("inf")
                    if cfg.top_p is not None and cfg.top_p < 1.0:
                        probs, order = torch.sort(torch.softmax(masked, -1), descending=True)
                        drop = torch.cumsum(probs, -1) - probs > cfg.top_p
                        masked[order[drop]] = -float("inf")
                    t = int(torch.multinomial(torch.softmax(masked, -1), 1, generator=gen))
                    lp.append(float(torch.log_softmax(scaled, -1)[t]))
                out.append(t)
                seq.append(t)
                if t in stops:
                    break
            rows.append(out)
            lps.append(np.asarray(lp, dtype=np.float32))
            texts.append(self.tok.decode(out, skip_special_tokens=True))
        width = max(cfg.max_prompt_length, max(len(p) for p in prompt_ids))
        left = np.full((len(rows), width), self.pad_id(), dtype=np.int32)
        tokens = np.full((len(rows), cfg.max_tokens_to_generate), self.pad_id(), dtype=np.int32)
        for r, (p, o) in enumerate(zip(prompt_ids, rows)):
            left[r, width - len(p):] = p
            tokens[r, :len(o)] = o
        return RolloutOutput(text=texts, logits=None, tokens=tokens, left_padded_prompt_tokens=left, logprobs=lps)

    @torch.no_grad()
    def get_per_token_logps(self, prompt_tokens: Any, completion_tokens: Any, completion_mask: Any = None) -> np.ndarray:
        P, C = np.asarray(prompt_tokens), np.asarray(completion_tokens)
        mask = np.ones(C.shape, dtype=bool) if completion_mask is None else np.asarray(completion_mask).astype(bool)
        out = np.zeros(C.shape, dtype=np.float32)
        for r in range(len(P)):
            prompt = [int(t) for t in P[r]]
            while len(prompt) > 1 and prompt[0] == self.pad_id():
                prompt = prompt[1:]
            comp = [int(t) for t, m in zip(C[r], mask[r]) if m]
            if not comp:
                continue
            logp = torch.log_softmax(self._logits(prompt + comp), -1)
            for i, t in enumerate(comp):
                out[r, i] = float(logp[len(prompt) - 1 + i, t])
        return out

    def update_params(self, params: Any, filter_types: Any = None) -> None:
        state = {k: torch.as_tensor(np.asarray(v)).to(self._dtype) for k, v in params.items()}
        missing, unexpected = self.lm.load_state_dict(state, strict=False)
        if unexpected:
            raise KeyError(f"unknown parameters {unexpected}")
        if self.lm.config.tie_word_embeddings:
            self.lm.tie_weights()

    def pad_id(self) -> int:
        return int(self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos_id())

    def eos_id(self) -> int:
        return int(self.tok.eos_token_id)

    def model(self) -> Any:
        return self.lm
