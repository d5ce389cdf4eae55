"""Record and check the sampling suite with real engines: `python -m harness.sampling.study`.

    python -m harness.sampling.study --out runs/sampling-s1 --seed 1
    python -m harness.sampling.study --out runs/defect8 --backends reference,sglang_jax \\
        --cases dist-topk,dist-t1 --env sglang_jax:PARITY_SGLANG_COMPAT_OFF=seeded_sampler_exact

Each backend records with its own venv's interpreter (its registry venv under $PARITY_CACHE/nox, as
`nox -s <backend>` would), generate phases first, then score phases; then the checks run here
(harness.compare.compare_run) and the sampling verdicts are printed, one line each.

`--seed S` rewrites every seeded case's seed to S (a copy of the suite in the run directory): the
false-alarm study repeats the suite with five seeds. `--cases` keeps only the named cases.
`--env backend:KEY=VALUE` sets an environment variable for one backend's processes (compat
workarounds off: PARITY_SGLANG_COMPAT_OFF; engine options: PARITY_SGLANG_ENGINE).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from harness.backends import registry

ROOT = Path(__file__).resolve().parents[2]


def interpreter(backend: str) -> str:
    p = registry.venv_python(backend)
    return str(p) if p.exists() else sys.executable


def derive_suite(src: Path, dst: Path, seed: int | None, cases: list[str] | None) -> Path:
    doc = yaml.safe_load(src.read_text())
    if seed is not None:
        if (doc.get("defaults") or {}).get("sampling", {}).get("seed") is not None:
            doc["defaults"]["sampling"]["seed"] = seed
        for c in doc["cases"]:
            if (c.get("sampling") or {}).get("seed") is not None:
                c["sampling"]["seed"] = seed
        doc["suite"] = f"{doc['suite']}-seed{seed}"
    if cases:
        doc["cases"] = [c for c in doc["cases"] if c["id"] in cases]
        missing = sorted(set(cases) - {c["id"] for c in doc["cases"]})
        if missing:
            raise SystemExit(f"unknown case(s) {missing}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def record(backend: str, phase: str, suite: Path, out: Path, env: dict[str, str]) -> dict:
    log = out / "logs" / f"{backend}.{phase}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [interpreter(backend), "-m", "harness", "record", "--backend", backend, "--suite", str(suite),
           "--out", str(out), "--phase", phase, "--run-id", out.name]
    t0 = time.monotonic()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=fh,
                            stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t0
    print(f"[study] {backend} {phase}: exit {rc} in {wall:.0f}s (log {log})", file=sys.stderr, flush=True)
    return {"exit_code": rc, "wall_s": round(wall, 1), "log": str(log.relative_to(out))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.sampling.study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--suite", default=str(ROOT / "cases" / "sampling.yaml"))
    ap.add_argument("--backends", default=",".join(registry.default_backends()))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--cases", default=None)
    ap.add_argument("--env", action="append", default=[], help="backend:KEY=VALUE")
    ap.add_argument("--phase", choices=["all", "compare"], default="all", help="compare: only re-check")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    envs: dict[str, dict[str, str]] = {b: {} for b in backends}
    for e in args.env:
        b, kv = e.split(":", 1)
        k, v = kv.split("=", 1)
        envs.setdefault(b, {})[k] = v
    suite = out / "suite.yaml"
    if args.phase == "all":
        derive_suite(Path(args.suite), suite, args.seed,
                     [c.strip() for c in args.cases.split(",")] if args.cases else None)
        status: dict = {b: {"phases": {}} for b in backends}
        for phase in ("generate", "score"):
            for b in backends:
                status[b]["phases"][phase] = record(b, phase, suite, out, envs.get(b, {}))
        manifest = {"run_id": out.name, "suite": str(suite), "backends": backends, "backend_status": status,
                    "study": {"seed": args.seed, "env": envs, "cases": args.cases}}
        (out / "run.json").write_text(json.dumps(manifest, indent=2) + "\n")
    from harness.compare import compare_run

    verdicts = compare_run(out, str(suite))
    summary = []
    for v in verdicts:
        if v.check.startswith("sampling") or v.verdict != "pass":
            line = f"{v.verdict:7s} {v.check:22s} {v.case:24s} {','.join(v.backends):12s} {v.metric}={v.value}"
            print(line + f"  | {v.detail[:300]}")
            summary.append(v.model_dump(mode="json"))
    (out / "study.json").write_text(json.dumps({"verdicts": summary}, indent=1, allow_nan=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
