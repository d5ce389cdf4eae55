"""One backend's measurements for `parity bench`, run inside that backend's venv (own process).

    python -m harness.bench_worker --backend sglang_jax --suite cases/default.yaml --json OUT.json

Measures, on the suite's prompts (all of them as one batch, fixed length: ignore_eos):
engine start, first-call (compile) time, generate tokens/s greedy and sampled with and
without logprobs (where the backend can turn them off), score (get_per_token_logps)
tokens/s, update_params latency (A -> B -> A), and the JIT recompiles during a second
pass over the suite's generate cases after a warm-up pass (sglang-jax: the sum of
`cache_miss_count` in meta_info; None where the backend exposes nothing).
Every timed variant is called once untimed first; repeats are interleaved so that
machine load hits every variant alike; the median is reported.

Attribution (`attribution` in the result): the same work (the greedy batch with logprobs,
and get_per_token_logps of its completions) through each layer, with every step timed
(harness/steptimer.py). The engine-native paths (logprobs off, recompile counts, the layers)
are the engine's: its runner names a `NativeBench` subclass (`Runner.bench`) in its backend
module (harness/backends/sglang_jax/bench.py: rollout, compat engine, bare engine;
harness/backends/vllm_bench.py: rollout, bare LLM.generate). A runner without one is measured
through the generic Runner calls only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from harness.spec import SamplingSpec


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


class NativeBench:
    """A backend's engine-native bench paths; this base measures through the generic Runner calls only."""

    #: generate can run with logprobs off (the variants with and without are both measured)
    can_turn_off = False
    #: suite_call returns the JIT recompiles of its call (else None: the backend exposes no count)
    counts_recompiles = False
    recompiles_source = "n/a: the backend exposes no count"

    def __init__(self, runner):
        self.runner = runner

    def generate(self, prompts: list[list[int]], spec: SamplingSpec, logprobs: bool) -> list[list[list[int]]]:
        return [[s.completion_ids for s in row] for row in self.runner.generate(prompts, spec)]

    def suite_call(self, prompts: list[list[int]], spec: SamplingSpec) -> int | None:
        """One generate call as the recorder sends it; its recompiles (None when not counted)."""
        self.runner.generate(prompts, spec)
        return None

    def attribution(self, batch: list[list[int]], completions: list[list[int]], spec: SamplingSpec,
                    repeats: int) -> dict | None:
        """The same work through each layer (None: no layers to attribute)."""
        return None

    def after_close(self, out: dict, model_path: str, repeats: int) -> None:
        """Measurements that need the runner's engine gone (e.g. a second, bare engine)."""


def native_bench(runner) -> NativeBench:
    spec = getattr(runner, "bench", None)
    if not spec:
        return NativeBench(runner)
    import importlib

    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)(runner)


def suite_pass(ad: NativeBench, suite, prompt_ids) -> tuple[float, int | None]:
    """Every generate case as the recorder sends it; returns (wall s, recompiles or None)."""
    misses: int | None = 0 if ad.counts_recompiles else None
    t = time.perf_counter()
    for case in suite.cases:
        prompts = prompt_ids[case.id]
        for _ in range(case.repeats):
            calls = [prompts] + ([[p] for p in prompts] if case.alone else [])
            for call in calls:
                m = ad.suite_call(call, case.sampling)
                if misses is not None:
                    misses += m or 0
    return time.perf_counter() - t, misses


