"""summary.json: the run's outcome for machines (CI gates, dashboards, golden comparisons).

Its schema is harness/schema/summary.schema.json (documented in
docs/summary-schema.md); `SUMMARY_SCHEMA_VERSION` changes with any change a
reader could notice. The overall verdict:

- `error`: a requested backend did not run cleanly (a phase exited non-zero,
  timed out, or left no records; in an RL run, one of its training runs
  failed: harness/report/rl.py), a check errored, the harness could not read
  part of the run (no checks.json, an unreadable record file), or no check
  ran at all;
- `fail`: otherwise, some check failed;
- `pass`: every check that was not skipped passed, and at least one ran.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections import Counter
from importlib import metadata
from json.encoder import encode_basestring_ascii
from pathlib import Path

from harness.backends import registry
from harness.report import rl as rl_run
from harness.report.data import REFERENCE, RunData, finite_or_str
from harness.verdict import OUTCOMES, Verdict

SUMMARY_SCHEMA_VERSION = 3
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "summary.schema.json"


def counts(verdicts: list[Verdict]) -> dict[str, int]:
    c = Counter(v.verdict for v in verdicts)
    out = {o: c.get(o, 0) for o in OUTCOMES}
    out["total"] = len(verdicts)
    return out


def group_verdict(outcomes: list[str]) -> str:
    """A group of checks (a pair, a case): error > fail > pass > measured > skipped."""
    for o in ("error", "fail", "pass", "measured"):
        if o in outcomes:
            return o
    return "skipped"


def backend_status(data: RunData) -> dict[str, dict]:
    """Per requested backend: did it run, with what, how long; `ok` only when every phase exited 0."""
    if data.kind == "rl":  # engines of an RL run have training runs, not generate/score phases
        return rl_run.engine_status(data)
    out: dict[str, dict] = {}
    for b in data.backends:
        sess = [s for s in data.sessions if s.backend == b]
        versions: dict[str, str] = {}
        for s in sess:
            versions.update(s.versions)
        last = sess[-1] if sess else None
        phases = {}
        status = data.manifest.backend_status.get(b)
        for phase, st in (status.phases if status is not None else {}).items():
            phases[phase] = {"exit_code": st.exit_code, "wall_s": st.wall_s, "timed_out": st.timed_out,
                             "log": st.log}
        errs = [e for e in data.errors if e.backend == b]
        case_errors = [e for e in errs if e.error_type != "Skipped"]
        n_gen = sum(1 for g in data.generations if g.backend == b)
        n_score = sum(1 for s in data.scores if s.backend == b)
        reasons = []
        if data.has_manifest:
            missing = [p for p in ("generate", "score") if p not in phases]
            bad = [f"{p} exited {st['exit_code']}" + (" (timed out)" if st["timed_out"] else "")
                   for p, st in phases.items() if st["exit_code"] != 0]
            reasons += bad
            if missing and not bad:
                reasons.append(f"phase(s) {', '.join(missing)} never ran")
        if case_errors:
            reasons.append(f"{len(case_errors)} error record(s)")
        if not sess and not n_gen and not n_score:
            reasons.append("no records")
        if not sess and not phases and not errs:
            status = "not_run"
        elif reasons:
            status = "failed"
        else:
            status = "ok"
        walls = [st["wall_s"] for st in phases.values() if st.get("wall_s") is not None]
        out[b] = {
            "requested": True,
            "ran": status == "ok",
            "status": status,
            "reason": "; ".join(reasons),
            "unit_under_test": registry.is_unit_under_test(b),
            "versions": versions,
            "device": last.device if last else None,
            "dtype": _session_dtype(last) if last else None,
            "logprob_mode": last.logprob_mode if last else None,
            "model_hash": (last.model.get("content_hash") if last else None),
            "config": _json_safe(last.config) if last else {},
            # the typed options it ran with (harness.backends.options): its session's, else what run.json resolved
            "options": _json_safe(((last.config or {}).get("options") if last else None)
                                  or data.manifest.backend_options.get(b) or {}),
            "phases": phases,
            "wall_s": round(sum(walls), 2) if walls else None,
            "records": {"generation": n_gen, "score": n_score, "error": len(errs)},
            "errors": [{"phase": e.phase, "case": e.key.case_id if e.key else None, "error_type": e.error_type,
                        "reason": e.reason} for e in errs],
        }
    return out


def _session_dtype(session) -> str | None:
    """What a backend computed in: its session's dtype, else (records from before sessions carried one)
    what its config or device string names."""
    from harness.dtypes import canonical

    for text in (session.dtype, (session.config or {}).get("dtype"), session.device):
        name = canonical(text) if text else None
        if name is not None:
            return name
    return None


def run_dtype(data: RunData, backends: dict[str, dict]) -> dict:
    """{run, requested, checkpoint}: run.json's, else the engines' common dtype (null if they differ)."""
    m = data.manifest
    run = m.dtype
    if run is None:
        found = {st["dtype"] for b, st in backends.items() if b != REFERENCE and st["dtype"]}
        run = found.pop() if len(found) == 1 else None
    return {"run": run, "requested": m.dtype_requested, "checkpoint": m.checkpoint_dtype}


def _json_safe(x):
    """Strict-JSON copy: non-finite floats become strings, keys strings, unknown objects their str()."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float):
        return finite_or_str(x)
    if x is None or isinstance(x, (str, int, bool)):
        return x
    return str(x)


