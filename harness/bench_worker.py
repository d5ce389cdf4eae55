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
(harness/steptimer.py):
- sglang_jax: `rollout` = SglangJaxRollout through its process boundary; `compat_engine` =
  the same request replayed on the same engine process by Engine.generate alone (with our
  compat patches); `bare_engine` = a second engine process with the same engine kwargs and
  only the workarounds it needs to run (compat.TO_RUN), measured after the first is closed.
- vllm: `rollout` = VllmRollout; `bare_engine` = its own `LLM.generate` with the same
  SamplingParams (no compat layer: there is none).
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


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


class _Adapter:
    """Backend-native generate with logprobs on/off; generic Runner.generate otherwise."""

    def __init__(self, runner):
        self.runner = runner
        self.name = runner.name
        self.can_turn_off = self.name in ("sglang_jax", "vllm")

    def generate(self, prompts: list[list[int]], spec: SamplingSpec, logprobs: bool) -> list[list[list[int]]]:
        r = self.runner
        if self.name == "sglang_jax":
            res = r.rollout.generate_batch(input_ids=prompts, sampling_params=r._sampling(spec),
                                           return_logprob=logprobs, top_logprobs_num=0)
            return [[s.token_ids for s in p.samples] for p in res]
        if self.name == "vllm":
            from harness.sampling.mapping import to_vllm

            fields = to_vllm(spec)
            fields["logprobs"] = 0 if logprobs else None  # 0: the sampled token's logprob only
            res = r.rollout.generate_ids(prompts, fields, prompt_logprobs="none")
            return [[s.token_ids for s in p.samples] for p in res]
        return [[s.completion_ids for s in row] for row in r.generate(prompts, spec)]

    def suite_pass(self, suite, prompt_ids) -> tuple[float, int | None]:
        """Every generate case as the recorder sends it; returns (wall s, recompiles or None)."""
        r = self.runner
        misses: int | None = 0 if self.name == "sglang_jax" else None
        t = time.perf_counter()
        for case in suite.cases:
            prompts = prompt_ids[case.id]
            for _ in range(case.repeats):
                if self.name == "sglang_jax":
                    res = r.rollout.generate_batch(input_ids=prompts, sampling_params=r._sampling(case.sampling),
                                                   return_logprob=True, logprob_start_len=0,
                                                   top_logprobs_num=case.sampling.top_logprobs)
                    # one forward serves every request of the batch: count a step's misses once
                    misses += max((int(s.meta.get("cache_miss_count", 0) or 0) for p in res for s in p.samples),
                                  default=0)
                else:
                    r.generate(prompts, case.sampling)
                if case.alone:
                    for p in prompts:
                        if self.name == "sglang_jax":
                            res = r.rollout.generate_batch(
                                input_ids=[p], sampling_params=r._sampling(case.sampling), return_logprob=True,
                                logprob_start_len=0, top_logprobs_num=case.sampling.top_logprobs)
                            misses += max((int(s.meta.get("cache_miss_count", 0) or 0) for s in res[0].samples),
                                          default=0)
                        else:
                            r.generate([p], case.sampling)
        return time.perf_counter() - t, misses


def _median_or_none(xs: list[float]) -> float | None:
    return _median(xs) if xs else None


def _attrib_sglang(runner, batch: list[list[int]], completions: list[list[int]], spec, repeats: int) -> dict:
    """rollout and compat_engine, interleaved on one engine; returns the requests for the bare engine."""
    from harness import steptimer

    ro = runner.rollout
    eng = ro._engine
    eng.step_timing()
    work = {
        "generate": lambda: ro.generate_batch(input_ids=batch, sampling_params=runner._sampling(spec),
                                              return_logprob=True, top_logprobs_num=0),
        "get_per_token_logps": lambda: ro.get_per_token_logps(batch, completions),
    }
    out = {}
    for name, fn in work.items():
        fn()  # compile
        req = eng.last_request()
        eng.timed_generate(**req)
        r_s, inside, e_s, e_steps, r_steps = [], [], [], [], []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            r_s.append(time.perf_counter() - t)
            last = eng.last_timing()
            inside.append(last["engine_s"])
            r_steps.append(last["steps"])
            last = eng.timed_generate(**req)
            e_s.append(last["engine_s"])
            e_steps.append(last["steps"])
        out[name] = {"request": req,
                     "rollout": {"all_s": r_s, "median_s": _median(r_s),
                                 "engine_inside_s": inside, "steps": steptimer.breakdown(inside, r_steps)},
                     "compat_engine": {"all_s": e_s, "median_s": _median(e_s), "steps": steptimer.breakdown(e_s, e_steps)}}
    return out