def measure(backend: str, suite_path: str, new_tokens: int, repeats: int, model_arg: str | None = None,
            attribution: str = "on") -> dict:
    from harness.backends.base import runner_class
    from harness.model import is_built_in, resolve
    from harness.recorder import tokenize_suite
    from harness.suite import load_suite

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    suite = load_suite(suite_path)
    model_a = resolve(model_arg, "A")
    model_b = resolve(model_arg, "B") if is_built_in(model_arg) else None
    prompt_ids = tokenize_suite(suite, model_a)
    batch = [p for case in suite.cases for p in prompt_ids[case.id]]
    cls = runner_class(backend)
    out: dict = {"backend": backend, "batch": len(batch), "new_tokens": new_tokens, "repeats": repeats}
    t0 = time.perf_counter()
    runner = cls(model_a)
    out["engine_start_s"] = time.perf_counter() - t0
    try:
        out["versions"] = runner.versions()
        out["device"] = runner.device()
        ad = native_bench(runner)
        specs = {"greedy": SamplingSpec(temperature=0.0, max_tokens=new_tokens, ignore_eos=True, top_logprobs=0),
                 "sampled": SamplingSpec(temperature=0.8, max_tokens=new_tokens, ignore_eos=True, seed=1234,
                                         top_logprobs=0)}
        variants = [(m, lp) for m in specs for lp in ((True, False) if ad.can_turn_off else (True,))]
        tokens = len(batch) * new_tokens

        def call(mode: str, lp: bool) -> tuple[float, list]:
            t = time.perf_counter()
            res = ad.generate(batch, specs[mode], lp)
            dt = time.perf_counter() - t
            n = sum(len(s) for row in res for s in row)
            if n != tokens:
                raise RuntimeError(f"{backend} {mode}: {n} tokens generated, expected {tokens}")
            return dt, res

        if attribution == "only":  # the batch's greedy completions, then the attribution alone
            out["first_call_s"], greedy_out = call("greedy", True)
            completions = [row[0] for row in greedy_out]
        else:
            first: dict[str, float] = {}
            greedy_out = None
            for mode, lp in variants:
                dt, res = call(mode, lp)
                first[f"{mode}/{'lp' if lp else 'nolp'}"] = dt
                if mode == "greedy" and lp:
                    greedy_out = res
            out["first_call_s"] = first[f"greedy/lp"]
            out["first_call_by_variant_s"] = first
            times: dict[str, list[float]] = {f"{m}/{'lp' if lp else 'nolp'}": [] for m, lp in variants}
            for _ in range(repeats):
                for mode, lp in variants:
                    times[f"{mode}/{'lp' if lp else 'nolp'}"].append(call(mode, lp)[0])
            out["generate"] = {k: {"median_s": median(v), "tokens_per_s": tokens / median(v), "all_s": v}
                               for k, v in times.items()}
            out["logprob_on_off_ratio"] = {m: (median(times[f"{m}/lp"]) / median(times[f"{m}/nolp"])
                                               if f"{m}/nolp" in times else None) for m in specs}

            # score (get_per_token_logps): teacher-forced over the greedy completions
            completions = [row[0] for row in greedy_out]
            score_spec = SamplingSpec(temperature=0.0, max_tokens=new_tokens, top_logprobs=1)
            runner.score(batch, completions, score_spec)  # compile
            st = []
            for _ in range(repeats):
                t = time.perf_counter()
                runner.score(batch, completions, score_spec)
                st.append(time.perf_counter() - t)
            out["score"] = {"median_s": median(st), "tokens_per_s": sum(map(len, completions)) / median(st), "all_s": st}

            # update_params: A -> B -> A (each timed; the next call must see them, which the parity suite checks)
            if model_b is not None:
                ut = []
                for _ in range(max(1, repeats // 2)):
                    for m in (model_b, model_a):
                        t = time.perf_counter()
                        runner.set_weights(m)
                        ut.append(time.perf_counter() - t)
                out["update_params"] = {"median_s": median(ut), "all_s": ut}
                ad.generate(batch[:1], specs["greedy"], True)  # the first call after a swap (recompile?)
            else:
                out["update_params"] = None

            # recompiles during a suite pass after a warm-up pass
            warm_s, _ = suite_pass(ad, suite, prompt_ids)
            suite_s, misses = suite_pass(ad, suite, prompt_ids)
            out["suite_warmup_s"] = warm_s
            out["suite_warm_s"] = suite_s
            out["recompiles_after_warmup"] = misses
            out["recompiles_source"] = ad.recompiles_source if misses is not None else NativeBench.recompiles_source

        if attribution != "off":
            layers = ad.attribution(batch, completions, specs["greedy"], repeats)
            if layers is not None:
                out["attribution"] = layers
    finally:
        runner.close()
    if "attribution" in out:
        ad.after_close(out, str(model_a.path), repeats)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--suite", default="cases/default.yaml")
    ap.add_argument("--json", required=True, help="where the figures go")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None)
    ap.add_argument("--attribution", choices=["on", "off", "only"], default="on")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # "first call (compile)" measures cold compiles: no persistent XLA cache (harness/paths.py) in this
    # process or the engine processes it starts, unless the caller set PARITY_JAX_CACHE itself
    os.environ.setdefault("PARITY_JAX_CACHE", "off")
    res = measure(args.backend, args.suite, args.new_tokens, args.repeats, args.model, args.attribution)
    res["jax_compile_cache"] = os.environ["PARITY_JAX_CACHE"]
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k not in ("generate", "score", "attribution")}, indent=1),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
