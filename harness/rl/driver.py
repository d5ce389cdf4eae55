"""`python -m harness.rl run`: every (algo, engine, seed) as its own training process, then compare.

Each run is a separate process of its engine's venv (sglang-jax SIGKILLs its host
process on failure and its shutdown kills the caller's children; the vLLM and
sglang-jax venvs cannot be the same interpreter anyway). A run that crashes or
exceeds --timeout is recorded as an error verdict; the others go on. --jobs N
runs N at a time (default min(2, cores)): a run is mostly one busy Python thread
(the trainer, or the trainer waiting on its engine process), so two share 2 cores
well, and every run's curve is the same as when run alone (docs/rl.md).
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.backends import registry
from harness.rl.config import ENGINES, RunConfig, describe_seeds, seeds_for
from harness.rl.records import run_path, write_json

ROOT = Path(__file__).resolve().parents[2]


def _nox_cmd() -> list[str]:
    return [sys.executable, "-m", "nox"] if shutil.which("nox") is None else ["nox"]


def ensure_venv(session: str, log) -> None:
    """Install (or confirm) an engine venv through its nox session (no posargs: install only)."""
    t0 = time.monotonic()
    proc = subprocess.run(_nox_cmd() + ["-s", session], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nox -s {session} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    log(f"[rl] venv {session} ready ({time.monotonic() - t0:.0f} s)")


def train_command(cfg: RunConfig, run_dir: Path, launcher: str) -> list[str]:
    session = ENGINES[cfg.engine]
    args = ["train", "--config", cfg.to_json(), "--out", str(run_dir)]
    if launcher == "nox":
        return _nox_cmd() + ["-s", session, "--"] + args
    if launcher == "current":  # this interpreter (tests inside an engine venv)
        return [sys.executable, "-m", "harness.rl"] + args
    return [str(registry.venv_python(session)), "-m", "harness.rl"] + args


def run_one(cfg: RunConfig, run_dir: Path, launcher: str, timeout: float, log) -> dict:
    out_path = run_path(run_dir, cfg)
    log_path = run_dir / "rl" / "logs" / (out_path.stem + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    status = None
    with log_path.open("w") as fh:
        proc = subprocess.Popen(train_command(cfg, run_dir, launcher), cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc, status = -9, f"timed out after {timeout:.0f} s"
    wall = time.monotonic() - t0
    if rc != 0 or not out_path.exists() or json.loads(out_path.read_text()).get("status") != "ok":
        tail = log_path.read_text(errors="replace")[-3000:]
        reason = status or (f"exit {rc}" + (" (SIGKILL: out of memory, or sglang-jax killed its host)"
                                            if rc in (-9, 137) else ""))
        prior = json.loads(out_path.read_text()) if out_path.exists() else {}
        result = {"config": json.loads(cfg.to_json()), "label": cfg.label, "status": "error",
                  "error": f"{reason}: {prior.get('error_type', '')} {prior.get('error', '')}".strip()
                  + f"\n--- log tail ({log_path}) ---\n{tail}", "wall_seconds": wall}
        write_json(out_path, result)
        log(f"[rl]   ERROR {cfg.algo} {cfg.label} seed {cfg.seed}: {reason} ({wall:.0f} s), log {log_path}")
        return result
    result = json.loads(out_path.read_text())
    r = [s["reward_mean"] for s in result["steps"]]
    log(f"[rl]   {cfg.algo} {cfg.label} seed {cfg.seed}: reward {r[0]:.3f} -> {r[-1]:.3f} in {len(r)} steps, "
        f"{wall:.0f} s")
    return result


def run_all(args) -> int:
    from harness.rl.compare import compare_run, print_summary
    from harness.rl.publish import publish

    t_start = time.monotonic()

    lock = threading.Lock()

    def log(msg: str) -> None:
        with lock:  # whole lines when runs go concurrently (--jobs)
            print(msg, flush=True)

    run_id = args.run_id or "rl-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = (Path(args.out) / run_id).resolve()
    (run_dir / "rl").mkdir(parents=True, exist_ok=True)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    labels = [e.strip() for e in args.engines.split(",") if e.strip()]
    try:
        for label in labels:
            RunConfig.from_label(label)
    except ValueError as e:
        print(f"[rl] error: {e}", file=sys.stderr)
        return 2
    base = dict(steps=args.steps, prompts_per_step=args.prompts_per_step, num_generations=args.num_generations,
                ppo_batch=args.ppo_batch, max_tokens=args.max_tokens, actor_lr=args.actor_lr,
                critic_lr=args.critic_lr, model=args.model, score_with_engine=not args.no_engine_score)
    plan = [RunConfig.from_label(label, algo=algo, seed=seed, **base)
            for algo in algos for label in labels for seed in range(seeds_for(args.seeds, algo))]
    from harness.rl.cli import margins_of

    write_json(run_dir / "rl" / "plan.json", {"runs": [json.loads(c.to_json()) for c in plan],
                                              "tier": args.tier, "margins": margins_of(args),
                                              "argv": sys.argv, "started": _dt.datetime.now().isoformat()})
    log(f"[rl] {len(plan)} training runs ({', '.join(algos)} x {', '.join(labels)} x {describe_seeds(args.seeds)} seeds, "
        f"{args.steps} steps) -> {run_dir}")
    if args.launcher == "direct":
        for session in sorted({ENGINES[c.engine] for c in plan}):
            try:
                ensure_venv(session, log)
            except RuntimeError as e:
                log(f"[rl] {e}")  # its runs fail below and are reported as errors
    todo = []
    for i, cfg in enumerate(plan, 1):
        path = run_path(run_dir, cfg)
        if args.resume and path.exists() and json.loads(path.read_text()).get("status") == "ok":
            log(f"[rl] ({i}/{len(plan)}) {cfg.algo} {cfg.label} seed {cfg.seed}: already done")
            continue
        todo.append((i, cfg))

    def start(i: int, cfg: RunConfig) -> dict:
        log(f"[rl] ({i}/{len(plan)}) {cfg.algo} {cfg.label} seed {cfg.seed} ...")
        return run_one(cfg, run_dir, args.launcher, args.timeout, log)

    jobs = max(1, int(getattr(args, "jobs", 1) or 1))
    if jobs == 1:
        for i, cfg in todo:
            start(i, cfg)
    else:  # each run is its own process; threads only wait on them (--timeout stays per process)
        log(f"[rl] {jobs} runs at a time")
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            for fut in [pool.submit(start, i, cfg) for i, cfg in todo]:
                fut.result()
    comparison = compare_run(run_dir, window=args.window, alpha=args.alpha, k3_threshold=args.k3_threshold,
                             margins=margins_of(args))
    print_summary(comparison)
    wall = time.monotonic() - t_start
    write_json(run_dir / "rl" / "wall.json", {"wall_seconds": wall, "runs": len(plan)})
    log(f"[rl] wall time {wall:.0f} s ({wall / 60:.1f} min) for {len(plan)} runs")
    return publish(run_dir, comparison, log)  # checks.json, summary.json, junit.xml, index.html
