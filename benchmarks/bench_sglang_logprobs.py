"""Cost of logprobs in SglangJaxRollout.generate_batch: time with return_logprob vs without, and tokens/s.

Logprob selection happens on the device inside the jitted steps (compat.install_logprob_path):
per step only the chosen token's logprob ([batch]) and, when asked, the top-k ([batch, k]) leave
the device, never the [batch, vocab] distribution. The aim is a ratio <= 1.2.

    python benchmarks/bench_sglang_logprobs.py                       # embedded tiny model, CPU
    python benchmarks/bench_sglang_logprobs.py --batch 8 --new 64 --repeats 5 --json out.json

Run it in the sglang_jax venv (~/.cache/rollout-parity/nox/sglang_jax/bin/python). The engine
runs in its own process (as in the harness); every variant is called once untimed first so that
compile time is reported apart from steady-state time. On a shared machine wall times swing with
other jobs: the table also gives the engine process's own CPU seconds per call (from /proc), and
the wall figure is the best of the interleaved repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.backends.sglang_jax.rollout import SglangJaxRollout  # noqa: E402
from harness.model import embedded, resolve  # noqa: E402

VARIANTS = {
    "no logprobs": {"return_logprob": False},
    "logprobs": {"return_logprob": True},
    "logprobs + top-5": {"return_logprob": True, "top_logprobs_num": 5},
    "logprobs + top-5 + prompt": {"return_logprob": True, "top_logprobs_num": 5, "logprob_start_len": 0},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="local HF model directory (default: the embedded tiny model)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new", type=int, default=64, help="new tokens per prompt (EOS ignored)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=0.8, help="0 for greedy")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    model = embedded("A") if args.model is None else resolve(args.model)
    t0 = time.perf_counter()
    rollout = SglangJaxRollout(model_path=model.path, engine_options={"max_running_requests": max(8, args.batch)})
    start_s = time.perf_counter() - t0
    vocab = rollout.vocab_size
    prompts = [[(7 * i + 3 * j + 2) % (vocab - 2) + 2 for j in range(args.prompt_len)] for i in range(args.batch)]
    sp = {"max_new_tokens": args.new, "temperature": args.temperature, "ignore_eos": True}
    if args.temperature > 0:
        sp["sampling_seed"] = 1234
    tokens = args.batch * args.new

    pid = rollout._engine.proc.pid  # the engine process (isolated=True)

    def engine_cpu() -> float:
        """user+sys CPU seconds of the engine process: robust to other jobs on a shared machine."""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}

    def call(kw, name=None):
        c = engine_cpu()
        t = time.perf_counter()
        res = rollout.generate_batch(input_ids=prompts, sampling_params=sp, **kw)
        dt = time.perf_counter() - t
        if name:
            cpu[name].append(engine_cpu() - c)
        n = sum(len(s.token_ids) for p in res for s in p.samples)
        assert n == tokens, f"{n} tokens generated, expected {tokens}"
        if kw.get("return_logprob"):
            assert all(s.logprobs is not None and len(s.logprobs) == len(s.token_ids) for p in res for s in p.samples)
        return dt

    first = {name: call(kw) for name, kw in VARIANTS.items()}  # compiles (prefill/decode shapes, sampler variants)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # interleaved, so that machine load hits every variant alike
        for name, kw in VARIANTS.items():
            times[name].append(call(kw, name))
    rollout.close()

    base = min(times["no logprobs"])
    base_cpu = statistics.median(cpu["no logprobs"])
    rows = []
    print(f"sglang-jax {rollout.info['versions'].get('sglang-jax')} on {rollout.info['device']}; "
          f"batch {args.batch} x {args.new} new tokens, prompt {args.prompt_len}, T={args.temperature}; "
          f"engine start {start_s:.1f}s; {args.repeats} interleaved repeats")
    print(f"{'variant':28s} {'first call s':>12s} {'best s':>7s} {'median s':>9s} {'tokens/s':>9s} {'ratio':>6s}"
          f" {'engine cpu s':>12s} {'cpu ratio':>9s}")
    for name in VARIANTS:
        best, med, c = min(times[name]), statistics.median(times[name]), statistics.median(cpu[name])
        row = {"variant": name, "first_call_s": first[name], "best_s": best, "median_s": med,
               "tokens_per_s": tokens / best, "ratio_vs_no_logprobs": best / base, "engine_cpu_s": c,
               "cpu_ratio_vs_no_logprobs": c / base_cpu, "all_s": times[name], "all_cpu_s": cpu[name]}
        rows.append(row)
        print(f"{name:28s} {first[name]:12.2f} {best:7.3f} {med:9.3f} {tokens / best:9.1f} {best / base:6.2f}"
              f" {c:12.3f} {c / base_cpu:9.2f}")
    ratio = min(times["logprobs"]) / base
    cpu_ratio = statistics.median(cpu["logprobs"]) / base_cpu
    print(f"generate time with logprobs / without: {ratio:.2f} wall (best of {args.repeats}), "
          f"{cpu_ratio:.2f} engine CPU (median) (aim <= 1.2)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "engine_start_s": start_s, "rows": rows,
                                               "ratio": ratio, "cpu_ratio": cpu_ratio,
                                               "versions": rollout.info["versions"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
