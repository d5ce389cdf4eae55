"""Golden baselines: a committed clean recorded run per hardware class, to catch one engine's regressions over time.

    parity golden compare --run reports/latest                   # against golden/<the run's class>/
    parity golden compare --run DIR --golden golden/cpu-x86_64-float32
    parity golden update  --run reports/latest                   # shows the diff, writes nothing
    parity golden update  --run reports/latest --yes             # shows the diff, then writes

A golden directory (`golden/<hardware-class>/`) holds

    golden.json          manifest: hardware class, machine, devices, versions, model hashes,
                         suite name and file hash, case hashes, source run, date, files
    run.json             the source run's manifest (`suite`: this directory's suite.yaml, repo-relative)
    suite.yaml           the suite the records were made with (the self-test runs on it)
    records/*.jsonl      the run's records, valid record files, `timings` emptied (noise)
    derived.json         values only the model can give (temperature applied twice, top-k
                         ignored), for `parity selftest`; computed by the reference's interpreter

The hardware class is `<device kind>-<machine>-<dtype>`, e.g. `cpu-x86_64-float32`: the device
kind (cpu / gpu / tpu) and dtype from the engines' SessionRecords (`device` string and
`config.dtype`; the reference when the run has no engine), the machine from `platform.machine()`
of the machine that compares (or run.json's `platform_machine` when a run records one). Records of
different hardware classes differ legitimately (kernels, precision), so comparing a run against a
golden of another class is an error (exit 2), never a silent comparison.

What `compare` compares: for each backend and case present in both, whose case hash and model
hash are equal in both, every generation record (by prompt, sample, variant) and every score
record (by source backend, prompt, sample): token ids identical, finish reasons identical,
completion, prompt and score logprobs within the case's `logprob_atol` (or `--atol`). One
Verdict per (backend, case), check name `golden`, into `<run>/golden.json`; exit 0 pass,
1 a regression, 2 an error (hardware mismatch, nothing comparable, a case that errored in the
run but not in the golden, a backend whose phase did not complete). Backends or cases in only one
side, and cases whose hash or model changed, get `skipped` verdicts saying why (refresh the golden
after a reviewed change). A score of another backend's completion whose tokens changed is not
held against the scorer: the generating backend's verdict reports the change.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.backends import registry
from harness.dtypes import canonical as canonical_dtype
from harness.rundir import REFERENCE
from harness.verdict import OUTCOMES, Verdict

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_ROOT = ROOT / "golden"
GOLDEN_SCHEMA_VERSION = 1
DEFAULT_ATOL = 1e-4


class GoldenError(RuntimeError):
    """A golden baseline that cannot be used (wrong hardware class, missing, nothing comparable): exit 2."""


# ---------------------------------------------------------------- reading raw record files


def load_run_rows(run_dir: Path) -> dict[str, list[dict]]:
    """file name -> records (as JSON dicts) of a run directory, validated by harness.rundir.RunRecords (a
    bad line names file and line)."""
    from harness.rundir import RunRecords

    d = Path(run_dir) / "records"
    if not d.is_dir():
        raise GoldenError(f"{run_dir}: no records/ directory (is this a run directory?)")
    return {name: [r.model_dump(mode="json") for r in recs] for name, recs in RunRecords.load(run_dir).files.items()}


def _manifest(run_dir: Path) -> dict:
    from harness.rundir import read_manifest_dict

    return read_manifest_dict(run_dir)


# ---------------------------------------------------------------- hardware class


def _device_kind(device: str) -> str:
    d = device.lower()
    if re.search(r"\btpu", d):
        return "tpu"
    if re.search(r"\b(cuda(:\d+)?|gpu|nvidia|rocm|hip|[ahlb]\d{2,3}|mi\d{3}x?)\b", d):
        return "gpu"
    return "cpu"


def _dtype(device: str, config: dict, dtype: str | None = None) -> str:
    """The dtype a backend ran in: its session's `dtype` (what the engine reported), else what its
    config or device string says (records from before sessions carried it)."""
    for text in (dtype, config.get("dtype"), (config.get("engine_kwargs") or {}).get("dtype"), device):
        name = canonical_dtype(text) if text else None
        if name is not None:
            return name
    return "unknown-dtype"


def sessions_of(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for recs in rows.values():
        for r in recs:
            if r["kind"] == "session":
                out[r["backend"]].append(r)
    return dict(out)


def hardware_class(rows: dict[str, list[dict]], manifest: dict | None = None, machine: str | None = None) -> str:
    """`<kind>-<machine>-<dtype>` from the engines' session records (the reference's when there is
    no engine); several kinds or dtypes are joined with '+'."""
    sessions = sessions_of(rows)
    engines = {b: s for b, s in sessions.items() if b != REFERENCE} or sessions
    if not engines:
        raise GoldenError("no session records: cannot tell the hardware class of this run")
    kinds = sorted({_device_kind(s["device"]) for ss in engines.values() for s in ss})
    dtypes = sorted({_dtype(s["device"], s.get("config") or {}, s.get("dtype")) for ss in engines.values() for s in ss})
    machine = machine or (manifest or {}).get("platform_machine") or platform.machine() or "unknown"
    return f"{'+'.join(kinds)}-{machine}-{'+'.join(dtypes)}"


def golden_dirs() -> list[Path]:
    return sorted(p.parent for p in GOLDEN_ROOT.glob("*/golden.json"))


def default_golden(run_class: str | None = None) -> Path:
    """golden/<run_class> when given; else the only golden directory, or the one of this machine."""
    if run_class:
        return GOLDEN_ROOT / run_class
    dirs = golden_dirs()
    if len(dirs) == 1:
        return dirs[0]
    mine = [d for d in dirs if f"-{platform.machine()}-" in d.name]
    if len(mine) == 1:
        return mine[0]
    raise GoldenError(f"{len(dirs)} golden baselines in {GOLDEN_ROOT} ({', '.join(d.name for d in dirs) or 'none'}): "
                      f"name one with --golden golden/<class>")


def read_golden_manifest(golden_dir: Path) -> dict:
    p = Path(golden_dir) / "golden.json"
    if not p.exists():
        raise GoldenError(f"{golden_dir}: no golden.json (not a golden baseline; create one with "
                          f"`parity golden update --run DIR --golden {golden_dir} --yes`)")
    m = json.loads(p.read_text())
    if m.get("schema_version") != GOLDEN_SCHEMA_VERSION:
        raise GoldenError(f"{p}: schema_version {m.get('schema_version')!r}, expected {GOLDEN_SCHEMA_VERSION}")
    return m


# ---------------------------------------------------------------- indexing records for comparison

Key = tuple  # (kind, source, prompt, sample, variant)


@dataclass
class CaseRecords:
    case_hash: str | None = None
    model_hashes: set = field(default_factory=set)
    records: dict = field(default_factory=dict)  # Key -> record dict
    errors: list = field(default_factory=list)  # ErrorRecords (not Skipped)
    skipped: list = field(default_factory=list)  # ErrorRecords of type Skipped


def index_rows(rows: dict[str, list[dict]]) -> dict[tuple[str, str], dict[str, CaseRecords]]:
    """(backend, case_id) -> case hash -> what the backend recorded for that case version."""
    out: dict[tuple[str, str], dict[str, CaseRecords]] = defaultdict(dict)
    for recs in rows.values():
        for r in recs:
            key = r.get("key")
            if r["kind"] == "session" or key is None:
                continue
            cr = out[(r["backend"], key["case_id"])].setdefault(key["case_hash"], CaseRecords(key["case_hash"]))
            if r["kind"] == "error":
                (cr.skipped if r["error_type"] == "Skipped" else cr.errors).append(r)
                continue
            cr.model_hashes.add(r["model_hash"])
            if r["kind"] == "generation":
                k = ("generation", None, key["prompt_index"], key["sample_index"], key["variant"])
            else:
                k = ("score", r["source_backend"], key["prompt_index"], key["sample_index"], key["variant"])
            cr.records[k] = r
    return out


def _where(k: Key) -> str:
    kind, source, p, s, variant = k
    base = f"prompt {p} sample {s}"
    if kind == "generation":
        return f"generate {base}" + ("" if variant == "main" else f" {variant}")
    return f"score of {source}'s {base}"


def _max_abs(a: list | None, b: list | None) -> tuple[float, int | None, str | None]:
    """(max |a-b|, position, structural problem) with None/-inf handled like the checks do."""
    if a is None and b is None:
        return 0.0, None, None
    if a is None or b is None:
        return math.inf, None, "logprobs present on one side only"
    if len(a) != len(b):
        return math.inf, None, f"{len(b)} logprobs, golden {len(a)}"
    worst, at = 0.0, None
    for i, (x, y) in enumerate(zip(a, b)):
        if x is None or y is None:
            if (x is None) != (y is None):
                return math.inf, i, f"None at position {i} on one side only"
            continue
        d = 0.0 if x == y else abs(x - y)
        if math.isnan(d):
            d = math.inf
        if at is None or d > worst:
            worst, at = d, i
    return worst, at, None


@dataclass
class RecordDiff:
    where: str
    problems: list[str]
    max_abs_dlogp: float
    golden_tokens: list[int] | None = None
    run_tokens: list[int] | None = None

    def as_dict(self) -> dict:
        return {"where": self.where, "problems": self.problems, "max_abs_dlogp": self.max_abs_dlogp,
                "golden_tokens": self.golden_tokens, "run_tokens": self.run_tokens}


def _reference_values(score: dict) -> dict[str, list]:
    """What a score record holds besides its own logprobs (the reference's exact values: ScoreRecord's by_mode,
    other_weights, distribution, effects, sequence), by a name for the diff."""
    out = {f"score {m}": v for m, v in score.get("by_mode", {}).items()}
    for w, modes in score.get("other_weights", {}).items():
        out.update({f"score {m} under weight set {w}": v for m, v in modes.items()})
    for part in ("distribution", "effects", "sequence"):
        for name, v in (score.get(part) or {}).items():
            if isinstance(v, dict):
                out.update({f"{part} {name} {sub}": u for sub, u in v.items()})
            else:
                out[f"{part} {name}"] = v
    return out


def diff_record(k: Key, g: dict, r: dict, atol: float) -> RecordDiff:
    """What differs between a golden record and a run's record of the same key."""
    problems: list[str] = []
    worst = 0.0
    if g["prompt_ids"] != r["prompt_ids"]:
        problems.append(f"prompt ids differ (golden {g['prompt_ids']}, run {r['prompt_ids']})")
    gt, rt = g["completion_ids"], r["completion_ids"]
    if gt != rt:
        first = next((i for i, (a, b) in enumerate(zip(gt, rt)) if a != b), min(len(gt), len(rt)))
        ga = gt[first] if first < len(gt) else "end"
        ra = rt[first] if first < len(rt) else "end"
        problems.append(f"tokens differ from position {first} (golden {ga}, run {ra}; lengths {len(gt)} vs {len(rt)})")
    if k[0] == "generation":
        if g["finish_reason"] != r["finish_reason"]:
            problems.append(f"finish reason {g['finish_reason']} -> {r['finish_reason']}")
        if g["logprob_mode"] != r["logprob_mode"]:
            problems.append(f"logprob mode {g['logprob_mode']} -> {r['logprob_mode']}")
        pairs = [("completion logprobs", g["completion_logprobs"], r["completion_logprobs"]),
                 ("prompt logprobs", g.get("prompt_logprobs"), r.get("prompt_logprobs"))]
    else:
        if g["logprob_mode"] != r["logprob_mode"]:
            problems.append(f"score mode {g['logprob_mode']} -> {r['logprob_mode']}")
        pairs = [("score logprobs", g["logprobs"], r["logprobs"])]
        gv, rv = _reference_values(g), _reference_values(r)
        pairs += [(what, v, rv.get(what)) for what, v in sorted(gv.items())]
    if gt == rt:  # logprobs of other tokens are not comparable; the token difference is the finding
        for what, a, b in pairs:
            d, at, problem = _max_abs(a, b)
            if problem:
                problems.append(f"{what}: {problem}")
                worst = math.inf
                continue
            worst = max(worst, d)
            if d > atol:
                problems.append(f"{what}: max |dlogp| {d:.3g} at position {at} > atol {atol:g}")
    return RecordDiff(_where(k), problems, worst, gt, rt)


