"""Training runs -> curves with bands (RUN/rl/<algo>.json) and verdicts (RUN/rl/comparison.json).

Runs in the driver venv (numpy, scipy, pydantic): it only reads the JSON files
the training processes wrote. Verdicts use harness.verdict.Verdict:

  rl.curve_parity   [algo:A-vs-B]  Welch t-test on the per-seed mean reward over all steps (the area
                                   under the curve / steps); fails when p < alpha / (number of engine
                                   pairs of the algorithm) (Bonferroni). The final-window test is in data.
  rl.learning       [algo:engine]  one-sided t-test that final - first window reward > 0; fails when
                                   p >= alpha (the reward did not clearly rise)
  rl.mismatch       [algo:engine]  largest per-step k3 (trainer vs rollout logprobs of the sampled
                                   tokens) over steps and seeds; fails above --k3-threshold
  rl.weight_sync    [algo:engine]  RLCluster called update_params before every step after the first
  rl.run            [algo:engine]  a training process that failed (verdict "error")
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np

from harness.rl import stats
from harness.rl.config import DEFAULT_MARGINS, PARITY_METRICS, margins_for
from harness.rl.records import write_json
from harness.verdict import Verdict

CURVES_SCHEMA_VERSION = 1
#: per-step mismatch series copied into the curve files (harness.rl.metrics names)
MISMATCH_SERIES = ("logp_diff_mean", "logp_diff_max", "prob_diff_mean", "prob_diff_max", "k3_kl", "kl",
                   "probs_pearson_corr", "chi2_token")
SHARED_CONFIG_KEYS = ("steps", "prompts_per_step", "num_generations", "ppo_batch", "max_tokens", "temperature",
                      "optimizer", "actor_lr", "critic_lr", "grad_clip", "beta", "epsilon", "weights", "model",
                      "group_mode", "fix_tunix_rope")


def _clean(x):
    """NaN/inf -> None, recursively: the curve files are read by a browser's JSON.parse."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return _clean(x.item())
    return x


def load_runs(run_dir: Path) -> list[dict]:
    out = []
    for p in sorted((Path(run_dir) / "rl" / "runs").glob("*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            out.append({"status": "error", "error": f"{p.name}: not JSON ({e})", "label": p.stem.split(".")[1],
                        "config": {"algo": p.stem.split(".")[0], "seed": -1}})
    return out


def _series(steps: list[dict], source: str, name: str) -> list[float | None]:
    vals = []
    for s in steps:
        m = s.get(source) or {}
        v = m.get(name)
        vals.append(float(v) if v is not None else None)
    return vals


def _mismatch_source(steps: list[dict]) -> str:
    """generate's logprobs when the engine returns them, else its get_per_token_logps scores."""
    if any(s.get("sample") for s in steps):
        return "sample"
    return "score"


def _mean_of(xs) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else None


def _clean_steps(seed: dict) -> list[float | None]:
    """Per-step k3 with the steps whose batch holds a sampled pad id blanked (see verdicts_for_algo)."""
    k3 = seed["mismatch"]["k3_kl"]
    pads = seed.get("pad_tokens_sampled") or [None] * len(k3)
    return [None if pad else x for x, pad in zip(k3, pads)]


def _order(labels) -> list[str]:
    base = [x for x in labels if x == "vanilla"]
    return base + sorted(x for x in labels if x != "vanilla")


