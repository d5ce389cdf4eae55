"""SglangJaxRunner: the harness's view of SglangJaxRollout (the unit under test) on the sglang-jax Engine.

The engine runs in its own process (engine.EngineProcess); if it dies, the
case at hand is recorded as an error and the next case starts a fresh engine
with the weights that were live. Options (also from the environment, since
`parity record` constructs runners without options):

- ``compat_off`` / ``PARITY_SGLANG_COMPAT_OFF``: workarounds to switch off
  (compat.REGISTRY names, comma-separated, or ``all``);
- ``engine`` / ``PARITY_SGLANG_ENGINE`` (JSON): sgl_jax Engine kwargs over the
  CPU defaults (engine.CPU_ENGINE_DEFAULTS);
- ``isolated`` (default True): engine in its own process;
- ``logprob_mode`` (SglangJaxOptions, ``PARITY_SGLANG_LOGPROB_MODE``): processed (default) | temperature |
  raw, what the generated-token logprobs mean (SglangJaxRollout's option; docs/sglang_jax.md).
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import Runner, Sample, Scored
from harness.backends.options import runner_options
from harness.backends.sglang_jax import compat
from harness.backends.sglang_jax.rollout import LOGPROB_MODE, LOGPROB_MODES, SglangJaxRollout, derive_seed
from harness.backends.sglang_jax.sampling import to_sglang_jax
from harness.model import ModelRef
from harness.spec import SamplingSpec


class SglangJaxRunner(Runner):
    name = "sglang_jax"
    bench = "harness.backends.sglang_jax.bench:SglangJaxBench"
    #: generated-token logprobs are log_softmax((logits + penalties) / T), not renormalised after
    #: top-k/top-p/min-p; greedy gives raw (notes: sglang-jax output logprobs)
    logprob_mode = LOGPROB_MODE
    seed_engine = "sglang_jax"
    update_forms_probe = True

    def __init__(self, model: ModelRef, **options: Any):
        super().__init__(model, **options)
        # SglangJaxOptions: the keywords over the deprecated PARITY_SGLANG_ENGINE (harness.backends.options, which
        # validates the JSON and warns once), as `parity record` resolves them
        engine = dict(runner_options(type(self).name, options).engine)
        if options.get("dtype"):  # the run's dtype decides; an engine JSON naming another one is a conflict
            if engine.get("dtype") not in (None, options["dtype"]):
                raise ValueError(f"sglang-jax engine option dtype={engine['dtype']!r} conflicts with the run's "
                                 f"dtype {options['dtype']!r} (PARITY_SGLANG_ENGINE / engine=): use --dtype")
            engine["dtype"] = options["dtype"]
        # resolved by harness.backends.options (SglangJaxOptions.logprob_mode, PARITY_SGLANG_LOGPROB_MODE, a suite's
        # backends: block, --backend-opt); a runner built directly may pass it or take the rollout's default
        mode = str(options.get("logprob_mode") or LOGPROB_MODE).lower().removesuffix("_logprobs")
        if mode not in LOGPROB_MODES:
            raise ValueError(f"sglang-jax logprob mode {mode!r}: choose one of {list(LOGPROB_MODES)}")
        self.logprob_mode = mode  # type: ignore[assignment]
        self.rollout = self._rollout(model, engine, {**options, "logprob_mode": mode})

    def _rollout(self, model: ModelRef, engine: dict, options: dict) -> SglangJaxRollout:
        return SglangJaxRollout(model_path=model.path, engine_options=engine, compat_off=options.get("compat_off"),
                                isolated=bool(options.get("isolated", True)), logprob_mode=options.get("logprob_mode"))

    def close(self) -> None:
        self.rollout.close()

    # ---------------------------------------------------------------- description
    def versions(self) -> dict[str, str]:
        return dict(self.rollout.info["versions"])

    def device(self) -> str:
        return str(self.rollout.info["device"])

    def dtype(self) -> str:
        return str(self.rollout.info["dtype"])

    def config(self) -> dict:
        info = self.rollout.info
        return {
            "engine_kwargs": info["engine_kwargs"],
            "isolated_engine_process": self.rollout.isolated,
            "compat": self.rollout.compat.describe(),
            "lm_head_dtype": info.get("lm_head_dtype"),
            "logprob_mode": {
                "processed": "processed: log_softmax((logits + penalties) / T) renormalised over what min_p, top_k, "
                             "top_p kept (as vLLM processed_logprobs); greedy = raw",
                "temperature": "temperature: log_softmax((logits + penalties) / T), not renormalised; greedy = raw",
                "raw": "raw: log_softmax(logits), the teacher-forced score of the sampled tokens"}[self.logprob_mode],
            "stop_token_policy": "EOS/stop token included in completion ids and logprobs",
            "n_policy": "n > 1 -> n requests, per-sample seed derive_seed(seed, j) = first 31 bits of "
                        "blake2b('sglang-jax-rollout:{seed}:{j}'); prompt-major order",
            "unseeded_sampling": "a fresh random 31-bit seed per request (deterministic sampling mode on)",
            "score": "teacher-forced prefill of prompt+completion, logprob_start_len=len(prompt)-1, max_new_tokens=1",
            "engine_timings": info.get("timings", {}),
        }

    # ---------------------------------------------------------------- spec -> sglang-jax
    def _sampling(self, spec: SamplingSpec) -> dict:
        return to_sglang_jax(spec)  # sglang_jax/sampling.py: top_k off -1, greedy, sampling_seed, str logit_bias

    def native_params(self, spec: SamplingSpec) -> dict:
        """What one prompt's requests carry, exactly as sent: the rollout turns n > 1 into n
        requests with per-sample seeds (listed), and adds the stop-token settings."""
        p = self._sampling(spec)
        n = p.get("n", 1)
        base = p.get("sampling_seed")
        sent = self.rollout._request_params(p, 0, n if self.rollout.compat.on("n_as_seeded_requests") else 1, None)
        if not self.rollout.compat.on("n_as_seeded_requests") and n > 1:
            sent["n"] = n
        if base is not None:
            seeds = [derive_seed(base, j, n) for j in range(n)] if self.rollout.compat.on("n_as_seeded_requests") \
                else [derive_seed(base, 0, 1)]
            sent["sampling_seed"] = seeds[0] if len(seeds) == 1 else seeds
        elif not spec.greedy and self.rollout.deterministic:
            sent["sampling_seed"] = "random per request"
        if n > 1 and self.rollout.compat.on("n_as_seeded_requests"):
            sent["requests_per_prompt"] = n
        return sent

    # ---------------------------------------------------------------- calls
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        res = self.rollout.generate_batch(input_ids=prompts, sampling_params=self._sampling(spec), return_logprob=True,
                                          logprob_start_len=0, top_logprobs_num=spec.top_logprobs)
        out = []
        for pr in res:
            samples = []
            for s in pr.samples:
                samples.append(Sample(
                    completion_ids=s.token_ids, completion_logprobs=s.logprobs, finish_reason=s.finish_reason,
                    prompt_logprobs=pr.prompt_logprobs,
                    completion_top=None if s.top_logprobs is None else [{str(k): v for k, v in d.items()}
                                                                        for d in s.top_logprobs],
                    stop_reason=s.stop_reason, text=s.text, sent=dict(s.native_params)))
            out.append(samples)
        return out

    def score(self, prompts: list[list[int]], completions: list[list[int]], spec: SamplingSpec) -> list[Scored]:
        res = self.rollout.score_batch(prompts, completions, top_logprobs_num=max(spec.top_logprobs, 1))
        return [Scored(logprobs=r.logprobs,
                       top=None if r.top_logprobs is None else [{str(k): v for k, v in d.items()} for d in r.top_logprobs])
                for r in res]

    def last_sent(self) -> list[dict] | None:
        last = getattr(self.rollout, "last_outputs", None)
        return None if last is None else [dict(pr.samples[0].native_params) for pr in last]

    def set_weights(self, model: ModelRef) -> None:
        self.rollout.update_params(model.path)
        self.model = model


__all__ = ["SglangJaxRunner", "compat"]
