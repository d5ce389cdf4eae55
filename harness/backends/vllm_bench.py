"""vLLM's engine-native paths for `parity bench` (harness.bench_worker.NativeBench), in its venv.

- generate with logprobs on or off: VllmRollout.generate_ids with the mapped SamplingParams fields
  (`logprobs` 0: the sampled token's logprob only; None: off);
- attribution: `rollout` = VllmRollout; `bare_engine` = its own `LLM.generate` with the same SamplingParams
  (no compat layer: there is none). vLLM exposes no recompile count.
"""

from __future__ import annotations

import time

from harness.bench_worker import NativeBench, median
from harness.spec import SamplingSpec


class VllmBench(NativeBench):
    can_turn_off = True

    def generate(self, prompts: list[list[int]], spec: SamplingSpec, logprobs: bool) -> list[list[list[int]]]:
        from harness.backends.vllm_sampling import to_vllm

        fields = to_vllm(spec)
        fields["logprobs"] = 0 if logprobs else None  # 0: the sampled token's logprob only
        res = self.runner.rollout.generate_ids(prompts, fields, prompt_logprobs="none")
        return [[s.token_ids for s in p.samples] for p in res]

    def attribution(self, batch, completions, spec, repeats) -> dict:
        return _attrib_vllm(self.runner, batch, completions, spec, repeats)


def _attrib_vllm(runner, batch: list[list[int]], completions: list[list[int]], spec, repeats: int) -> dict:
    """VllmRollout and its own LLM.generate with the same SamplingParams, interleaved, steps timed."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from harness import steptimer
    from harness.backends.vllm_sampling import to_vllm

    ro = runner.rollout
    steptimer.install_vllm(getattr(getattr(ro.llm.llm_engine, "engine_core", None), "engine_core", None))
    fields = to_vllm(spec)
    fields["logprobs"] = 0
    seqs = [list(p) + list(c) for p, c in zip(batch, completions) if c]
    score_sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
    rollout = {"generate": lambda: ro.generate_ids(batch, fields, prompt_logprobs="none"),
               "get_per_token_logps": lambda: ro.get_per_token_logps(batch, completions)}
    bare = {"generate": lambda: ro.llm.generate([TokensPrompt(prompt_token_ids=p) for p in batch],
                                                SamplingParams(**fields), use_tqdm=False),
            "get_per_token_logps": lambda: ro.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs],
                                                           score_sp, use_tqdm=False)}
    out = {}
    for name in rollout:
        rollout[name]()
        bare[name]()
        res: dict[str, tuple[list, list]] = {"rollout": ([], []), "bare_engine": ([], [])}
        for _ in range(repeats):
            for layer, fn in (("rollout", rollout[name]), ("bare_engine", bare[name])):
                steptimer.take()
                t = time.perf_counter()
                fn()
                res[layer][0].append(time.perf_counter() - t)
                res[layer][1].append(steptimer.take())
        out[name] = {layer: {"all_s": ts, "median_s": median(ts), "steps": steptimer.breakdown(ts, st)}
                     for layer, (ts, st) in res.items()}
    return out
