"""The exact reference: transformers in float64 on CPU, teacher-forced, no engine tricks.

It is the third opinion that says which engine is wrong. Generation is a
plain loop over full forward passes (no KV cache, no batching: nothing that
could itself be a source of error), sampling draws from the exact processed
distribution with numpy, and `score` returns each logprob mode exactly
(harness.processing), so a check can ask for the mode a backend claims.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from harness.backends.base import Runner, Sample, Scored
from harness.model import ModelRef
from harness.processing import apply_penalties, log_softmax, mode_logprobs, processed_logits
from harness.spec import SamplingSpec


class ReferenceRunner(Runner):
    name = "reference"
    logprob_mode = "raw"

    def __init__(self, model: ModelRef, **options):
        super().__init__(model, **options)
        import torch

        # one thread by default: the model is tiny, so a second OpenMP thread gains nothing alone (the default
        # suite 7.8-8.0 s with 2 threads, 8.4 s with 1, idle 2-core machine), while next to any other busy process
        # (an engine recording at the same time, a test, a second session) the two spin-waiting threads fight
        # for the cores: the same suite took 105 s with 2 threads beside one busy loop, 8.5 s with 1. The
        # records are the same (float64 values bit for bit; only the unseeded case's fresh draws differ).
        torch.set_num_threads(max(1, int(options.get("threads", 1))))
        self._torch = torch
        self._load(model)

    def _load(self, model: ModelRef) -> None:
        import transformers

        # identical token sequences recur by the thousand in sampling-distribution cases (n draws of
        # one next token, then their scoring): forward passes are cached, read-only, per weight set
        self._logits_cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()

        transformers.utils.logging.disable_progress_bar()
        self.model = model
        self._lm = transformers.AutoModelForCausalLM.from_pretrained(
            model.path, dtype=self._torch.float64, attn_implementation="eager"
        ).eval()
        cfg = self._lm.config
        eos = getattr(self._lm.generation_config, "eos_token_id", None) or cfg.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._tok = transformers.AutoTokenizer.from_pretrained(model.path)

    def versions(self) -> dict[str, str]:
        import transformers

        return {"torch": self._torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}

    def device(self) -> str:
        return "cpu (float64)"

    def dtype(self) -> str:
        return str(self._lm.dtype).removeprefix("torch.")

    def config(self) -> dict:
        return {"dtype": "float64", "attn_implementation": "eager"}

    def native_params(self, spec: SamplingSpec) -> dict:
        return spec.canonical()

    def set_weights(self, model: ModelRef) -> None:
        self._load(model)

    # ------------------------------------------------------------ core
    def logits(self, ids: list[int]) -> np.ndarray:
        """[len(ids), vocab] float64 logits; row i predicts token i+1 (read-only: cached)."""
        key = tuple(int(t) for t in ids)
        hit = self._logits_cache.get(key)
        if hit is not None:
            self._logits_cache.move_to_end(key)
            return hit
        with self._torch.no_grad():
            out = self._lm(self._torch.tensor([ids], dtype=self._torch.long)).logits[0].numpy()
        out.setflags(write=False)
        self._logits_cache[key] = out
        if len(self._logits_cache) > 512:
            self._logits_cache.popitem(last=False)
        return out

    def prompt_logprobs(self, prompt: list[int], logits: np.ndarray) -> list[float | None]:
        lp = log_softmax(logits[: len(prompt) - 1])
        return [None] + [float(lp[i, prompt[i + 1]]) for i in range(len(prompt) - 1)]

    def _stops(self, spec: SamplingSpec) -> set[int]:
        return set(spec.stop_token_ids) | (set() if spec.ignore_eos else self._eos)

    def _generate_one(self, prompt: list[int], spec: SamplingSpec, rng: np.random.Generator | None) -> Sample:
        out: list[int] = []
        stops = self._stops(spec)
        finish, stop_reason = "length", None
        for _ in range(spec.max_tokens):
            raw = self.logits(prompt + out)[-1]
            x = apply_penalties(raw, spec, prompt, out)
            if len(out) < spec.min_tokens:
                x[sorted(stops | self._eos)] = -np.inf
            if spec.greedy:
                tok = int(np.argmax(x))
            else:
                p = np.exp(log_softmax(processed_logits(x, spec)))
                tok = int(rng.choice(len(p), p=p / p.sum()))
            out.append(tok)
            if tok in stops:
                finish = "stop"
                stop_reason = tok if tok in spec.stop_token_ids else None
                break
        full = self.logits(prompt + out)
        scored = self._score_from_logits(prompt, out, spec, full)
        return Sample(
            completion_ids=out,
            completion_logprobs=scored.by_mode["raw"],
            prompt_logprobs=self.prompt_logprobs(prompt, full),
            completion_top=scored.top,
            finish_reason=finish,
            stop_reason=stop_reason,
            text=self._tok.decode(out, skip_special_tokens=False),
        )

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        results = []
        for i, prompt in enumerate(prompts):
            samples = []
            for j in range(spec.n):
                # unseeded: fresh entropy, as an engine's own randomness (a fixed stream would repeat its
                # "samples" on every call: what sampling_distribution's independence verdict rejects)
                rng = None if spec.greedy else np.random.default_rng(None if spec.seed is None else [spec.seed, i, j])
                samples.append(self._generate_one(list(prompt), spec, rng))
            results.append(samples)
        return results

    def _score_from_logits(self, prompt: list[int], completion: list[int], spec: SamplingSpec,
                           logits: np.ndarray) -> Scored:
        by_mode: dict[str, list[float]] = {"raw": [], "temperature": [], "processed": []}
        top: list[dict[str, float]] = []
        k = max(spec.top_logprobs, 1)
        for i, tok in enumerate(completion):
            row = logits[len(prompt) + i - 1]
            pen = apply_penalties(row, spec, prompt, completion[:i])
            modes = mode_logprobs(row, spec, pen)
            for m, dist in modes.items():
                by_mode[m].append(float(dist[tok]))
            raw = modes["raw"]
            best = np.argsort(-raw, kind="stable")[:k]
            top.append({str(int(t)): float(raw[t]) for t in best})
        return Scored(logprobs=by_mode["raw"], by_mode=by_mode, top=top)

    def score(self, prompts: list[list[int]], completions: list[list[int]], spec: SamplingSpec) -> list[Scored]:
        return [
            self._score_from_logits(list(p), list(c), spec, self.logits(list(p) + list(c)))
            for p, c in zip(prompts, completions)
        ]