def _pair_key(backends: list[str], order: list[str]) -> tuple[str, ...]:
    """Canonical order of a pair: engines in run order, the reference last."""
    def rank(b: str) -> tuple:
        return (b == REFERENCE, order.index(b) if b in order else len(order), b)

    return tuple(sorted(dict.fromkeys(backends), key=rank))


def pair_table(verdicts: list[Verdict], order: list[str]) -> list[dict]:
    groups: dict[tuple[str, ...], list[Verdict]] = {}
    keys: dict[tuple[str, ...], tuple[str, ...]] = {}  # backends as listed -> their pair (a handful)
    for v in verdicts:
        b = tuple(v.backends)
        key = keys.get(b)
        if key is None:
            key = keys[b] = _pair_key(v.backends, order)
        groups.setdefault(key, []).append(v)
    rows = []
    for key, vs in groups.items():
        per_check: dict[str, list[str]] = {}
        for v in vs:
            per_check.setdefault(v.check, []).append(v.verdict)
        rows.append({
            "backends": list(key),
            "label": " vs ".join(key) if len(key) > 1 else (f"{key[0]} (alone)" if key else "(run)"),
            "verdict": group_verdict([v.verdict for v in vs]),
            "counts": counts(vs),
            "failing": sorted({v.check for v in vs if v.verdict in ("fail", "error")}),
            "checks": {c: group_verdict(per_check[c]) for c in sorted(per_check)},
        })
    rank = {"error": 0, "fail": 1, "pass": 2, "measured": 3, "skipped": 4}
    rows.sort(key=lambda r: (len(r["backends"]) != 2, [order.index(b) if b in order else 99 for b in r["backends"]]))
    rows.sort(key=lambda r: rank[r["verdict"]])
    return rows


def overall(verdicts: list[Verdict], backends: dict[str, dict], problems: list[str]) -> tuple[str, str]:
    """(verdict, one-line reason)."""
    c = counts(verdicts)
    reasons = []
    broken = [f"{b} {st['status'].replace('_', ' ')}" + (f" ({st['reason']})" if st["reason"] else "")
              for b, st in backends.items() if st["status"] != "ok"]
    if broken:
        reasons.append("backend " + "; ".join(broken))
    if c["error"]:
        reasons.append(f"{c['error']} check(s) errored")
    reasons += problems
    ran = c["pass"] + c["fail"] + c["error"]
    if not ran and not problems:
        reasons.append("no check ran (every verdict skipped or none recorded)")
    if reasons:
        if c["fail"]:
            reasons.append(f"{c['fail']} check(s) failed")
        return "error", "; ".join(reasons)
    if c["fail"]:
        return "fail", f"{c['fail']} of {ran} check(s) failed"
    aside = [f"{c['measured']} measured, not gated"] * bool(c["measured"]) + \
        [f"{c['skipped']} skipped"] * bool(c["skipped"])
    return "pass", f"all {ran} check(s) passed" + (f" ({'; '.join(aside)})" if aside else "")


