"""sglang-jax's engine-native paths for `parity bench` (harness.bench_worker.NativeBench), in its venv.

- generate with logprobs on or off: SglangJaxRollout.generate_batch with return_logprob;
- recompiles: the sum over a suite pass of the engine's `cache_miss_count` (meta_info; the max over a
  batch's requests, since one forward serves every request of the batch);
- attribution: `rollout` = SglangJaxRollout through its process boundary; `compat_engine` = the same request
  replayed on the same engine process by Engine.generate alone (with our compat patches); `bare_engine` = a
  second engine process with the same engine kwargs and only the workarounds it needs to run
  (compat.TO_RUN), measured after the first is closed (without compat.idle_scheduler_waits an idle 0.0.2
  scheduler thread busy-polls, so two engines at once would measure each other).
"""

from __future__ import annotations

import time

from harness.bench_worker import NativeBench, median
from harness.spec import SamplingSpec


class SglangJaxBench(NativeBench):
    can_turn_off = True
    counts_recompiles = True
    recompiles_source = "sglang-jax meta_info cache_miss_count (max over a batch's requests, summed over calls)"

    def generate(self, prompts: list[list[int]], spec: SamplingSpec, logprobs: bool) -> list[list[list[int]]]:
        r = self.runner
        res = r.rollout.generate_batch(input_ids=prompts, sampling_params=r._sampling(spec),
                                       return_logprob=logprobs, top_logprobs_num=0)
        return [[s.token_ids for s in p.samples] for p in res]

    def suite_call(self, prompts: list[list[int]], spec: SamplingSpec) -> int:
        r = self.runner
        res = r.rollout.generate_batch(input_ids=prompts, sampling_params=r._sampling(spec), return_logprob=True,
                                       logprob_start_len=0, top_logprobs_num=spec.top_logprobs)
        # one forward serves every request of the batch: count a step's misses once
        return max((int(s.meta.get("cache_miss_count", 0) or 0) for p in res for s in p.samples), default=0)

    def attribution(self, batch, completions, spec, repeats) -> dict:
        return _attrib_sglang(self.runner, batch, completions, spec, repeats)

    def after_close(self, out: dict, model_path: str, repeats: int) -> None:
        try:
            _attrib_sglang_bare(model_path, self.runner.rollout.info["engine_kwargs"], out["attribution"], repeats)
        except Exception as e:  # noqa: BLE001 - the other layers' figures stand; say why this one is missing
            out["attribution_error"] = f"bare engine: {type(e).__name__}: {e}"[:2000]
            for w in out["attribution"].values():
                w.pop("request", None)


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
                     "rollout": {"all_s": r_s, "median_s": median(r_s),
                                 "engine_inside_s": inside, "steps": steptimer.breakdown(inside, r_steps)},
                     "compat_engine": {"all_s": e_s, "median_s": median(e_s), "steps": steptimer.breakdown(e_s, e_steps)}}
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
            w["bare_engine"] = {"all_s": times[name], "median_s": median(times[name]),
                                "steps": steptimer.breakdown(times[name], steps[name]), "compat_off": off}
            w.pop("request")  # sent again; not a figure
    finally:
        eng.shutdown()