# ---------------------------------------------------------------- compare


def _tolerances(run_dir: Path, manifest: dict, atol: float | None) -> dict[str, float]:
    """case id -> logprob_atol from the run's suite (the checkout's copy when the path is foreign)."""
    if atol is not None:
        return defaultdict(lambda: atol)
    from harness.suite import load_suite

    out: dict[str, float] = defaultdict(lambda: DEFAULT_ATOL)
    path = manifest.get("suite")
    candidates = [Path(path)] if path else []
    if path:
        candidates.append(ROOT / "cases" / Path(path).name)
    candidates.append(Path(run_dir) / "suite.yaml")
    for c in candidates:
        if c.is_file():
            try:
                suite = load_suite(str(c))
            except Exception:  # the run's suite is only used for tolerances here
                continue
            for case in suite.cases:
                out[case.id] = case.tolerance("logprob_atol", "completion_logprobs")
            break
    return out


def compare_golden(run_dir: Path, golden_dir: Path | None = None, atol: float | None = None,
                   machine: str | None = None) -> tuple[list[Verdict], dict]:
    """Compare a run with a golden baseline; returns (verdicts, info). Raises GoldenError for a
    hardware-class mismatch or a missing golden."""
    run_dir = Path(run_dir)
    run_rows = load_run_rows(run_dir)
    manifest = _manifest(run_dir)
    run_class = hardware_class(run_rows, manifest, machine)
    golden_dir = Path(golden_dir) if golden_dir else default_golden(run_class)
    gm = read_golden_manifest(golden_dir)
    if gm["hardware_class"] != run_class:
        raise GoldenError(
            f"hardware class mismatch: the run {run_dir} is {run_class!r} but {golden_dir} is "
            f"{gm['hardware_class']!r}; records of different hardware differ legitimately, so they are not "
            f"compared. Compare against golden/{run_class} (create it, reviewed, with `parity golden update "
            f"--run {run_dir} --golden golden/{run_class}`)")
    golden_rows = load_run_rows(golden_dir)
    tol = _tolerances(run_dir, manifest, atol)
    g_idx, r_idx = index_rows(golden_rows), index_rows(run_rows)
    g_sessions, r_sessions = sessions_of(golden_rows), sessions_of(run_rows)
    run_problems = phase_problems(run_rows, manifest)
    g_backends = sorted(g_sessions, key=lambda b: (b != REFERENCE, b))
    r_backends = sorted(r_sessions, key=lambda b: (b != REFERENCE, b))
    verdicts: list[Verdict] = []

    def versions(sessions: dict, b: str) -> dict:
        return (sessions.get(b) or [{}])[-1].get("versions", {})

    for b in sorted(set(g_backends) | set(r_backends), key=lambda b: (b != REFERENCE, b)):
        if b not in r_backends or b not in g_backends:
            side = "this run" if b not in r_backends else "the golden"
            verdicts.append(Verdict(check="golden", backends=[b], case="*", metric="regressions", value=None,
                                    threshold=0.0, verdict="skipped",
                                    detail=f"{b} is not in {side}: nothing to compare"))
            continue
        gv, rv = versions(g_sessions, b), versions(r_sessions, b)
        vdiff = {k: [gv.get(k), rv.get(k)] for k in sorted(set(gv) | set(rv)) if gv.get(k) != rv.get(k)}
        vnote = ("; versions changed: " + ", ".join(f"{k} {a} -> {c}" for k, (a, c) in vdiff.items())) if vdiff else ""
        cases = sorted({c for (bb, c) in g_idx if bb == b} | {c for (bb, c) in r_idx if bb == b})
        for case in cases:
            gv_by_hash, rv_by_hash = g_idx.get((b, case), {}), r_idx.get((b, case), {})
            common = sorted(set(gv_by_hash) & set(rv_by_hash))

            def skip(why: str) -> None:
                verdicts.append(Verdict(check="golden", backends=[b], case=case, metric="regressions", value=None,
                                        threshold=0.0, verdict="skipped", detail=why + vnote,
                                        data={"versions_changed": vdiff}))

            if not gv_by_hash:
                skip(f"{b} case {case}: not in the golden (a new case: refresh the golden after review)")
                continue
            if not rv_by_hash:
                skip(f"{b} case {case}: not in this run")
                continue
            if not common:
                skip(f"{b} case {case}: the case changed (golden hash {', '.join(sorted(gv_by_hash))}, run "
                     f"{', '.join(sorted(rv_by_hash))}): not comparable; refresh the golden after review")
                continue
            g, r = gv_by_hash[common[-1]], rv_by_hash[common[-1]]
            if g.model_hashes and r.model_hashes and g.model_hashes != r.model_hashes:
                skip(f"{b} case {case}: other weights (model hash golden {sorted(h[:12] for h in g.model_hashes)}, "
                     f"run {sorted(h[:12] for h in r.model_hashes)}): not comparable")
                continue
            if r.errors and not g.errors:
                reason = r.errors[-1]["reason"].strip().split("\n", 1)[0]
                verdicts.append(Verdict(
                    check="golden", backends=[b], case=case, metric="regressions", value=None, threshold=0.0,
                    verdict="error", detail=f"{b} case {case} errored in this run but not in the golden: "
                                            f"{r.errors[-1]['error_type']}: {reason}{vnote}",
                    data={"versions_changed": vdiff}))
                continue
            if g.errors or (g.skipped and not g.records):
                skip(f"{b} case {case}: the golden has {'an error' if g.errors else 'a skip'} for it "
                     f"({(g.errors or g.skipped)[-1]['error_type']}): nothing to compare")
                continue
            atol_c = tol[case]
            diffs: list[RecordDiff] = []
            worst = 0.0
            notes: dict[str, int] = defaultdict(int)
            for k in sorted(set(g.records) | set(r.records), key=lambda k: tuple(map(str, k))):
                source = k[1]
                if k[0] == "score" and source != b:
                    # a score of another backend's completion: when that backend's tokens changed (or it
                    # did not generate), the difference is its regression, reported under it, not the scorer's
                    gs, rs = g.records.get(k), r.records.get(k)
                    src_gen = _gen_of(r_idx, source, case, common[-1], k)
                    if (gs is None or rs is None) and (src_gen is None or run_problems.get(source)):
                        notes[f"scores of {source}'s completions not comparable ({source} has no such "
                              f"completion in {'this run' if rs is None else 'the golden'})"] += 1
                        continue
                    if gs is not None and rs is not None and gs["completion_ids"] != rs["completion_ids"]:
                        notes[f"scores of {source}'s completions whose tokens changed (see {source})"] += 1
                        continue
                if k not in r.records:
                    diffs.append(RecordDiff(_where(k), ["missing in this run"], math.inf))
                    continue
                if k not in g.records:
                    diffs.append(RecordDiff(_where(k), ["not in the golden (an extra record)"], math.inf))
                    continue
                d = diff_record(k, g.records[k], r.records[k], atol_c)
                worst = max(worst, d.max_abs_dlogp)
                if d.problems:
                    diffs.append(d)
            n = len(set(g.records) | set(r.records))
            note = "".join(f"; {c} {what}" for what, c in notes.items())
            if run_problems.get(b):
                verdicts.append(Verdict(
                    check="golden", backends=[b], case=case, metric="regressions", value=None, threshold=0.0,
                    verdict="error", detail=f"{b} did not run cleanly in this run ({run_problems[b]}): "
                                            f"{len(diffs)} of {n} records differ from the golden{note}{vnote}",
                    data={"diffs": [d.as_dict() for d in diffs[:20]], "versions_changed": vdiff}))
                continue
            if diffs:
                detail = (f"{b} case {case}: {len(diffs)} of {n} records differ from the golden: "
                          + "; ".join(f"{d.where}: {', '.join(d.problems)}" for d in diffs[:3])
                          + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "") + note + vnote)
            else:
                detail = (f"{b} case {case}: {n} records equal to the golden (tokens and finish reasons identical, "
                          f"max |dlogp| {worst:.3g} <= atol {atol_c:g}){note}{vnote}")
            verdicts.append(Verdict(check="golden", backends=[b], case=case, metric="regressions",
                                    value=float(len(diffs)), threshold=0.0, verdict="fail" if diffs else "pass",
                                    detail=detail,
                                    data={"max_abs_dlogp": worst, "atol": atol_c, "records": n,
                                          "diffs": [d.as_dict() for d in diffs[:20]], "versions_changed": vdiff}))
    ran = [v for v in verdicts if v.verdict in ("pass", "fail", "error")]
    if not ran:
        verdicts.append(Verdict(check="golden", backends=[], case="*", metric="compared", value=0.0, threshold=None,
                                verdict="error",
                                detail=f"nothing compared: no backend and case of {run_dir} has the same case hash and "
                                       f"model hash as in {golden_dir}"))
    info = {"golden": str(golden_dir), "hardware_class": run_class, "golden_hardware_class": gm["hardware_class"],
            "golden_created_at": gm.get("created_at"), "golden_source_run": gm.get("source_run")}
    return verdicts, info