def _attrib_sglang_bare(model_path: str, engine_kwargs: dict, work: dict, repeats: int) -> None:
    """The bare engine (compat.TO_RUN only) on the requests the rollout sent; adds `bare_engine` to `work`."""
    from harness import steptimer
    from harness.backends.sglang_jax import compat
    from harness.backends.sglang_jax.engine import EngineProcess

    off = [n for n in compat.REGISTRY if n not in compat.TO_RUN]
    eng = EngineProcess(model_path, engine_kwargs=engine_kwargs, compat_off=off)
    try:
        eng.step_timing()
        for name, w in work.items():
            eng.timed_generate(**w["request"])  # compile
        times: dict[str, list] = {name: [] for name in work}
        steps: dict[str, list] = {name: [] for name in work}
        for _ in range(repeats):
            for name, w in work.items():
                last = eng.timed_generate(**w["request"])
                times[name].append(last["engine_s"])
                steps[name].append(last["steps"])
        for name, w in work.items():
            w["bare_engine"] = {"all_s": times[name], "median_s": _median(times[name]),
                                "steps": steptimer.breakdown(times[name], steps[name]), "compat_off": off}
            w.pop("request")  # sent again; not a figure
    finally:
        eng.shutdown()


def _attrib_vllm(runner, batch: list[list[int]], completions: list[list[int]], spec, repeats: int) -> dict:
    """VllmRollout and its own LLM.generate with the same SamplingParams, interleaved, steps timed."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from harness import steptimer
    from harness.sampling.mapping import to_vllm

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
        out[name] = {layer: {"all_s": ts, "median_s": _median(ts), "steps": steptimer.breakdown(ts, st)}
                     for layer, (ts, st) in res.items()}
    return out


def measure(backend: str, suite_path: str, new_tokens: int, repeats: int, model_arg: str | None = None,
            attribution: str = "on") -> dict:
    from harness.backends.base import runner_class
    from harness.model import is_built_in, resolve
    from harness.record import tokenize_suite
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
        ad = _Adapter(runner)
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
            out["generate"] = {k: {"median_s": _median(v), "tokens_per_s": tokens / _median(v), "all_s": v}
                               for k, v in times.items()}
            out["logprob_on_off_ratio"] = {m: (_median(times[f"{m}/lp"]) / _median(times[f"{m}/nolp"])
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
            out["score"] = {"median_s": _median(st), "tokens_per_s": sum(map(len, completions)) / _median(st), "all_s": st}

            # update_params: A -> B -> A (each timed; the next call must see them, which the parity suite checks)
            if model_b is not None:
                ut = []
                for _ in range(max(1, repeats // 2)):
                    for m in (model_b, model_a):
                        t = time.perf_counter()
                        runner.set_weights(m)
                        ut.append(time.perf_counter() - t)
                out["update_params"] = {"median_s": _median(ut), "all_s": ut}
                ad.generate(batch[:1], specs["greedy"], True)  # the first call after a swap (recompile?)
            else:
                out["update_params"] = None

            # recompiles during a suite pass after a warm-up pass
            warm_s, _ = ad.suite_pass(suite, prompt_ids)
            suite_s, misses = ad.suite_pass(suite, prompt_ids)
            out["suite_warmup_s"] = warm_s
            out["suite_warm_s"] = suite_s
            out["recompiles_after_warmup"] = misses
            out["recompiles_source"] = ("sglang-jax meta_info cache_miss_count (max over a batch's requests, summed "
                                        "over calls)" if misses is not None else "n/a: the backend exposes no count")

        if attribution != "off" and backend in ("sglang_jax", "vllm"):
            fn = _attrib_sglang if backend == "sglang_jax" else _attrib_vllm
            out["attribution"] = fn(runner, batch, completions, specs["greedy"], repeats)
    finally:
        runner.close()
    if backend == "sglang_jax" and "attribution" in out:
        # after the first engine is gone: an idle sglang-jax scheduler thread busy-polls, so two engines at once
        # would measure each other
        try:
            _attrib_sglang_bare(str(model_a.path), runner.rollout.info["engine_kwargs"], out["attribution"], repeats)
        except Exception as e:  # noqa: BLE001 - the other layers' figures stand; say why this one is missing
            out["attribution_error"] = f"bare engine: {type(e).__name__}: {e}"[:2000]
            for w in out["attribution"].values():
                w.pop("request", None)
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
    res = measure(args.backend, args.suite, args.new_tokens, args.repeats, args.model, args.attribution)
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k not in ("generate", "score", "attribution")}, indent=1),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
