"""`python -m harness.rl`: GRPO/PPO reward curves per rollout engine, compared statistically.

    python -m harness.rl run --out reports/rl --steps 40 --seeds 3 --engines vanilla,sglang_jax,vllm
        (driver venv) train every (algo, engine, seed) in its engine venv, one process each,
        then compare: RUN/rl/<algo>.json, RUN/rl/comparison.json, and report: RUN/checks.json,
        RUN/summary.json, RUN/junit.xml, RUN/index.html
    python -m harness.rl train --config '<RunConfig json>' --out RUN     (inside an engine venv)
    python -m harness.rl compare --run RUN                 (re-run the statistics and the report only)
    python -m harness.rl power --run RUN [--run RUN ...] --out studies/rl-power/power.json
        (driver venv) the power study: seed-to-seed spread per metric, simulated power of the design

Exit codes: 0 every verdict passes, 1 a verdict fails, 2 harness error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.rl.config import (ALGOS, DEFAULT_ENGINES, DEFAULT_MARGINS, PARITY_METRICS, TIERS, RunConfig,
                               describe_seeds, margins_for)

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def default_jobs() -> int:
    """Training runs at a time by default: 2, or 1 on a one-core machine (docs/rl.md, "Runs at a time")."""
    return max(1, min(2, os.cpu_count() or 1))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m harness.rl", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = RunConfig()

    run = sub.add_parser("run", help="train every algo x engine x seed (one process each), then compare",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--out", default="reports", help="parent directory of run directories")
    run.add_argument("--run-id", default=None, help="run directory name (default: rl-<UTC timestamp>)")
    run.add_argument("--algos", default=",".join(ALGOS), help="comma-separated: grpo,ppo")
    run.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                     help="comma-separated: vanilla (tunix baseline), sglang_jax, vllm; injected defects (test "
                          "hooks): append '-stale' to disable an engine's update_params (vanilla-stale), "
                          "'-temp<s>' to make it sample at s x the temperature the trainer uses (vllm-temp1.1)")
    run.add_argument("--tier", choices=sorted(TIERS), default="default",
                     help="the design: seeds per engine and equivalence margins ("
                          + "; ".join(f"{k}: {describe_seeds(v['seeds'])} seeds" for k, v in TIERS.items()) + ")")
    run.add_argument("--seeds", type=int, default=None, help="seeds per engine for every algorithm (0..N-1); default: the tier's, per algorithm")
    run.add_argument("--steps", type=int, default=d.steps, help="training steps per run")
    run.add_argument("--window", type=int, default=10, help="steps in the final-reward window")
    run.add_argument("--alpha", type=float, default=0.05,
                     help="TOST alpha of each equivalence test; family-wise alpha of the difference tests per "
                          "algorithm (Holm)")
    _margins(run)
    run.add_argument("--k3-threshold", type=float, default=1e-3, help="max allowed per-step k3 mismatch")
    run.add_argument("--launcher", choices=["direct", "nox"], default="direct",
                     help="direct: the engine venv's python (installed once via its nox session); "
                          "nox: `nox -s rl_sglang|rl_vllm -- train ...` per run")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds per training process")
    run.add_argument("--jobs", type=int, default=default_jobs(),
                     help="training runs at a time (default: min(2, CPU cores)). A run's rewards and completions do not depend "
                          "on it (measured bit-identical); a run is mostly one busy Python thread, so 2 at a time on 2 "
                          "cores measured, for 2 GRPO runs: vanilla 15.6 s against 26-28 s sequential, sglang_jax 42 s "
                          "against 54 s, vllm 21 s against 36 s (docs/rl.md). --timeout stays per run")
    run.add_argument("--resume", action="store_true", help="skip runs whose result file says ok")
    run.add_argument("--no-engine-score", action="store_true",
                     help="skip scoring samples with the engine's get_per_token_logps (faster)")
    _hyper(run, d)

    tr = sub.add_parser("train", help="one training run inside an engine venv")
    tr.add_argument("--config", required=True, help="RunConfig as JSON")
    tr.add_argument("--out", required=True, help="run directory")

    cmp_ = sub.add_parser("compare", help="recompute curves, verdicts and the report from RUN/rl/runs/*.json",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cmp_.add_argument("--run", required=True)
    cmp_.add_argument("--window", type=int, default=10)
    cmp_.add_argument("--alpha", type=float, default=0.05)
    cmp_.add_argument("--k3-threshold", type=float, default=1e-3)
    cmp_.add_argument("--tier", choices=sorted(TIERS), default=None,
                      help="whose margins to test against (default: the tier the run was made with, from "
                           "rl/plan.json, else default)")
    _margins(cmp_)

    pw = sub.add_parser("power", help="the power study of rl.curve_parity's design from finished runs",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pw.add_argument("--run", action="append", default=[], help="run directory (repeatable: pooled)")
    pw.add_argument("--inputs", default=None, help="a study's JSON: its per-seed inputs, to which the --run "
                                                   "directories are added (a seed run again replaces its old values)")
    pw.add_argument("--out", default=None, help="write the study here (JSON)")
    pw.add_argument("--window", type=int, default=10)
    pw.add_argument("--alpha", type=float, default=0.05)
    pw.add_argument("--max-seeds", type=int, default=10)
    pw.add_argument("--design-engines", type=int, default=len(DEFAULT_ENGINES),
                    help="engines of the design (their pairs x metrics share the difference tests' alpha)")
    _margins(pw)
    return ap


def _margin(text: str) -> tuple[str | None, str, float]:
    """METRIC=VALUE (every algorithm) or ALGO.METRIC=VALUE."""
    key, sep, value = text.partition("=")
    algo, dot, metric = key.rpartition(".")
    if not sep or metric not in PARITY_METRICS or (dot and algo not in ALGOS):
        raise argparse.ArgumentTypeError(f"{text!r}: expected [ALGO.]METRIC=VALUE with ALGO one of {list(ALGOS)} and "
                                         f"METRIC one of {sorted(PARITY_METRICS)}")
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a margin must be > 0")
    return (algo or None), metric, v


def _margins(p: argparse.ArgumentParser) -> None:
    p.add_argument("--margin", type=_margin, action="append", default=[], metavar="[ALGO.]METRIC=VALUE",
                   help="equivalence margin of a curve-parity metric (repeatable), over the tier's (default tier: "
                        + "; ".join(f"{a}: " + ", ".join(f"{k}={v:g}" for k, v in m.items())
                                    for a, m in DEFAULT_MARGINS.items()) + ")")


def with_overrides(base: dict, overrides) -> dict[str, dict[str, float]]:
    out = {algo: margins_for(base, algo) for algo in ALGOS}
    for algo, metric, v in overrides:
        for a in ([algo] if algo else ALGOS):
            out[a][metric] = v
    return out


def margins_of(args) -> dict[str, dict[str, float]]:
    return with_overrides(TIERS[getattr(args, "tier", None) or "default"]["margins"], args.margin)


def _hyper(p: argparse.ArgumentParser, d: RunConfig) -> None:
    g = p.add_argument_group("hyperparameters (identical for every engine)")
    g.add_argument("--prompts-per-step", type=int, default=d.prompts_per_step, help="GRPO prompts per step")
    g.add_argument("--num-generations", type=int, default=d.num_generations, help="GRPO group size")
    g.add_argument("--ppo-batch", type=int, default=d.ppo_batch, help="PPO prompts per step")
    g.add_argument("--max-tokens", type=int, default=d.max_tokens)
    g.add_argument("--actor-lr", type=float, default=None, help="default: 0.05 (GRPO), 0.02 (PPO)")
    g.add_argument("--critic-lr", type=float, default=d.critic_lr)
    g.add_argument("--model", default=None, help="local HF Qwen3 directory (default: the embedded tiny model)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        from harness.rl.train import run_to_file

        cfg = RunConfig.from_json(args.config)
        path = run_to_file(cfg, Path(args.out))
        res = json.loads(path.read_text())
        r = [s["reward_mean"] for s in res["steps"]]
        print(f"[rl] {cfg.algo} {cfg.label} seed {cfg.seed}: {len(r)} steps, reward "
              f"{r[0] if r else float('nan'):.3f} -> {r[-1] if r else float('nan'):.3f}, "
              f"syncs {res['syncs']} (skipped {res['syncs_skipped']}), train {res['train_seconds']:.1f} s",
              flush=True)
        return EXIT_PASS
    if args.command == "compare":
        from harness.rl.compare import compare_run, print_summary
        from harness.rl.publish import publish

        margins = margins_of(args)
        if args.tier is None:  # the margins the run was made with
            try:
                planned = json.loads((Path(args.run) / "rl" / "plan.json").read_text()).get("margins") or {}
            except (OSError, ValueError):
                planned = {}
            if planned:
                margins = with_overrides(planned, args.margin)
        out = compare_run(Path(args.run), window=args.window, alpha=args.alpha, k3_threshold=args.k3_threshold,
                          margins=margins)
        print_summary(out)
        return publish(Path(args.run), out, lambda msg: print(msg, flush=True))
    if args.command == "power":
        from harness.rl.power import print_study, study, write_study

        if not args.run and not args.inputs:
            print("[rl power] error: give --run RUN (repeatable) or --inputs STUDY.json", file=sys.stderr)
            return EXIT_ERROR
        inputs = json.loads(Path(args.inputs).read_text())["inputs"] if args.inputs else None
        doc = study([Path(r) for r in args.run], inputs=inputs, window=args.window, alpha=args.alpha,
                    margins=margins_of(args), max_seeds=args.max_seeds, design_engines=args.design_engines)
        print_study(doc)
        if args.out:
            write_study(Path(args.out), doc)
            print(f"[rl power] -> {args.out}")
        return EXIT_PASS
    if args.command == "run":
        from harness.rl.driver import run_all

        if args.seeds is None:
            args.seeds = TIERS[args.tier]["seeds"]
        return run_all(args)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