def _gen_of(idx: dict, backend: str, case: str, case_hash: str, k: Key) -> dict | None:
    """The generation record (main variant) of `backend` that score key k scored."""
    cr = idx.get((backend, case), {}).get(case_hash)
    return None if cr is None else cr.records.get(("generation", None, k[2], k[3], "main"))


def phase_problems(rows: dict[str, list[dict]], manifest: dict) -> dict[str, str]:
    """backend -> why a phase of it did not complete (run.json exit code, backend-level error records)."""
    out: dict[str, list[str]] = defaultdict(list)
    for b, st in (manifest.get("backend_status") or {}).items():
        for ph, status in ((st or {}).get("phases") or {}).items():
            if status and status.get("exit_code", 0) != 0:
                out[b].append(f"{ph} exited with code {status.get('exit_code')}")
    for recs in rows.values():
        for r in recs:
            if r["kind"] == "error" and r.get("key") is None:
                out[r["backend"]].append(f"{r['phase']}: {r['error_type']}: {r['reason'].splitlines()[0][:200]}")
    return {b: "; ".join(dict.fromkeys(v)) for b, v in out.items()}


def outcome(verdicts: list[Verdict]) -> str:
    got = {v.verdict for v in verdicts}
    return "error" if "error" in got else "fail" if "fail" in got else "pass"


