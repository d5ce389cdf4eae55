"""The calibration study behind a low-precision tolerance profile (harness/checks/profiles/).

    python -m harness.calibrate suites --seeds 1,2,3 --out DIR        # the default suite, sampled seeds varied
    python -m harness.calibrate measure RUN... --out calibration/bfloat16.json [--models NAME=DIR ...]
    python -m harness.calibrate derive calibration/bfloat16.json      # -> harness/checks/profiles/bfloat16.yaml
    python -m harness.calibrate count --profile bfloat16 RUN...       # false alarms on held-out runs

The study: clean runs of every engine at the dtype (models x suite seeds), split into a calibration
set (`measure`: every check's statistic per engine, case and run, compared under float32's
thresholds so nothing is clipped) and a held-out set that only `count` reads. `derive` turns the
calibration set's statistics into thresholds by RULE; `count` compares the held-out runs under the
derived profile and lists every alarm.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import yaml

from harness.backends import registry
from harness.checks.profiles import PROFILE_DIR

#: |dlogp| checks gated on a quantile (and a cap on the max)
QUANTILE_CHECKS = ("completion_logprobs", "prompt_logprobs", "replay", "self_consistency", "weight_update")
GATE_QUANTILE = 0.9
MARGIN = 3.0  # thresholds are MARGIN x the largest value the calibration runs showed
SEED_STRIDE = 7919

RULE = (f"per check, over every engine, model, case and calibration run: the |dlogp| checks gate the "
        f"q{GATE_QUANTILE:g} quantile of |dlogp| over a unit's tokens at {MARGIN:g} x its largest calibration value "
        f"and the max at {MARGIN:g} x the largest calibration max (logprob_mode takes completion_logprobs' "
        f"thresholds: it measures the same tokens against each mode; rollout_contract, which compares a row's max "
        f"|dlogp| to the reference's modes, takes completion_logprobs' max cap as its logprob_atol); k3_max = {MARGIN:g}^2 x the largest k3 "
        f"(k3 is quadratic in dlogp), is_outside_max = {MARGIN:g} x the largest fraction of IS ratios outside "
        f"[0.9, 1.1], and at least {1 - GATE_QUANTILE:g}, the fraction of tokens the quantile gate lets past its atol; "
        f"each rounded up to 2 significant digits and never below float32's default. batch_invariance and "
        f"seed_determinism compare an engine with itself: they stay gated (float32's thresholds) for an engine "
        f"whose calibration runs were bitwise equal (max |dlogp| 0, no token difference) and are measured, not "
        f"gated, for one that was not (no batch-invariant / deterministic mode at this dtype).")


def _round_up(x: float) -> float:
    if x <= 0 or not math.isfinite(x):
        return x
    e = math.floor(math.log10(x)) - 1
    return float(f"{math.ceil(x / 10 ** e - 1e-9)}e{e}")


# ---------------------------------------------------------------- suites
def seeded_suites(seeds: list[int], out: Path, base: Path | None = None) -> list[Path]:
    """Copies of the default suite whose sampled cases' seeds are moved by SEED_STRIDE x seed."""
    base = base or Path(__file__).resolve().parent.parent / "cases" / "default.yaml"
    raw = yaml.safe_load(base.read_text())
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in seeds:
        doc = json.loads(json.dumps(raw))
        doc["suite"] = f"{raw['suite']}-seed{k}"
        for c in doc["cases"]:
            sp = c.get("sampling") or {}
            if sp.get("seed") is not None:
                sp["seed"] = int(sp["seed"]) + SEED_STRIDE * k
        p = out / f"{base.stem}-seed{k}.yaml"
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(p)
    return paths


# ---------------------------------------------------------------- measure
def _q(data: dict) -> dict:
    out = {"max": data.get("max_abs_dlogp")}
    out.update({f"q{k}": v for k, v in (data.get("quantiles_abs_dlogp") or {}).items()})
    return out