def curves_for_algo(runs: list[dict], algo: str, window: int, confidence: float = 0.95) -> dict:
    ok = [r for r in runs if r["config"]["algo"] == algo and r.get("status") == "ok"]
    labels = _order({r["label"] for r in runs if r["config"]["algo"] == algo})
    engines: dict[str, dict] = {}
    shared = None
    for label in labels:
        mine = sorted((r for r in ok if r["label"] == label), key=lambda r: r["config"]["seed"])
        failed = [r for r in runs if r["config"]["algo"] == algo and r["label"] == label and r.get("status") != "ok"]
        seeds: dict[str, dict] = {}
        for r in mine:
            st = r["steps"]
            src = _mismatch_source(st)
            seeds[str(r["config"]["seed"])] = {
                "reward": [s["reward_mean"] for s in st],
                "reward_std": [s["reward_std"] for s in st],
                "completion_len": [s.get("completion_len_mean") for s in st],
                "identical_group_frac": [s.get("identical_group_frac") for s in st],
                "syncs_before": [s.get("syncs_before") for s in st],
                "pad_tokens_sampled": [s.get("pad_tokens_sampled") for s in st],
                "mismatch_source": src,
                "mismatch": {k: _series(st, src, k) for k in MISMATCH_SERIES},
                "score_mismatch": ({k: _series(st, "score", k) for k in MISMATCH_SERIES}
                                   if any(s.get("score") for s in st) else None),
                "examples": [s.get("example", "") for s in st],
                "train_seconds": r.get("train_seconds"), "setup_seconds": r.get("setup_seconds"),
                "syncs": r.get("syncs"), "syncs_skipped": r.get("syncs_skipped"),
            }
            shared = shared or {k: r["config"].get(k) for k in SHARED_CONFIG_KEYS}
        entry: dict = {"seeds": seeds, "errors": [{"seed": r["config"].get("seed"), "error": r.get("error", "")}
                                                  for r in failed]}
        if seeds:
            n = min(len(v["reward"]) for v in seeds.values())
            rewards = np.array([v["reward"][:n] for v in seeds.values()], np.float64)
            entry["band"] = {"reward": stats.band(rewards, confidence)}
            for k in ("logp_diff_mean", "logp_diff_max", "k3_kl"):
                arr = np.array([[np.nan if x is None else x for x in v["mismatch"][k][:n]] for v in seeds.values()],
                               np.float64)
                if np.isfinite(arr).any():
                    entry["band"][k] = stats.band(arr, confidence)
            sums = [stats.summaries(v["reward"][:n], window) for v in seeds.values()]
            entry["summary"] = {k: [s[k] for s in sums] for k in ("first", "final", "gain", "auc")}
            entry["summary"]["length"] = [_mean_of(v["completion_len"][:n]) for v in seeds.values()]
            entry["summary"]["mismatch_k3"] = [_mean_of(_clean_steps(v)[:n]) for v in seeds.values()]
            lengths = np.array([[np.nan if x is None else x for x in v["completion_len"][:n]] for v in seeds.values()],
                               np.float64)
            if np.isfinite(lengths).any():
                entry["band"]["completion_len"] = stats.band(lengths, confidence)
            first = mine[0]
            entry["warnings"] = first.get("warnings", [])
            entry["repeat_probe_identical"] = first.get("repeat_probe_identical")
            entry["versions"] = first.get("versions", {})
            entry["model"] = first.get("model")  # name, content_hash, path: the report's provenance
        engines[label] = entry
    return _clean({"schema_version": CURVES_SCHEMA_VERSION, "algo": algo, "window": window,
                   "confidence": confidence, "config": shared or {}, "engine_order": list(engines),
                   "engines": engines})