def _harness_version() -> str:
    try:
        return metadata.version("rollout-parity")
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance(data: RunData, backends: dict[str, dict]) -> dict:
    m = data.manifest
    model = m.model or next((s.model for s in data.sessions if s.model), None)
    model_b = m.model_b
    if model_b is None and not data.has_manifest:
        model_b = next((s.models.get("B") for s in data.sessions if s.models.get("B")), None)
    cases: dict[str, dict] = {}
    if data.suite is not None:
        for c in data.suite.cases:
            cases[c.id] = {"hash": c.content_hash(), "weights": c.weights}
    for r in data.generations + data.scores:
        cases.setdefault(r.key.case_id, {"hash": r.key.case_hash, "weights": r.key.weights})
    recorded_hashes: dict[str, set] = {}
    for r in data.generations:
        recorded_hashes.setdefault(r.key.case_id, set()).add(r.key.case_hash)
    for cid, info in cases.items():
        got = recorded_hashes.get(cid, set())
        info["recorded_hashes"] = sorted(got)
    suite_name = m.suite_name or (data.suite.suite if data.suite is not None else None) or next(
        (r.key.suite for r in data.generations), None)
    return {
        "git_revision": m.git_revision,
        "harness_version": _harness_version(),
        "report_host": platform.node(),
        "suite": {"name": suite_name, "path": m.suite},
        "model": _model(model),
        "model_b": _model(model_b),
        "cases": cases,
        "versions": {b: st["versions"] for b, st in backends.items()},
        "devices": {b: st["device"] for b, st in backends.items()},
        "dtype": run_dtype(data, backends),
        "dtypes": {b: st["dtype"] for b, st in backends.items()},
        "model_hashes": {b: st["model_hash"] for b, st in backends.items()},
        "started_at": m.started_at,
        "finished_at": m.finished_at,
        "argv": m.argv,
    }


def _model(d: dict | None) -> dict | None:
    if not d:
        return None
    return {"name": d.get("name"), "content_hash": d.get("content_hash"), "path": d.get("path")}


def check_rows(verdicts: list[Verdict]) -> list[dict]:
    return [{"name": v.check, "backends": list(v.backends), "case": v.case, "metric": v.metric,
             "value": finite_or_str(v.value), "threshold": finite_or_str(v.threshold), "verdict": v.verdict,
             "detail": v.detail} for v in verdicts]


SWAP_PREFIX = "rollout_contract_"


def swap_table(verdicts: list[Verdict]) -> list[dict]:
    """The rollout contract per pair of rollouts: each field's verdict over the cases (the worst), and per case
    its verdict and detail (what each rollout does, the effect of a difference on a trainer)."""
    pairs: dict[tuple[str, ...], dict[str, list[Verdict]]] = {}
    for v in verdicts:
        if v.check.startswith(SWAP_PREFIX):
            pairs.setdefault(tuple(v.backends), {}).setdefault(v.check[len(SWAP_PREFIX):], []).append(v)
    out = []
    for backends, fields in pairs.items():
        rows = {}
        for f, vs in fields.items():
            rows[f] = {"verdict": group_verdict([v.verdict for v in vs]),
                       "cases": {v.case: {"verdict": v.verdict, "detail": v.detail} for v in vs}}
        out.append({"backends": list(backends), "verdict": group_verdict([r["verdict"] for r in rows.values()]),
                    "fields": rows})
    return out


def build_summary(data: RunData) -> dict:
    backends = backend_status(data)
    verdict, reason = overall(data.verdicts, backends, data.problems)
    from harness.dtypes import mismatch_warning

    model = data.manifest.model or {}
    dt = run_dtype(data, backends)
    warning = mismatch_warning(dt["run"], dt["checkpoint"], f"the checkpoint {model.get('name') or '(model A)'}")
    warnings = list(data.warnings) + ([warning] if warning else [])
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "run_id": data.run_id,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "verdict": verdict,
        "verdict_reason": reason,
        "counts": counts(data.verdicts),
        "backends": backends,
        "provenance": provenance(data, backends),
        "checks": check_rows(data.verdicts),
        "pairs": pair_table(data.verdicts, data.backends),
        "swap": swap_table(data.verdicts),
        "problems": list(data.problems),
        "warnings": warnings,
    }


def summary_json(summary: dict) -> str:
    """summary.json's text: json.dumps(summary, indent=2, allow_nan=False) + newline, character for character
    (tests/test_report.py pins it), written by one recursive function instead of the standard library's chain
    of generators (its C encoder does not indent before Python 3.13): 1.5 s less for the 75k `checks` rows of a
    100k-record run."""
    return _text(summary, 0, ["\n"]) + "\n"