def unit_stats(v) -> dict | None:
    """The statistics one verdict (compared under float32's thresholds) contributes."""
    d = v.data or {}
    if v.verdict not in ("pass", "fail"):
        return None
    if v.check in ("completion_logprobs", "prompt_logprobs", "self_consistency"):
        return _q(d)
    if v.check == "weight_update":
        return {"max": d.get("max_abs_vs_live"), **{f"q{k}": x for k, x in (d.get("quantiles_abs_dlogp") or {}).items()}}
    if v.check == "replay":
        sides = [_q(d[s]) for s in ("vs_reference", "vs_source") if (d.get(s) or {}).get("per_sequence")]
        return {k: max(s[k] for s in sides if s.get(k) is not None) for k in sides[0]} if sides else None
    if v.check == "mismatch":
        return {"k3": d.get("k3"), "is_outside_frac": d.get("is_outside_frac"), "max": d.get("max_abs_dlogp")}
    if v.check in ("batch_invariance", "seed_determinism"):
        return {"max": d.get("max_abs_dlogp"), "differing": v.value, "tie_divergences": d.get("tie_divergences", 0)}
    return {"count": v.value}  # greedy_tokens, eos_policy, n_samples, prompt_ids, sampling_support, ...


def measure(runs: list[Path], models: dict[str, str]) -> list[dict]:
    from harness.compare import compare_run
    from harness.checks.data import RunData

    os.environ["PARITY_PROFILE"] = "float32"  # nothing clipped: every statistic as measured
    rows = []
    try:
        for run in runs:
            ctx = RunData.load(run)
            model = ctx.session(registry.reference(), "generate")
            mname = ((model.model or {}).get("name") if model else None) or "?"
            for v in compare_run(run):
                if v.check in ("backend_ran", "tolerance_profile", "sampling_mapping"):
                    continue
                st = unit_stats(v)
                if st is None:
                    continue
                rows.append({"run": run.name, "model": models.get(run.name, mname), "dtype": ctx.profile_dtype,
                             "engine_dtypes": ctx.engine_dtypes, "suite": ctx.suite.suite, "check": v.check,
                             "case": v.case, "backends": v.backends, "verdict_f32": v.verdict, **st})
    finally:
        os.environ.pop("PARITY_PROFILE", None)
    return rows


def appended(study: dict, new: dict, why: str) -> dict:
    """`study` with `new`'s runs added to its calibration set. A run that was held out leaves the held-out set
    (it can no longer count false alarms); `history` keeps what was added and why, so the study says which of its
    runs were chosen after a held-out result was seen."""
    if not why:
        raise ValueError("--append needs --why: the study must say why runs joined its calibration set")
    if study["dtype"] != new["dtype"]:
        raise ValueError(f"study is {study['dtype']}, the runs are {new['dtype']}")
    names = new["calibration_runs"]
    again = sorted(set(names) & set(study["calibration_runs"]))
    if again:
        raise ValueError(f"already in the calibration set: {', '.join(again)}")
    out = dict(study)
    out["calibration_runs"] = study["calibration_runs"] + names
    out["held_out_runs"] = [r for r in study["held_out_runs"] if r not in names] + \
        [r for r in new["held_out_runs"] if r not in study["held_out_runs"]]
    out["models"] = {**study["models"], **new["models"]}
    out["rows"] = study["rows"] + new["rows"]
    out["history"] = study.get("history", []) + [{"added_to_calibration": names, "why": why}]
    return out


