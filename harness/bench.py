"""`parity bench`: what SglangJaxRollout costs next to VllmRollout, on the same suite, model and machine.

    parity bench                                      vllm and sglang_jax, cases/default.yaml, reports/bench/
    parity bench --backends sglang_jax --repeats 5
    parity bench --overhead-only --records 100000     only the harness's compare + report time

Each backend is measured in its own process and venv (harness.bench_worker, run by the venv's
python under $PARITY_CACHE/nox/<backend>/, created through `nox -s <backend>` when missing), with
XLA's persistent compilation cache off (PARITY_JAX_CACHE=off unless set: first-call times are cold compiles).
Then the harness's own overhead: compare_run + write_reports over N synthetic-but-valid records
made from a real run's shapes (the committed golden run's records in the current record format,
replicated under new case ids; the case hashes stay valid since they do not cover the id).

Writes OUT/bench.json in the shape the report renders (docs/report.md: device, note, figures),
plus the raw per-backend figures (`backends`), the ratios (`ratios`) and `overhead`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from harness.backends import registry
from harness.rundir import RunDirError, RunManifest, RunRecords, read_manifest_dict, write_manifest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden" / "cpu-x86_64-float32"
UNIT, REF = registry.unit_under_test(), registry.baseline_engine()  # ratios are UNIT / REF


# ---------------------------------------------------------------- synthetic records (harness overhead)
def make_synthetic_run(dest: Path, n_records: int, template: Path = GOLDEN) -> dict:
    """A run directory of about n_records records (at least one replica of the template).

    Every case of the template's suite is replicated as `<id>-sNNNNN` with the same content (so the
    template's case hashes hold), and every non-session record is copied under each replica's id.
    Session records are written once per file. Returns {'records': count, 'replicas', 'suite'}."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "records").mkdir(parents=True)
    raw = yaml.safe_load((template / "suite.yaml").read_text())
    # in the current record format, as a run recorded today writes it (a version-1 template is upgraded)
    files = {name: [r.model_dump(mode="json") for r in recs] for name, recs in RunRecords.load(template).files.items()}
    per_replica = sum(1 for recs in files.values() for r in recs if r.get("kind") != "session")
    sessions = sum(1 for recs in files.values() for r in recs if r.get("kind") == "session")
    replicas = max(1, round((n_records - sessions) / max(per_replica, 1)))
    sid = lambda cid, i: f"{cid}-s{i:05d}"  # noqa: E731
    cases = []
    for i in range(replicas):
        for c in raw["cases"]:
            cases.append({**c, "id": sid(c["id"], i)})
    suite = {**raw, "cases": cases}
    suite_path = dest / "suite.yaml"
    suite_path.write_text(yaml.safe_dump(suite, sort_keys=False))
    count = 0
    for name, recs in files.items():
        with (dest / "records" / name).open("w") as fh:
            for r in recs:
                if r.get("kind") == "session":
                    fh.write(json.dumps(r) + "\n")
                    count += 1
            body = [r for r in recs if r.get("kind") != "session"]
            for i in range(replicas):
                for r in body:
                    if r.get("key"):
                        r = {**r, "key": {**r["key"], "case_id": sid(r["key"]["case_id"], i)}}
                    fh.write(json.dumps(r) + "\n")
                    count += 1
    manifest = read_manifest_dict(template)
    manifest.update({"suite": str(suite_path.resolve()), "run_id": f"synthetic-{count}"})
    write_manifest(dest, manifest)
    return {"records": count, "replicas": replicas, "suite": str(suite_path)}


def time_overhead(n_records: int, workdir: Path) -> dict:
    from harness.compare import compare
    from harness.report import write_reports

    t = time.perf_counter()
    info = make_synthetic_run(workdir, n_records)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    compared = compare(workdir)
    compare_s = time.perf_counter() - t
    t = time.perf_counter()
    summary = write_reports(workdir, compared)
    report_s = time.perf_counter() - t
    return {"records": info["records"], "replicas": info["replicas"], "generate_records_s": gen_s,
            "compare_s": compare_s, "report_s": report_s, "compare_report_s": compare_s + report_s,
            "verdicts": len(compared.verdicts), "verdict": summary.get("verdict")}


# ---------------------------------------------------------------- engines
def backend_python(backend: str) -> Path:
    py = registry.venv_python(backend)
    if not py.exists():  # install the venv through its own session (no posargs: install only)
        subprocess.run([sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-s", registry.venv_name(backend)],
                       cwd=ROOT, check=True)
    return py


def run_worker(backend: str, args, out: Path) -> dict:
    js = out / f"{backend}.worker.json"
    log = out / f"{backend}.worker.log"
    cmd = [str(backend_python(backend)), "-m", "harness.bench_worker", "--backend", backend,
           "--suite", str(Path(args.suite).resolve()), "--json", str(js), "--new-tokens", str(args.new_tokens),
           "--repeats", str(args.repeats), "--attribution", getattr(args, "attribution", "on")]
    if args.model:
        cmd += ["--model", str(Path(args.model).resolve())]
    print(f"[bench] {backend}: measuring (log {log})", file=sys.stderr, flush=True)
    t = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=args.timeout,
                              start_new_session=True)
    if proc.returncode != 0 or not js.exists():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        return {"backend": backend, "error": f"exit {proc.returncode}:\n{tail}"}
    res = json.loads(js.read_text())
    res["process_wall_s"] = time.perf_counter() - t
    return res