def write_golden_result(run_dir: Path, verdicts: list[Verdict], info: dict) -> Path:
    counts = {o: sum(v.verdict == o for v in verdicts) for o in OUTCOMES}
    payload = {"schema_version": GOLDEN_SCHEMA_VERSION, **info, "verdict": outcome(verdicts), "counts": counts,
               "verdicts": [v.model_dump(mode="json") for v in verdicts]}
    path = Path(run_dir) / "golden.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- update


@dataclass
class Change:
    backend: str
    case: str
    what: str  # new, removed, case changed, records changed, errors
    lines: list[str] = field(default_factory=list)


def _fmt_tokens(t: list[int] | None, limit: int = 16) -> str:
    if t is None:
        return "-"
    s = " ".join(map(str, t[:limit]))
    return s + (f" ... ({len(t)})" if len(t) > limit else "")


def golden_diff(run_rows: dict[str, list[dict]], golden_rows: dict[str, list[dict]] | None,
                tol: dict[str, float], stats: dict | None = None) -> list[Change]:
    """Per backend and case, what the run would change in the golden (empty: identical within
    tolerance). `stats` (if given) gets the units equal within tolerance and their max |dlogp|."""
    g_idx = index_rows(golden_rows or {})
    r_idx = index_rows(run_rows)
    changes: list[Change] = []
    stats = {} if stats is None else stats
    stats.update(equal_units=0, equal_max_abs_dlogp=0.0, identical_units=0)
    for (b, case) in sorted(set(g_idx) | set(r_idx), key=lambda x: (x[0] != REFERENCE, x)):
        g, r = g_idx.get((b, case), {}), r_idx.get((b, case), {})
        if not g:
            n = sum(len(cr.records) for cr in r.values())
            changes.append(Change(b, case, "new", [f"{n} records (not in the golden)"]))
            continue
        if not r:
            changes.append(Change(b, case, "removed", ["in the golden, not in this run"]))
            continue
        gh, rh = sorted(g)[-1], sorted(r)[-1]
        if gh != rh:
            changes.append(Change(b, case, "case changed", [f"case hash {gh} -> {rh}: every record replaced"]))
            continue
        gc, rc = g[gh], r[rh]
        lines = []
        if gc.model_hashes != rc.model_hashes:
            lines.append(f"model hash {sorted(h[:12] for h in gc.model_hashes)} -> "
                         f"{sorted(h[:12] for h in rc.model_hashes)}")
        ge = sorted({e["error_type"] for e in gc.errors}); re_ = sorted({e["error_type"] for e in rc.errors})
        if ge != re_:
            lines.append(f"errors {ge or 'none'} -> {re_ or 'none'}")
        worst = 0.0
        for k in sorted(set(gc.records) | set(rc.records), key=lambda k: tuple(map(str, k))):
            if k not in rc.records:
                lines.append(f"{_where(k)}: removed")
                continue
            if k not in gc.records:
                lines.append(f"{_where(k)}: new")
                continue
            d = diff_record(k, gc.records[k], rc.records[k], tol[case])
            worst = max(worst, d.max_abs_dlogp if math.isfinite(d.max_abs_dlogp) else worst)
            if d.problems:
                lines.append(f"{d.where}: {', '.join(d.problems)}")
                if d.golden_tokens != d.run_tokens:
                    lines.append(f"    golden: {_fmt_tokens(d.golden_tokens)}")
                    lines.append(f"    run:    {_fmt_tokens(d.run_tokens)}")
        if lines:
            changes.append(Change(b, case, "records changed", lines + [f"max |dlogp| over equal tokens {worst:.3g}"]))
        else:
            stats["equal_units"] += 1
            stats["identical_units"] += worst == 0.0
            stats["equal_max_abs_dlogp"] = max(stats["equal_max_abs_dlogp"], worst)
    return changes