def pair_verdicts(curves: dict, alpha: float, margins: dict[str, float], details: list[dict]) -> list[Verdict]:
    """rl.curve_parity per engine pair: every metric of PARITY_METRICS tested for equivalence (stats.equivalence);
    the difference tests of all pairs and metrics of the algorithm share `alpha` (Holm)."""
    algo, engines = curves["algo"], curves["engines"]
    good = [e for e, v in engines.items() if v.get("seeds")]
    pairs = list(itertools.combinations(good, 2))
    tests: dict[tuple, dict] = {}
    for a, b in pairs:
        sa, sb = engines[a]["summary"], engines[b]["summary"]
        for metric in PARITY_METRICS:
            if metric not in margins:
                continue
            tests[(a, b, metric)] = stats.equivalence(sa.get(metric) or [], sb.get(metric) or [], margins[metric],
                                                      alpha=alpha, alpha_diff=alpha / max(1, len(pairs) * len(margins)),
                                                      plan=False)
    keys = list(tests)
    adjusted = stats.holm_adjust([tests[k]["p_diff"] for k in keys])
    for k, p_adj in zip(keys, adjusted):
        t = tests[k]
        t["p_diff_holm"] = p_adj
        t["outcome"] = stats.classify(t["p_tost"], p_adj, alpha, alpha)
        if t["outcome"] == stats.INCONCLUSIVE and t["seeds_needed"] is None and t["n"][0] >= 2 and t["n"][1] >= 2:
            t["seeds_needed"] = stats.seeds_needed(t["diff"], t["sd"][0], t["sd"][1], t["margin"], alpha=alpha,
                                                   alpha_diff=t["alpha_diff"])
    out = []
    for a, b in pairs:
        per = {m: tests[(a, b, m)] for m in PARITY_METRICS if (a, b, m) in tests}
        outcomes = [t["outcome"] for t in per.values()]
        verdict = ("fail" if stats.DIFFERENT in outcomes else "error" if stats.INCONCLUSIVE in outcomes
                   else "pass")
        # how far the equivalence interval reaches, in margins: <= 1 on every metric is what passing means
        reach = [max(abs(x) for x in t["ci_tost"]) / t["margin"] for t in per.values() if None not in t["ci_tost"]]
        parts = [_describe(m, t, curves["window"], engines[a]["summary"], engines[b]["summary"]) for m, t in per.items()]
        needed = [t["seeds_needed"] for t in per.values() if t["outcome"] == stats.INCONCLUSIVE]
        differ = [m for m, t in per.items() if t["outcome"] == stats.DIFFERENT]
        undecided = [m for m, t in per.items() if t["outcome"] == stats.INCONCLUSIVE]
        head = {"pass": "equivalent on every metric",
                "fail": f"different: {', '.join(differ)}"
                        + (f" (inconclusive: {', '.join(undecided)})" if undecided else ""),
                "error": f"inconclusive (not a pass): {', '.join(undecided)}; "
                         + (f"about {_most(needed)} seeds per engine would decide it" if any(needed) else
                            "fewer than two seeds on a side")}[verdict]
        out.append(Verdict(
            check="rl.curve_parity", backends=[a, b], case=algo,
            metric="largest |end of the TOST interval| / margin over the metrics (<= 1: equivalent)",
            value=max(reach) if reach else None, threshold=1.0, verdict=verdict,
            detail=f"{head}. " + "; ".join(parts),
            data={"metrics": per, "alpha": alpha, "family_tests": len(tests), "margins": dict(margins),
                  "seeds": {a: len(engines[a]["seeds"]), b: len(engines[b]["seeds"])}}))
        details.append({"algo": algo, "pair": [a, b], "metrics": per})
    return out


def _most(needed: list) -> str:
    ints = [n for n in needed if isinstance(n, int)]
    strs = [n for n in needed if not isinstance(n, int)]
    return str(strs[0]) if strs else str(max(ints)) if ints else "?"


def _describe(metric: str, t: dict, window: int, sa: dict, sb: dict) -> str:
    name = PARITY_METRICS[metric].format(window=window)
    ma, mb = _mean_of(sa.get(metric) or []), _mean_of(sb.get(metric) or [])
    lo, hi = t["ci_tost"]
    ci = f"[{_num(lo)}, {_num(hi)}]" if lo is not None else "no interval"
    text = f"{name} {_num(ma)} vs {_num(mb)}, diff {_num(t['diff'], sign=True)}, {100 * (1 - 2 * t['alpha']):.0f}% CI {ci}"
    if t["outcome"] == stats.EQUIVALENT:
        return text + f" inside ±{_num(t['margin'])}: equivalent (TOST p={t['p_tost']:.2g})"
    if t["outcome"] == stats.DIFFERENT:
        return text + (f" vs margin ±{_num(t['margin'])}: DIFFERENT (Welch p={t['p_diff']:.2g}, Holm-adjusted "
                       f"{t['p_diff_holm']:.2g} < {t['alpha']:g})")
    return text + (f" vs margin ±{_num(t['margin'])}: inconclusive (TOST p={t['p_tost']:.2g}, Holm-adjusted "
                   f"difference p={t.get('p_diff_holm', float('nan')):.2g}; {t['seeds_needed'] or '2+'} seeds per "
                   f"engine would decide it)")