# ---------------------------------------------------------------- derive
def derive(study: dict) -> dict:
    """The profile (harness/checks/profiles/<dtype>.yaml's content) the study's rows give by RULE."""
    from harness.checks.catalog import CATALOG

    rows = study["rows"]
    tol: dict[str, dict[str, float]] = {}
    observed: dict[str, dict] = {}

    def top(check: str, key: str) -> float:
        vals = [r[key] for r in rows if r["check"] == check and r.get(key) is not None and r["backends"][0] != registry.reference()]
        return max(vals) if vals else 0.0

    def floor(check: str, name: str, x: float) -> float:
        return max(_round_up(x), CATALOG[check].tolerances[name])

    qk = f"q{GATE_QUANTILE}"
    for c in QUANTILE_CHECKS:
        name = "prompt_logprob_atol" if c == "prompt_logprobs" else "logprob_atol"
        observed[c] = {qk: top(c, qk), "max": top(c, "max")}
        tol[c] = {name: floor(c, name, MARGIN * observed[c][qk]), "logprob_quantile": GATE_QUANTILE,
                  "logprob_max_atol": floor(c, name, MARGIN * observed[c]["max"])}
    tol["logprob_mode"] = {k: v for k, v in tol["completion_logprobs"].items()}
    # rollout_contract compares each rollout's logprobs (max |dlogp| per row) with the reference's exact modes
    tol["rollout_contract"] = {"logprob_atol": tol["completion_logprobs"]["logprob_max_atol"]}
    observed["mismatch"] = {"k3": top("mismatch", "k3"), "is_outside_frac": top("mismatch", "is_outside_frac")}
    tol["mismatch"] = {"k3_max": floor("mismatch", "k3_max", MARGIN ** 2 * observed["mismatch"]["k3"]),
                       "is_outside_max": min(1.0, max(_round_up(MARGIN * observed["mismatch"]["is_outside_frac"]),
                                                      round(1.0 - GATE_QUANTILE, 6)))}
    measured_only: dict[str, list[str]] = {}
    for c in ("batch_invariance", "seed_determinism"):
        per: dict[str, dict] = {}
        for r in rows:
            if r["check"] != c or r["backends"][0] == registry.reference():
                continue
            e = per.setdefault(r["backends"][0], {"max": 0.0, "differing": 0})
            e["max"] = max(e["max"], r.get("max") or 0.0)
            e["differing"] += int(r.get("differing") or 0)
        observed[c] = per
        noisy = sorted(e for e, x in per.items() if x["max"] > 0 or x["differing"])
        if noisy:
            measured_only[c] = noisy
    counts = {}
    for c in ("greedy_tokens", "eos_policy", "n_samples", "prompt_ids", "sampling_support"):
        counts[c] = sum(int(r.get("count") or 0) for r in rows if r["check"] == c)
    observed["counts"] = counts
    return {"dtype": study["dtype"], "calibrated": True, "study": study["path"], "rule": RULE,
            "observed": observed, "tolerances": tol, "measured_only": measured_only}


def profile_text(prof: dict) -> str:
    head = (f"# Generated by `python -m harness.calibrate derive {prof['study']}` from the study's calibration runs;\n"
            f"# do not edit: change the rule (harness/calibrate.py) or the runs. docs/checks.md describes it.\n")
    return head + yaml.safe_dump(prof, sort_keys=False, width=110)


# ---------------------------------------------------------------- table
TABLE_STATS = {"completion_logprobs": ("q0.9", "max"), "prompt_logprobs": ("q0.9", "max"), "replay": ("q0.9", "max"),
               "self_consistency": ("q0.9", "max"), "weight_update": ("q0.9", "max"),
               "mismatch": ("k3", "is_outside_frac"), "batch_invariance": ("max",), "seed_determinism": ("max",)}