def format_diff(changes: list[Change], golden_dir: Path, exists: bool, stats: dict | None = None) -> str:
    stats = stats or {}
    within = ""
    if stats.get("equal_units"):
        within = (f"{stats['equal_units']} backend/case units equal within tolerance ({stats['identical_units']} "
                  f"bit-identical; max |dlogp| {stats['equal_max_abs_dlogp']:.3g})")
    if not exists:
        head = f"{golden_dir} does not exist yet: the whole run becomes the golden"
    elif not changes:
        return f"no change beyond tolerance: the run equals {golden_dir} (tokens, finish reasons); {within}"
    else:
        head = f"changes to {golden_dir} ({len(changes)} backend/case units):"
    out = [head]
    for c in changes:
        out.append(f"  {c.backend} / {c.case}: {c.what}")
        out += [f"      {line}" for line in c.lines[:40]]
        if len(c.lines) > 40:
            out.append(f"      ... {len(c.lines) - 40} more lines")
    if within:
        out.append(f"  and {within}")
    return "\n".join(out)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def strip_noise(rows: list[dict]) -> list[dict]:
    """Records without timing-only content (the record format stays valid: `timings` is {})."""
    out = []
    for r in rows:
        r = dict(r)
        if "timings" in r:
            r["timings"] = {}
        out.append(r)
    return out