def _num(x, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "?"
    return f"{x:+.3g}" if sign else f"{x:.3g}"


def verdicts_for_algo(curves: dict, alpha: float, k3_threshold: float,
                      margins: dict | None = None) -> tuple[list[Verdict], list[dict]]:
    algo = curves["algo"]
    out: list[Verdict] = []
    details: list[dict] = []
    engines = curves["engines"]
    for label, entry in engines.items():
        for err in entry.get("errors", []):
            out.append(Verdict(check="rl.run", backends=[label], case=algo, metric="status", value=None,
                               threshold=None, verdict="error",
                               detail=f"seed {err['seed']}: {err['error'][:500]}"))
        if not entry.get("seeds"):
            continue
        # learning
        g = stats.gain_test(entry["summary"]["gain"])
        out.append(Verdict(
            check="rl.learning", backends=[label], case=algo, metric="p(gain <= 0), one-sided t-test",
            value=g["p"] if g["p"] == g["p"] else None, threshold=alpha,
            verdict=("skipped" if g["p"] != g["p"] else "pass" if g["p"] < alpha else "fail"),
            detail=(f"reward first {curves['window']} steps {np.mean(entry['summary']['first']):.3f} -> last "
                    f"{curves['window']} steps {np.mean(entry['summary']['final']):.3f} "
                    f"(mean gain {g['mean']:+.3f} over {len(entry['summary']['gain'])} seeds)"),
            data={"gain": entry["summary"]["gain"], **g}))
        # mismatch. A step whose batch contains a sampled pad id is left out of the verdict (and counted):
        # tunix masks pad tokens out of the trainer's forward while the sampler attended to them, so every
        # later token of that row differs whatever the engine (docs/rl.md, "tunix defects"). A stale or
        # wrong engine differs on every step and is still caught.
        k3, lpm, lpa, padded = [], [], [], []
        for s in entry["seeds"].values():
            m = s["mismatch"]
            pads = s.get("pad_tokens_sampled") or [None] * len(m["k3_kl"])
            for x, mx, mean, pad in zip(m["k3_kl"], m["logp_diff_max"], m["logp_diff_mean"], pads):
                if x is None:
                    continue
                if pad:
                    padded.append(x)
                    continue
                k3.append(x)
                lpm.append(mx)
                lpa.append(mean)
        src = next(iter(entry["seeds"].values()))["mismatch_source"]
        if k3:
            worst = float(max(k3))
            excluded = (f"; {len(padded)} step(s) with a sampled pad id left out (their k3 max "
                        f"{max(padded):.3g})" if padded else "")
            out.append(Verdict(
                check="rl.mismatch", backends=[label], case=algo,
                metric=f"max per-step k3_kl ({src} logprobs, steps without a sampled pad id)",
                value=worst, threshold=k3_threshold, verdict="pass" if worst <= k3_threshold else "fail",
                detail=(f"trainer vs rollout over {len(k3)} steps: k3 max {worst:.3g}, median "
                        f"{float(np.median(k3)):.3g}; |dlogp| mean up to {max(lpa):.3g}, max {max(lpm):.3g}"
                        + excluded),
                data={"k3_max": worst, "k3_median": float(np.median(k3)), "logp_diff_mean_max": float(max(lpa)),
                      "logp_diff_max_max": float(max(lpm)), "source": src, "pad_steps_excluded": len(padded),
                      "pad_steps_k3_max": float(max(padded)) if padded else None}))
        else:
            out.append(Verdict(check="rl.mismatch", backends=[label], case=algo, metric="max per-step k3_kl",
                               value=None, threshold=k3_threshold, verdict="error",
                               detail="no step had both trainer and rollout logprobs"))
        # weight sync through update_params
        missing = []
        for seed, s in entry["seeds"].items():
            for step, before in enumerate(s["syncs_before"]):
                if step > 0 and (before is None or before < step):
                    missing.append((seed, step))
        skipped = sum(s.get("syncs_skipped") or 0 for s in entry["seeds"].values())
        out.append(Verdict(
            check="rl.weight_sync", backends=[label], case=algo, metric="steps without a preceding update_params",
            value=float(len(missing)), threshold=0.0, verdict="pass" if not missing else "fail",
            detail=(f"RLCluster called update_params before every step" if not missing
                    else f"no update_params before {len(missing)} step(s), e.g. seed/step {missing[:3]}")
                   + (f"; {skipped} call(s) swallowed by the stale-weights flag" if skipped else ""),
            data={"missing": missing[:20], "skipped": skipped}))
    out += pair_verdicts(curves, alpha, margins_for(margins or DEFAULT_MARGINS, algo), details)
    return out, details


def compare_run(run_dir: Path, *, window: int = 10, alpha: float = 0.05, k3_threshold: float = 1e-3,
                margins: dict | None = None) -> dict:
    """Curves, verdicts and RUN/rl/comparison.json. `margins`: {algo: {metric: margin}} or one {metric: margin}
    for every algorithm (default: DEFAULT_MARGINS)."""
    run_dir = Path(run_dir)
    runs = load_runs(run_dir)
    algos = sorted({r["config"]["algo"] for r in runs})
    verdicts: list[Verdict] = []
    tests: list[dict] = []
    curves_files = {}
    for algo in algos:
        curves = curves_for_algo(runs, algo, window)
        path = run_dir / "rl" / f"{algo}.json"
        write_json(path, curves, sort_keys=False)
        curves_files[algo] = str(path.relative_to(run_dir))
        v, d = verdicts_for_algo(curves, alpha, k3_threshold, margins)
        verdicts += v
        tests += d
    outcome = [v.verdict for v in verdicts]
    exit_code = 2 if "error" in outcome or not verdicts else (1 if "fail" in outcome else 0)
    comparison = _clean({
        "schema_version": CURVES_SCHEMA_VERSION, "alpha": alpha, "window": window, "k3_threshold": k3_threshold,
        "margins": dict(margins or DEFAULT_MARGINS),
        "curves": curves_files, "verdicts": [v.model_dump(mode="json") for v in verdicts], "tests": tests,
        "counts": {o: outcome.count(o) for o in ("pass", "fail", "error", "skipped")}, "exit_code": exit_code,
    })
    write_json(run_dir / "rl" / "comparison.json", comparison)
    comparison["run_dir"] = str(run_dir)
    comparison["_curves"] = {a: json.loads((run_dir / p).read_text()) for a, p in curves_files.items()}
    return comparison


def print_summary(comparison: dict) -> None:
    for algo, curves in comparison.get("_curves", {}).items():
        print(f"[rl] {algo}: reward (mean over seeds) first step -> last step | final-window | k3 max | "
              f"|dlogp| max")
        for label, e in curves["engines"].items():
            if not e.get("seeds"):
                print(f"  {label:18s} no successful run ({len(e.get('errors', []))} error(s))")
                continue
            mean = e["band"]["reward"]["mean"]
            k3 = [x for s in e["seeds"].values() for x in s["mismatch"]["k3_kl"] if x is not None]
            lp = [x for s in e["seeds"].values() for x in s["mismatch"]["logp_diff_max"] if x is not None]
            print(f"  {label:18s} {mean[0]:.3f} -> {mean[-1]:.3f} | {np.mean(e['summary']['final']):.3f} "
                  f"(seeds {', '.join(f'{x:.3f}' for x in e['summary']['final'])}) | "
                  f"{max(k3) if k3 else float('nan'):.3g} | {max(lp) if lp else float('nan'):.3g}")
        for label, e in curves["engines"].items():
            for w in e.get("warnings") or []:
                print(f"  note {label}: {w}")
    for v in comparison["verdicts"]:
        mark = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skipped": "SKIP"}[v["verdict"]]
        print(f"  {mark:5s} {v['check']}[{v['case']}:{'-vs-'.join(v['backends'])}] {v['detail']}")
    c = comparison["counts"]
    print(f"[rl] verdicts: {c['pass']} pass, {c['fail']} fail, {c['error']} error, {c['skipped']} skipped -> "
          f"{comparison['run_dir']}/rl/comparison.json")