def _get(d: dict | None, *path):
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


#: (title, unit, lower_is_better, path into a worker's result)
FIGURES = [
    ("generate greedy, logprobs on", "tok/s", False, ("generate", "greedy/lp", "tokens_per_s")),
    ("generate greedy, logprobs off", "tok/s", False, ("generate", "greedy/nolp", "tokens_per_s")),
    ("generate sampled, logprobs on", "tok/s", False, ("generate", "sampled/lp", "tokens_per_s")),
    ("generate sampled, logprobs off", "tok/s", False, ("generate", "sampled/nolp", "tokens_per_s")),
    ("logprob on/off time ratio, greedy", "x", True, ("logprob_on_off_ratio", "greedy")),
    ("logprob on/off time ratio, sampled", "x", True, ("logprob_on_off_ratio", "sampled")),
    ("score (get_per_token_logps)", "tok/s", False, ("score", "tokens_per_s")),
    ("update_params latency", "s", True, ("update_params", "median_s")),
    ("engine start", "s", True, ("engine_start_s",)),
    ("first call (compile)", "s", True, ("first_call_s",)),
    ("suite generate pass after warm-up", "s", True, ("suite_warm_s",)),
    ("JIT recompiles after warm-up", "count", True, ("recompiles_after_warmup",)),
]


LAYERS = ("bare_engine", "compat_engine", "rollout")
WORK = ("generate", "get_per_token_logps")


def attribution(results: dict[str, dict]) -> dict:
    """Per backend and work (the same batch through each layer, bench_worker): median wall per layer, the ratios
    rollout_overhead_ratio = rollout / bare engine (our whole share), compat_overhead_ratio = compat engine / bare
    engine (our patches), boundary_ratio = rollout / compat engine (process boundary + bookkeeping), and the
    per-decode-step breakdown of each layer. Backends without attribution are left out."""
    out: dict[str, dict] = {}
    for b, r in results.items():
        att = r.get("attribution") if "error" not in r else None
        if not att:
            continue
        out[b] = {}
        for work in WORK:
            w = att.get(work) or {}
            t = {layer: _get(w, layer, "median_s") for layer in LAYERS}

            def ratio(a, c):
                return t[a] / t[c] if t.get(a) and t.get(c) else None

            out[b][work] = {
                "median_s": t,
                "rollout_overhead_ratio": ratio("rollout", "bare_engine"),
                "compat_overhead_ratio": ratio("compat_engine", "bare_engine"),
                "boundary_ratio": ratio("rollout", "compat_engine"),
                "steps": {layer: _get(w, layer, "steps") for layer in LAYERS if _get(w, layer, "steps")},
            }
    return out


def _ratios_by(att: dict, key: str) -> dict:
    return {b: {work: v[key] for work, v in works.items()} for b, works in att.items()}


def format_attribution(att: dict) -> list[str]:
    if not att:
        return []
    lines = ["attribution (same batch through each layer; median wall s; ratios = our share):",
             f"  {'backend':11s} {'work':20s} {'bare':>8s} {'compat':>8s} {'rollout':>8s} "
             f"{'compat/bare':>11s} {'rollout/bare':>12s} {'rollout/compat':>14s}"]
    for b, works in att.items():
        for work, v in works.items():
            t = v["median_s"]
            lines.append(f"  {b:11s} {work:20s} {_fmt(t['bare_engine']):>8s} {_fmt(t['compat_engine']):>8s} "
                         f"{_fmt(t['rollout']):>8s} {_fmt(v['compat_overhead_ratio']):>11s} "
                         f"{_fmt(v['rollout_overhead_ratio']):>12s} {_fmt(v['boundary_ratio']):>14s}")
    lines.append("per step (ms; device = the jitted forward + sampler alone, host = the rest of the step; outside ="
                 " call wall - its steps, s per call):")
    lines.append(f"  {'backend':11s} {'work':20s} {'layer':13s} {'mode':7s} {'steps':>6s} {'step':>7s} "
                 f"{'forward':>8s} {'sample':>7s} {'host':>7s} {'outside':>8s} {'device %':>8s}")
    for b, works in att.items():
        for work, v in works.items():
            for layer, st in v["steps"].items():
                for mode in ("prefill", "decode"):
                    m = st.get(mode)
                    if not m:
                        continue
                    share = (st.get("shares") or {}).get("device")
                    lines.append(f"  {b:11s} {work:20s} {layer:13s} {mode:7s} {m['steps_per_call']:6.1f} "
                                 f"{m['step_ms']:7.2f} {m['forward_ms']:8.2f} {m['sample_ms']:7.2f} "
                                 f"{m['host_ms']:7.2f} {_fmt(st.get('outside_steps_s')):>8s} "
                                 f"{'' if share is None else f'{100 * share:.0f}':>8s}")
    return lines