def build_manifest(run_dir: Path, run_rows: dict[str, list[dict]], manifest: dict, run_class: str,
                   suite_file: Path | None, files: dict[str, dict]) -> dict:
    sessions = sessions_of(run_rows)
    models: dict[str, str] = {}
    for ss in sessions.values():
        for s in ss:
            for name, m in (s.get("models") or {"A": s.get("model", {})}).items():
                if m.get("content_hash"):
                    models[name] = m["content_hash"]
    case_hashes: dict[str, str] = {}
    for recs in run_rows.values():
        for r in recs:
            if r.get("key"):
                case_hashes.setdefault(r["key"]["case_id"], r["key"]["case_hash"])
    suite_name = next((r["key"]["suite"] for recs in run_rows.values() for r in recs if r.get("key")),
                      manifest.get("suite_name"))
    return {
        "schema_version": GOLDEN_SCHEMA_VERSION,
        "hardware_class": run_class,
        "machine": manifest.get("platform_machine") or platform.machine(),
        "devices": {b: ss[-1]["device"] for b, ss in sessions.items()},
        "dtypes": {b: _dtype(ss[-1]["device"], ss[-1].get("config") or {}, ss[-1].get("dtype")) for b, ss in sessions.items()},
        "logprob_modes": {b: ss[-1].get("logprob_mode") for b, ss in sessions.items()},
        "versions": {b: ss[-1].get("versions", {}) for b, ss in sessions.items()},
        "model_hashes": models,
        "suite": {"name": suite_name, "file": "suite.yaml" if suite_file else None,
                  "sha256": _sha256(suite_file) if suite_file else None,
                  "source_path": checkout_relative(manifest.get("suite"))},
        "case_hashes": dict(sorted(case_hashes.items())),
        "backends": list(manifest.get("backends") or sorted(sessions, key=lambda b: (b != REFERENCE, b))),
        "source_run": {"run_id": manifest.get("run_id") or Path(run_dir).name,
                       "git_revision": manifest.get("git_revision"), "started_at": manifest.get("started_at")},
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": files,
        "derived": None,
    }


