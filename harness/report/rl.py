"""RL runs in the report: the RL driver's curves files, its run directory, and their plots.

Two kinds of file can sit in `RUN/rl/`:

- the RL driver's curves, one per algorithm (`python -m harness.rl`, harness/rl/compare.py; the shape is
  in docs/rl.md): `{"schema_version", "algo", "engines": {label: {"seeds", "band", ...}}}`;
- a plain figure (docs/report.md): `{"name", "series": {backend: [[x, y], ...]}, "verdict", "detail"}`.

The driver also keeps its bookkeeping there (plan.json, comparison.json, wall.json): not figures, so not
read as figures. A directory the RL driver wrote (no run.json, no records/*.jsonl: its records are in
records/rl/) is an *RL run*: its backends are the engine labels of the curves and its verdicts the RL
verdicts the driver put in checks.json, so nothing a parity run would miss there (a manifest, generate
and score phases, records) counts against it.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from harness.backends import registry
from harness.report import plots

DRIVER_FILES = {"plan.json", "comparison.json", "wall.json"}  # harness/rl/driver.py, compare.py
COMPARE_HINT = "python -m harness.rl compare --run {run_dir}"
MISMATCH_PLOTS = (  # (band key, y label, title suffix): the two per-step mismatch metrics docs/rl.md plots
    ("k3_kl", "k3 (trainer vs rollout)", "per-step k3 mismatch"),
    ("logp_diff_max", "max |Δ logprob|", "per-step max |Δ logprob|"),
)


def _curves_version() -> int:
    from harness.rl.compare import CURVES_SCHEMA_VERSION  # one source of truth: the writer's

    return CURVES_SCHEMA_VERSION


def is_curves(doc: Any) -> bool:
    return isinstance(doc, dict) and {"schema_version", "algo", "engines"} <= set(doc)


def is_rl_run(run_dir: Path) -> bool:
    """A directory `python -m harness.rl run` (or `compare`) wrote, and not a parity run with extra figures."""
    rl = run_dir / "rl"
    if not rl.is_dir() or (run_dir / "run.json").exists() or any((run_dir / "records").glob("*.jsonl")):
        return False
    return (rl / "plan.json").exists() or (rl / "runs").is_dir() or (rl / "comparison.json").exists()


def load_rl_dir(rl_dir: Path, problems: list[str], warnings: list[str], load_json) -> dict[str, Any]:
    """extras: "rl" (plain figures), "rl_curves" (the driver's curves, by algorithm), "rl_plan", "rl_wall"."""
    out: dict[str, Any] = {}
    figures, curves = [], []
    for p in sorted(rl_dir.glob("*.json")):
        if p.name in DRIVER_FILES:
            continue
        doc = load_json(p, problems, "reward-curve file")
        if doc is None:
            continue
        if is_curves(doc):
            version = _curves_version()
            if doc["schema_version"] != version or not isinstance(doc["engines"], dict):
                problems.append(f"rl/{p.name}: curves schema_version {doc['schema_version']!r} (this report reads "
                                f"{version}) or no engines mapping: not shown")
                continue
            curves.append(doc)
        elif isinstance(doc, dict) and isinstance(doc.get("series"), dict):
            doc.setdefault("name", p.stem)
            figures.append(doc)
        else:
            warnings.append(f"rl/{p.name} is neither RL curves (schema_version, algo, engines) nor a figure "
                            "(series): not shown")
    if figures:
        out["rl"] = figures
    if curves:
        out["rl_curves"] = sorted(curves, key=lambda c: str(c["algo"]))
    for name in ("plan", "wall"):  # provenance only: a broken one costs the report nothing
        try:
            out[f"rl_{name}"] = json.loads((rl_dir / f"{name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    return out


def engine_order(curves: list[dict]) -> list[str]:
    out: list[str] = []
    for c in curves:
        for label in list(c.get("engine_order") or []) + list(c["engines"]):
            if label not in out:
                out.append(label)
    return out


def _epoch(iso: Any) -> float | None:
    try:
        return _dt.datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


def pseudo_manifest(extras: dict) -> dict:
    """What a parity manifest would say, from the driver's plan.json, wall.json and the curves."""
    plan, wall = extras.get("rl_plan") or {}, extras.get("rl_wall") or {}
    started = _epoch(plan.get("started")) if plan.get("started") else None
    secs = wall.get("wall_seconds")
    model = next((e.get("model") for c in extras.get("rl_curves", []) for e in c["engines"].values()
                  if isinstance(e.get("model"), dict)), None)
    argv = plan.get("argv")
    return {"argv": [str(a) for a in argv] if isinstance(argv, list) else None, "started_at": started,
            "finished_at": started + secs if started is not None and isinstance(secs, (int, float)) else None,
            "model": model}


def _entries(data, label: str) -> list[tuple[str, dict]]:
    return [(c["algo"], c["engines"][label]) for c in data.extras.get("rl_curves", []) if label in c["engines"]]


def engine_status(data) -> dict[str, dict]:
    """summary.json `backends` of an RL run: an engine ran cleanly when none of its training runs failed
    (each failure is also an `rl.run` error verdict)."""
    out = {}
    for label in data.backends:
        entries = _entries(data, label)
        ok = sum(len(e.get("seeds") or {}) for _, e in entries)
        failed = [f"{algo} seed {err.get('seed')}" for algo, e in entries for err in e.get("errors") or []]
        versions: dict[str, str] = {}
        for _, e in entries:
            versions.update({str(k): str(v) for k, v in (e.get("versions") or {}).items()})
        secs = [(s.get("setup_seconds") or 0) + (s.get("train_seconds") or 0)
                for _, e in entries for s in (e.get("seeds") or {}).values()]
        status = "failed" if failed else ("ok" if ok else "not_run")
        reason = (f"{len(failed)} of {ok + len(failed)} training run(s) failed: {', '.join(failed)}" if failed
                  else ("" if ok else "no training run"))
        model = next((e["model"] for _, e in entries if isinstance(e.get("model"), dict)), {})
        out[label] = {
            "requested": True, "ran": status == "ok", "status": status, "reason": reason,
            "unit_under_test": registry.is_unit_under_test(label.removesuffix("-stale")),
            "versions": versions, "device": None, "dtype": None, "logprob_mode": None, "model_hash": model.get("content_hash"),
            "config": {algo: c.get("config") or {} for c in data.extras.get("rl_curves", [])
                       for algo in [c["algo"]] if label in c["engines"]},
            "options": {}, "phases": {}, "wall_s": round(sum(secs), 2) if secs else None,
            "records": {"generation": 0, "score": 0, "error": 0},  # RL step records are not parity records
            "errors": [],
        }
    return out


def failed_logs(data, label: str) -> list[tuple[str, str]]:
    """(what, path relative to the run) of each failed training run's log: rl/logs/<algo>.<label>.seed<k>.log."""
    from harness.rl.records import run_name

    return [(f"{algo} seed {err.get('seed')}", f"rl/logs/{run_name(algo, label, err.get('seed'))}.log")
            for algo, e in _entries(data, label) for err in e.get("errors") or []]


def _band(label: str, color: str, entry: dict, key: str, per_seed) -> plots.Band | None:
    band = (entry.get("band") or {}).get(key)
    if not isinstance(band, dict):
        return None
    seeds = [(k, per_seed(s)) for k, s in (entry.get("seeds") or {}).items()]
    return plots.Band(label, color, band.get("mean") or [], band.get("lo") or [], band.get("hi") or [],
                      seeds, band.get("n"))


def _mean(xs) -> float | None:
    xs = [x for x in xs or [] if isinstance(x, (int, float))]
    return sum(xs) / len(xs) if xs else None


METRIC_LABELS = {"auc": "reward AUC", "final": "final reward", "length": "length", "mismatch_k3": "k3 mismatch"}


def _tost_level(verdicts: list) -> int:
    alpha = next((v.data.get("alpha") for v in verdicts if v.check == "rl.curve_parity" and v.data.get("alpha")),
                 0.05)
    return round(100 * (1 - 2 * alpha))


def equivalence_rows(verdicts: list) -> list:
    """rl.curve_parity verdicts -> one forest-plot row per (engine pair, metric), in margins."""
    rows = []
    for v in verdicts:
        if v.check != "rl.curve_parity":
            continue
        for metric, t in (v.data.get("metrics") or {}).items():
            m = t.get("margin")
            lo, hi = (t.get("ci_tost") or [None, None])[:2]

            def scaled(x):
                return x / m if isinstance(x, (int, float)) and m else None

            label = f"{' vs '.join(v.backends)} · {METRIC_LABELS.get(metric, metric)}"
            tip = (f"{label}: diff {plots.fmt(t.get('diff'))}, CI [{plots.fmt(lo)}, {plots.fmt(hi)}], margin "
                   f"±{plots.fmt(m)}: {t.get('outcome')}"
                   + (f"; {t['seeds_needed']} seeds per engine would decide it" if t.get("seeds_needed") else ""))
            rows.append(plots.Interval(label, scaled(t.get("diff")), scaled(lo), scaled(hi),
                                       str(t.get("outcome")), tip))
    return rows


def algo_views(data, verdicts: list, colors: dict[str, str]) -> list[dict]:
    """Per algorithm: the reward band chart, the mismatch band charts (log y), an engine table and the RL
    verdicts of that algorithm (`verdicts` in the order to list them)."""
    views = []
    for c in data.extras.get("rl_curves", []):
        algo, engines = c["algo"], c["engines"]
        order = list(engines)  # a figure beside a parity run may name engines the run has no colour for
        cmap = {label: colors.get(label) or plots.color_for(label, order) for label in order}
        mine = [v for v in verdicts if v.case == algo and v.check.startswith("rl.")]
        conf = c.get("confidence", 0.95)
        reward = [b for label, e in engines.items()
                  if (b := _band(label, cmap[label], e, "reward", lambda s: s.get("reward") or []))]
        n_seeds = max((len(e.get("seeds") or {}) for e in engines.values()), default=0)
        charts = []
        if reward:
            charts.append(plots.band_chart(reward, title=f"{algo} · reward", y_label="batch mean reward"))
        length = [b for label, e in engines.items()
                  if (b := _band(label, cmap[label], e, "completion_len", lambda s: s.get("completion_len") or []))]
        if length:
            charts.append(plots.band_chart(length, title=f"{algo} · completion length",
                                           y_label="mean completion tokens"))
        parity = equivalence_rows(mine)
        if parity:
            charts.append(plots.equivalence_chart(
                parity, title=f"{algo} · curve parity: difference / margin ({_tost_level(mine)}% CI)"))
        k3_threshold = next((v.threshold for v in mine if v.check == "rl.mismatch" and v.threshold), None)
        for key, y_label, what in MISMATCH_PLOTS:
            bands = [b for label, e in engines.items() if (b := _band(
                label, cmap[label], e, key, lambda s, k=key: (s.get("mismatch") or {}).get(k) or []))]
            if bands:
                charts.append(plots.band_chart(bands, title=f"{algo} · {what}", y_label=y_label, log_y=True,
                                               threshold=k3_threshold if key == "k3_kl" else None))
        rows = []
        for label, e in engines.items():
            seeds = e.get("seeds") or {}
            k3 = [x for s in seeds.values() for x in (s.get("mismatch") or {}).get("k3_kl") or [] if x is not None]
            lp = [x for s in seeds.values() for x in (s.get("mismatch") or {}).get("logp_diff_max") or []
                  if x is not None]
            summ = e.get("summary") or {}
            rows.append({"label": label, "color": cmap[label], "seeds": len(seeds),
                         "errors": len(e.get("errors") or []), "first": _mean(summ.get("first")),
                         "final": _mean(summ.get("final")), "auc": _mean(summ.get("auc")),
                         "k3_max": max(k3) if k3 else None, "logp_max": max(lp) if lp else None,
                         "source": next((s.get("mismatch_source") for s in seeds.values()), None),
                         "warnings": list(e.get("warnings") or [])})
        views.append({"algo": algo, "charts": charts, "rows": rows, "verdicts": mine, "window": c.get("window"),
                      "confidence": conf, "seeds": n_seeds, "config": c.get("config") or {}})
    return views