def table(study: dict) -> str:
    """Markdown: the largest value of each statistic per check, model and engine over the study's runs."""
    models = sorted({r["model"] for r in study["rows"]})
    engines = sorted({r["backends"][0] for r in study["rows"] if r["backends"][0] != registry.reference()})
    cols = [(m, e) for m in models for e in engines]
    lines = ["| check | statistic | " + " | ".join(f"{m} {e}" for m, e in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for check, stats in TABLE_STATS.items():
        for st in stats:
            cells = []
            for m, e in cols:
                vals = [r[st] for r in study["rows"] if r["check"] == check and r["model"] == m
                        and r["backends"][0] == e and r.get(st) is not None]
                cells.append(f"{max(vals):.3g}" if vals else "-")
            lines.append(f"| `{check}` | {st} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- count
def count(runs: list[Path], dtype: str) -> dict:
    from harness.compare import compare_run

    os.environ["PARITY_PROFILE"] = dtype
    out = {"profile": dtype, "runs": []}
    try:
        for run in runs:
            vs = compare_run(run)
            alarms = [v for v in vs if v.verdict in ("fail", "error")]
            out["runs"].append({
                "run": run.name, "verdicts": len(vs),
                "counts": {o: sum(v.verdict == o for v in vs) for o in ("pass", "fail", "error", "skipped",
                                                                        "measured")},
                "alarms": [{"test_id": v.test_id, "verdict": v.verdict, "detail": v.detail[:300]} for v in alarms],
                "min_headroom": _min_headroom(vs)})
    finally:
        os.environ.pop("PARITY_PROFILE", None)
    out["false_alarms"] = sum(len(r["alarms"]) for r in out["runs"])
    return out


def _min_headroom(vs) -> list:
    best = (math.inf, "")
    for v in vs:
        if v.verdict == "pass" and v.value and v.threshold and v.value > 0 and math.isfinite(v.threshold):
            h = v.threshold / v.value
            if h < best[0]:
                best = (h, f"{v.test_id} {v.metric} {v.value:.3g} vs {v.threshold:g}")
    return [best[0] if math.isfinite(best[0]) else None, best[1]]


# ---------------------------------------------------------------- cli
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.calibrate", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suites")
    s.add_argument("--seeds", required=True)
    s.add_argument("--out", required=True)
    m = sub.add_parser("measure")
    m.add_argument("runs", nargs="+")
    m.add_argument("--out", required=True)
    m.add_argument("--dtype", default="bfloat16")
    m.add_argument("--models", nargs="*", default=[], help="RUN=MODEL labels for the data")
    m.add_argument("--held-out", nargs="*", default=[], help="run directories kept for `count` (named in the data)")
    m.add_argument("--append", action="store_true",
                   help="add the runs to the calibration set of the existing study at --out (its rows are kept)")
    m.add_argument("--why", default="", help="with --append: why these runs join the calibration set (kept in the "
                   "study's history, e.g. the held-out alarms that showed a shape the calibration had not seen)")
    d = sub.add_parser("derive")
    d.add_argument("study")
    d.add_argument("--check", action="store_true", help="exit 1 when the committed profile differs")
    t = sub.add_parser("table")
    t.add_argument("study")
    c = sub.add_parser("count")
    c.add_argument("runs", nargs="+")
    c.add_argument("--profile", default="bfloat16")
    c.add_argument("--out")
    a = ap.parse_args(argv)
    if a.cmd == "suites":
        for p in seeded_suites([int(x) for x in a.seeds.split(",")], Path(a.out)):
            print(p)
        return 0
    if a.cmd == "measure":
        runs = [Path(r) for r in a.runs]
        models = dict(x.split("=", 1) for x in a.models)
        rows = measure(runs, models)
        doc = {"dtype": a.dtype, "path": a.out, "rule": RULE, "calibration_runs": [r.name for r in runs],
               "held_out_runs": [Path(r).name for r in a.held_out], "models": models, "rows": rows}
        if a.append:
            doc = appended(json.loads(Path(a.out).read_text()), doc, a.why)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(doc, indent=0, default=str) + "\n")
        print(f"{len(rows)} unit statistics from {len(runs)} runs -> {a.out}")
        return 0
    if a.cmd == "derive":
        study = json.loads(Path(a.study).read_text())
        prof = derive(study)
        text = profile_text(prof)
        path = PROFILE_DIR / f"{prof['dtype']}.yaml"
        if a.check:
            same = path.is_file() and path.read_text() == text
            print(f"{path}: {'matches' if same else 'DIFFERS FROM'} {a.study}")
            return 0 if same else 1
        path.write_text(text)
        print(f"-> {path}")
        print(json.dumps(prof["tolerances"], indent=1))
        return 0
    if a.cmd == "table":
        print(table(json.loads(Path(a.study).read_text())))
        return 0
    if a.cmd == "count":
        res = count([Path(r) for r in a.runs], a.profile)
        for r in res["runs"]:
            print(f"{r['run']}: {r['counts']}, smallest headroom {r['min_headroom']}")
            for x in r["alarms"]:
                print(f"   ALARM {x['test_id']}: {x['verdict']}: {x['detail'][:200]}")
        print(f"false alarms under the {a.profile} profile: {res['false_alarms']} over {len(res['runs'])} runs")
        if a.out:
            Path(a.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
        return 0 if res["false_alarms"] == 0 else 1
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