def _float_json(x: float) -> str:
    if x != x or x in (math.inf, -math.inf):
        raise ValueError(f"Out of range float values are not JSON compliant: {x!r}")
    return float.__repr__(x)


_SCALARS = {str: encode_basestring_ascii, int: int.__repr__, float: _float_json,
            bool: lambda x: "true" if x else "false", type(None): lambda x: "null"}


def _scalar(x) -> str | None:
    """The JSON of a scalar in json.dumps's order of isinstance tests (subclasses as their base); None for a
    container."""
    if isinstance(x, str):
        return encode_basestring_ascii(x)
    if x is None or x is True or x is False:
        return _SCALARS[type(x)](x)
    if isinstance(x, int):
        return int.__repr__(x)
    if isinstance(x, float):
        return _float_json(x)
    return None


def _key(k) -> str:
    """A dict key as json.dumps spells it before quoting it."""
    if isinstance(k, str):
        return k
    if isinstance(k, float):
        return _float_json(k)
    if k is True or k is False or k is None:
        return _SCALARS[type(k)](k)
    if isinstance(k, int):
        return int.__repr__(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


def _text(x, level: int, pads: list[str]) -> str:
    enc = _SCALARS.get(type(x))
    if enc is not None:
        return enc(x)
    text = _scalar(x)
    if text is not None:
        return text
    is_dict = isinstance(x, dict)
    if not is_dict and not isinstance(x, (list, tuple)):
        raise TypeError(f"Object of type {x.__class__.__name__} is not JSON serializable")
    if not x:
        return "{}" if is_dict else "[]"
    if len(pads) <= level + 1:
        pads.append("\n" + "  " * len(pads))
    nl, get = pads[level + 1], _SCALARS.get
    if is_dict:
        items = [encode_basestring_ascii(k if type(k) is str else _key(k)) + ": "
                 + (enc(v) if (enc := get(type(v))) is not None else _text(v, level + 1, pads)) for k, v in x.items()]
        return "{" + nl + ("," + nl).join(items) + pads[level] + "}"
    items = [enc(v) if (enc := get(type(v))) is not None else _text(v, level + 1, pads) for v in x]
    return "[" + nl + ("," + nl).join(items) + pads[level] + "]"


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


#: string fields of a `checks` row whose content the schema leaves free ($defs.check: plain "type": "string");
#: tests/test_report.py pins $defs.check, so that a new constraint there updates _check_shape too
FREE_CHECK_STRINGS = ("name", "case", "metric", "detail")


_FREE = frozenset(FREE_CHECK_STRINGS)
_SIMPLE = frozenset({str, int, float, bool, list, type(None)})


def _check_shape(row: object) -> tuple:
    """What summary.schema.json can tell apart in one `checks` row: its keys in order, the type of each
    value, the value itself where the schema constrains more than the type (verdict, the strings that
    stand for non-finite numbers), and the types of a list's items. Two rows of one shape are both valid
    or both invalid. Numbers: only their type counts ($defs.number has no bounds)."""
    if type(row) is not dict:
        return ("row", id(row))  # (never produced by build_summary) validated on its own
    types = tuple(map(type, row.values()))
    if not _SIMPLE.issuperset(types):
        return ("row", id(row))
    extra = []
    for k, v in row.items():
        if k in _FREE:
            continue
        t = type(v)
        extra.append(tuple(map(type, v)) if t is list else (t if t is int or t is float else v))
    return tuple(row), types, tuple(extra)


def validate(summary: dict) -> None:
    """Raise jsonschema.ValidationError if `summary` does not match summary.schema.json.

    A large run has tens of thousands of `checks` rows of a handful of shapes (_check_shape): one row of
    each shape is validated (the same outcome as validating all; seconds less at 100k records). When that
    fails, the whole summary is validated again, for the error's exact location."""
    import jsonschema

    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    checks = summary.get("checks") if isinstance(summary, dict) else None
    if not isinstance(checks, list) or len(checks) < 64:
        validator.validate(summary)
        return
    one_per_shape: dict[tuple, object] = {}
    for row in checks:
        one_per_shape.setdefault(_check_shape(row), row)
    try:
        validator.validate({**summary, "checks": list(one_per_shape.values())})
    except jsonschema.ValidationError:
        validator.validate(summary)
        raise