def checkout_relative(path: str | None) -> str | None:
    """A run's suite path as provenance: relative to the rollout-parity checkout it lies in (the run may
    come from another clone or a temporary worktree, whose absolute path means nothing elsewhere)."""
    if not path:
        return path
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    for parent in p.parents:
        if (parent / "noxfile.py").is_file() and (parent / "harness").is_dir():
            return p.relative_to(parent).as_posix()
    return p.as_posix()  # outside any checkout: the path is all there is


def _run_suite_file(run_dir: Path, manifest: dict) -> Path | None:
    path = manifest.get("suite")
    for c in ([Path(path), ROOT / "cases" / Path(path).name] if path else []) + [Path(run_dir) / "suite.yaml"]:
        if c.is_file():
            return c
    return None


def reference_python() -> str | None:
    """The reference backend's interpreter (torch + transformers): PARITY_REFERENCE_PYTHON, the
    nox venv in PARITY_CACHE, or this interpreter when it has torch."""
    env = os.environ.get("PARITY_REFERENCE_PYTHON")
    if env:
        return env
    venv = registry.venv_python(registry.reference())
    if venv.exists():
        return str(venv)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def derive(run_dir: Path, out: Path, timeout: float = 1800) -> None:
    """`python -m harness.selftest derive RUN OUT` in the reference's interpreter (the model is needed)."""
    import subprocess

    py = reference_python()
    if py is None:
        raise GoldenError("the self-test's model-derived values need the reference's interpreter (torch + "
                          "transformers): build it with `nox -s reference`, or set PARITY_REFERENCE_PYTHON")
    env = os.environ | {"PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                        "TRANSFORMERS_OFFLINE": "1"}
    p = subprocess.run([py, "-m", "harness.selftest", "derive", str(run_dir), str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise GoldenError(f"computing the self-test's model-derived values failed ({p.returncode}):\n"
                          f"{p.stdout[-2000:]}\n{p.stderr[-3000:]}")


def write_golden(run_dir: Path, golden_dir: Path, run_rows: dict[str, list[dict]], manifest: dict,
                 run_class: str, derived: bool = True) -> dict:
    """Replace golden_dir's content with the run (records without timings, run.json, suite.yaml,
    derived.json, golden.json); written into a temporary sibling and swapped in."""
    golden_dir = Path(golden_dir)
    golden_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = golden_dir.parent / f".{golden_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "records").mkdir(parents=True)
    files: dict[str, dict] = {}
    for name, rows in run_rows.items():
        p = tmp / "records" / name
        p.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in strip_noise(rows)))
        files[f"records/{name}"] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    suite_file = _run_suite_file(run_dir, manifest)
    if suite_file is not None:
        shutil.copyfile(suite_file, tmp / "suite.yaml")
    m = dict(manifest)
    if suite_file is not None:  # repo-relative where possible, so `parity compare/report --run golden/<class>` work
        final = golden_dir.resolve() / "suite.yaml"
        m["suite"] = str(final.relative_to(ROOT)) if final.is_relative_to(ROOT) else str(final)
    m.pop("argv", None)
    (tmp / "run.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    gm = build_manifest(run_dir, run_rows, manifest, run_class, tmp / "suite.yaml" if suite_file else None, files)
    if derived:
        derive(tmp, tmp / "derived.json")
        gm["derived"] = "derived.json"
        files["derived.json"] = {"bytes": (tmp / "derived.json").stat().st_size,
                                 "sha256": _sha256(tmp / "derived.json")}
    (tmp / "golden.json").write_text(json.dumps(gm, indent=2, sort_keys=True) + "\n")
    if golden_dir.exists():
        old = golden_dir.parent / f".{golden_dir.name}.old-{os.getpid()}"
        golden_dir.rename(old)
        tmp.rename(golden_dir)
        shutil.rmtree(old)
    else:
        tmp.rename(golden_dir)
    return gm


def update_golden(run_dir: Path, golden_dir: Path | None, yes: bool, *, derived: bool = True,
                  allow_failing: bool = False, machine: str | None = None, confirm=None, out=print) -> int:
    """Show what the run would change in the golden; write it only with `yes` or when `confirm()`
    (interactive) says so. Returns 0 (written, or nothing to change), 1 (changes shown, not
    written); raises GoldenError for anything that makes the run unfit as a golden."""
    from harness.compare import compare_run

    run_dir = Path(run_dir)
    run_rows = load_run_rows(run_dir)
    manifest = _manifest(run_dir)
    run_class = hardware_class(run_rows, manifest, machine)
    golden_dir = Path(golden_dir) if golden_dir else GOLDEN_ROOT / run_class
    exists = (golden_dir / "golden.json").exists()
    if exists:
        gm = read_golden_manifest(golden_dir)
        if gm["hardware_class"] != run_class:
            raise GoldenError(f"hardware class mismatch: the run {run_dir} is {run_class!r}, {golden_dir} holds "
                              f"{gm['hardware_class']!r}; refresh golden/{run_class} instead")
    elif golden_dir.name != run_class:
        raise GoldenError(f"{golden_dir}: a golden directory is named after its hardware class; this run is "
                          f"{run_class!r}: use --golden {golden_dir.parent / run_class}")
    problems = [e for recs in run_rows.values() for e in recs if e["kind"] == "error" and e["error_type"] != "Skipped"]
    verdicts = compare_run(run_dir)
    alarms = [v for v in verdicts if v.verdict in ("fail", "error")]
    if (problems or alarms) and not allow_failing:
        lines = [f"  {v.test_id}: {v.verdict}: {v.detail[:160]}" for v in alarms[:10]]
        raise GoldenError(f"{run_dir} is not clean ({len(problems)} error records, {len(alarms)} failing or erroring "
                          f"checks): a golden baseline (and the self-test built on it) must come from a clean run; "
                          f"--allow-failing to store it anyway\n" + "\n".join(lines))
    tol = _tolerances(run_dir, manifest, None)
    golden_rows = load_run_rows(golden_dir) if exists else None
    stats: dict = {}
    changes = golden_diff(run_rows, golden_rows, tol, stats)
    out(format_diff(changes, golden_dir, exists, stats))
    if exists and not changes:
        return 0  # within tolerance: the committed golden stays as it is
    if not yes:
        if confirm is None and sys.stdin is not None and sys.stdin.isatty():
            def confirm() -> bool:
                return input(f"write {golden_dir}? [y/N] ").strip().lower() in ("y", "yes")
        if confirm is None or not confirm():
            out(f"nothing written (review the diff, then `parity golden update --run {run_dir} "
                f"--golden {golden_dir} --yes`)")
            return 1
    t0 = time.monotonic()
    gm = write_golden(run_dir, golden_dir, run_rows, manifest, run_class, derived=derived)
    size = sum(f["bytes"] for f in gm["files"].values())
    out(f"wrote {golden_dir} ({len(gm['files'])} files, {size / 1024:.0f} KiB, class {run_class}) "
        f"in {time.monotonic() - t0:.0f}s")
    return 0