def build_bench(results: dict[str, dict], overhead: dict | None, note: str) -> dict:
    figures, ratios = [], {}
    for title, unit, lower, path in FIGURES:
        vals = {b: _get(r, *path) for b, r in results.items() if "error" not in r}
        if not vals:
            continue
        u, v = vals.get(UNIT), vals.get(REF)
        ratio = (u / v) if isinstance(u, (int, float)) and isinstance(v, (int, float)) and v else None
        ratios[title] = ratio
        na = [b for b, x in vals.items() if x is None]
        figures.append({"title": title, "unit": unit, "lower_is_better": lower, "values": vals,
                        "note": (f"n/a for {', '.join(na)}" if na else "")
                        + (f"{'; ' if na else ''}{UNIT}/{REF} = {ratio:.2f}" if ratio is not None else "")})
    if overhead:
        figures.append({"title": f"harness compare + report, {overhead['records']} records", "unit": "s",
                        "lower_is_better": True,
                        "values": {"compare": overhead["compare_s"], "report": overhead["report_s"]},
                        "note": f"total {overhead['compare_report_s']:.1f} s (aim < 10 s)"})
    devices = sorted({str(r.get("device")) for r in results.values() if r.get("device")})
    att = attribution(results)
    return {"device": "; ".join(devices) or platform.processor() or platform.machine(), "note": note,
            "figures": figures, "ratios": ratios, "backends": results, "overhead": overhead,
            "attribution": att, "rollout_overhead_ratio": _ratios_by(att, "rollout_overhead_ratio"),
            "compat_overhead_ratio": _ratios_by(att, "compat_overhead_ratio"),
            "machine": {"cpus": os.cpu_count(), "load_avg": list(os.getloadavg()), "platform": platform.platform()}}


def _fmt(x) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def format_table(bench: dict) -> str:
    backends = list(bench.get("backends") or {})
    lines = [f"{'figure':42s} " + " ".join(f"{b:>12s}" for b in backends) + f" {UNIT + '/' + REF:>18s}"]
    for f in bench["figures"]:
        if f["title"].startswith("harness"):
            continue
        vals = f["values"]
        r = bench["ratios"].get(f["title"])
        lines.append(f"{f['title'] + ' (' + f['unit'] + ')':42s} " + " ".join(f"{_fmt(vals.get(b)):>12s}" for b in backends)
                     + f" {_fmt(r):>18s}")
    lines += format_attribution(bench.get("attribution") or {})
    for b, r in (bench.get("backends") or {}).items():
        if "error" in r:
            lines.append(f"{b}: FAILED: {r['error']}")
    o = bench.get("overhead")
    if o:
        lines.append(f"harness overhead: {o['records']} synthetic records: compare {o['compare_s']:.1f} s + report "
                     f"{o['report_s']:.1f} s = {o['compare_report_s']:.1f} s (aim < 10 s; generating them "
                     f"{o['generate_records_s']:.1f} s, not counted)")
    pr = bench.get("parity_run")
    if pr:
        lines.append(f"last parity run {pr['run_id']} ({pr['run']}): wall {pr['wall_s']:.0f} s (aim < 600 s)")
    la = bench.get("machine", {}).get("load_avg")
    if la:
        lines.append(f"machine: {bench['machine']['cpus']} cpus, load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return "\n".join(lines)


def last_parity_run(run_dir: Path) -> dict | None:
    """Wall time of a recorded `parity run` (its run.json), as measured by that run; None if absent."""
    try:
        m = RunManifest.read(run_dir)
        return {"run": str(run_dir.resolve()), "run_id": m.run_id, "wall_s": m.finished_at - m.started_at,
                "backends": m.backends,
                "phases_s": {b: {ph: st.wall_s for ph, st in s.phases.items()} for b, s in m.backend_status.items()}}
    except (RunDirError, AttributeError, TypeError):  # none, unreadable, or a run that did not finish
        return None


def run_bench(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    if not args.overhead_only:
        for b in [x.strip() for x in args.backends.split(",") if x.strip()]:
            try:
                results[b] = run_worker(b, args, out)
            except (subprocess.SubprocessError, OSError) as e:
                results[b] = {"backend": b, "error": str(e)}
    overhead = None
    if args.records > 0:
        print(f"[bench] harness overhead over {args.records} synthetic records", file=sys.stderr, flush=True)
        work = out / "synthetic-run"
        overhead = time_overhead(args.records, work)
        if not args.keep_synthetic:
            shutil.rmtree(work, ignore_errors=True)
    note = (f"suite {args.suite}; batch = every suite prompt, {args.new_tokens} new tokens (EOS ignored); "
            f"median of {args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    bench = build_bench(results, overhead, note)
    bench["parity_run"] = last_parity_run(Path(args.parity_run))
    path = out / "bench.json"
    path.write_text(json.dumps(bench, indent=1) + "\n")
    print(format_table(bench))
    print(f"bench.json: {path}")
    return 2 if any("error" in r for r in results.values()) else 0
