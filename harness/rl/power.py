"""The power study behind rl.curve_parity's design: `python -m harness.rl power --run RUN [--run RUN ...]`.

From finished RL runs (their RUN/rl/runs/*.json, through compare.curves_for_algo) it measures, per
algorithm and parity metric:

  sd        the seed-to-seed standard deviation of the per-seed metric, pooled over the engines that
            train (each engine's own mean removed: engines may differ, the spread is what the design
            faces; stale-weight engines left out: a flat curve has almost no spread),
            with its degrees of freedom and the one-sided 80% upper confidence bound (chi-square);
  pairing   the same-seed correlation between engines (same prompts and data order, per-step seeds):
            the variance of a per-seed paired difference is sd_a^2 + sd_b^2 - 2 cov, so a paired design
            only pays when the correlation is clearly positive; it costs half the degrees of freedom;

and simulates the three-outcome rule (stats.design_power) for 2..--max-seeds seeds per engine with the
difference tests of all pairs of the design's engines (3: vanilla, sglang_jax, vllm) and metrics sharing
the family alpha: P(equivalent) with no
difference, P(different) with a true difference of the margin (the power), the false-alarm rate; and
the smallest margin each design detects with the target power (`mde`). An injected engine
(`<engine>-temp<s>`, `<engine>-stale`) in the runs is compared with its clean counterpart: observed
difference per metric in margins, and the verdict the rule gives it.

Writes the study as JSON (--out); docs/rl.md quotes it and tests/rl/test_power.py checks that the
declared margins and the default seed count meet the target power on the committed study.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path

import numpy as np

from harness.rl import stats
from harness.rl.compare import curves_for_algo, load_runs
from harness.rl.config import DEFAULT_MARGINS, PARITY_METRICS, margins_for

STUDY_SCHEMA_VERSION = 1


def _is_clean(label: str) -> bool:
    return "-" not in label


def _pooled(label: str) -> bool:
    """Engines whose seed-to-seed spread is the design's: clean ones and a wrong temperature (it trains,
    around another mean); not stale weights (a flat curve has almost no spread)."""
    return "-stale" not in label


def measure_spread(engines: dict, metric: str) -> dict:
    """Pooled within-engine sd of a per-seed metric over the clean engines, and same-seed correlations.
    `engines`: label -> {"seeds": [seed ids], metric: [per-seed values]} (the study's inputs)."""
    # an injected temperature error moves the mismatch itself: its spread there is the defect's, not the design's
    keep = _is_clean if metric == "mismatch_k3" else _pooled
    groups = {label: [x for x in e.get(metric) or [] if x is not None] for label, e in engines.items() if keep(label)}
    ss = sum(float(np.sum((np.asarray(v) - np.mean(v)) ** 2)) for v in groups.values() if len(v) >= 2)
    df = sum(len(v) - 1 for v in groups.values() if len(v) >= 2)
    out: dict = {"per_engine": {k: {"n": len(v), "mean": float(np.mean(v)) if v else None,
                                    "sd": float(np.std(v, ddof=1)) if len(v) >= 2 else None}
                                for k, v in groups.items()}}
    if df == 0:
        return {**out, "sd": None, "df": 0, "sd_upper80": None, "pair_correlation": {}}
    from scipy import stats as sst

    sd = math.sqrt(ss / df)
    out.update(sd=sd, df=df, sd_upper80=math.sqrt(ss / float(sst.chi2.ppf(0.2, df))) if ss > 0 else 0.0)
    corr = {}
    for a, b in itertools.combinations(sorted(g for g in groups if _is_clean(g)), 2):
        va = dict(zip(engines[a]["seeds"], engines[a].get(metric) or []))
        vb = dict(zip(engines[b]["seeds"], engines[b].get(metric) or []))
        common = [k for k in va if k in vb and va[k] is not None and vb[k] is not None]
        xa, xb = [va[k] for k in common], [vb[k] for k in common]
        if len(common) >= 3 and np.std(xa) > 0 and np.std(xb) > 0:
            corr[f"{a}-vs-{b}"] = float(np.corrcoef(xa, xb)[0, 1])
    out["pair_correlation"] = corr
    return out


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def mode_split(engines: dict, metric: str = "final", confidence: float = 0.95) -> dict | None:
    """Is a bimodal per-seed metric's mode chosen by the engine, or by chance?

    PPO's final reward is bimodal on this task (the policy collapses onto one of two repetition patterns;
    docs/rl.md, "The PPO gap between the rollouts"). The modes are split at the widest gap between the
    sorted per-seed values of the clean engines (pooled); per engine: how many seeds land in the upper
    mode. Per engine pair: Fisher's exact test of "the same upper-mode probability" and Newcombe's hybrid
    score interval for the difference of the two probabilities. Under a common probability p the
    seed-to-seed sd of the metric is about gap x sqrt(p (1 - p)), which the pooled sd of the power study
    then includes (when the engines' modes differ it does not: each engine's own mean is removed).
    None when fewer than 4 values or no gap is wider than twice the spread within the modes."""
    from scipy import stats as sst

    vals = {label: [x for x in e.get(metric) or [] if x is not None] for label, e in engines.items() if _is_clean(label)}
    pooled = sorted(x for v in vals.values() for x in v)
    if len(pooled) < 4:
        return None
    gaps = np.diff(pooled)
    i = int(np.argmax(gaps))
    lower, upper = pooled[: i + 1], pooled[i + 1:]
    within = math.sqrt((np.sum((np.asarray(lower) - np.mean(lower)) ** 2) + np.sum((np.asarray(upper) - np.mean(upper)) ** 2))
                       / max(1, len(pooled) - 2))
    if not gaps[i] > 2 * within:
        return None
    split = (pooled[i] + pooled[i + 1]) / 2
    z = float(sst.norm.ppf(0.5 + confidence / 2))
    per = {label: {"n": len(v), "upper": sum(x > split for x in v), "values": v} for label, v in vals.items()}
    for e in per.values():
        e["p_upper"] = e["upper"] / e["n"] if e["n"] else None
        e["ci"] = list(_wilson(e["upper"], e["n"], z))
    pairs = {}
    for a, b in itertools.combinations(sorted(per), 2):
        ka, na, kb, nb = per[a]["upper"], per[a]["n"], per[b]["upper"], per[b]["n"]
        if not na or not nb:
            continue
        _, p = sst.fisher_exact([[ka, na - ka], [kb, nb - kb]])
        (la, ua), (lb, ub) = _wilson(ka, na, z), _wilson(kb, nb, z)
        d = ka / na - kb / nb
        lo = d - math.sqrt((ka / na - la) ** 2 + (ub - kb / nb) ** 2)
        hi = d + math.sqrt((ua - ka / na) ** 2 + (kb / nb - lb) ** 2)
        pairs[f"{a}-vs-{b}"] = {"diff": d, "ci": [lo, hi], "p_fisher": float(p)}
    k, n = sum(e["upper"] for e in per.values()), sum(e["n"] for e in per.values())
    p_all = k / n
    return {"metric": metric, "split": split, "lower_mean": float(np.mean(lower)), "upper_mean": float(np.mean(upper)),
            "gap": float(np.mean(upper) - np.mean(lower)), "within_sd": within, "confidence": confidence,
            "p_upper_pooled": p_all, "mixture_sd": float((np.mean(upper) - np.mean(lower)) * math.sqrt(p_all * (1 - p_all))),
            "engines": per, "pairs": pairs}


def extract_inputs(run_dirs: list[Path], window: int) -> dict:
    """The study's data: per algorithm, engine -> seed ids and every parity metric per seed (and steps)."""
    runs = [r for d in run_dirs for r in load_runs(Path(d))]
    out = {}
    for algo in sorted({r["config"]["algo"] for r in runs}):
        curves = curves_for_algo(runs, algo, window)
        out[algo] = {"steps": curves["config"].get("steps"), "engines": {
            label: {"seeds": [int(k) for k in e["seeds"]], **{m: e["summary"].get(m) for m in PARITY_METRICS}}
            for label, e in curves["engines"].items() if e.get("seeds")}}
    return out


def merge_inputs(base: dict, newer: dict) -> dict:
    """A study's inputs with more runs added: per algorithm and engine the union of the seeds; a seed in
    both takes `newer`'s values (a re-run of the same seed on today's code). Steps must agree."""
    def by_seed(e: dict) -> dict:
        return {s: {m: (e.get(m) or [None] * len(e["seeds"]))[i] for m in PARITY_METRICS}
                for i, s in enumerate(e["seeds"])}

    out = copy.deepcopy(base)
    for algo, data in newer.items():
        if algo not in out:
            out[algo] = copy.deepcopy(data)
            continue
        if out[algo].get("steps") != data.get("steps"):
            raise ValueError(f"{algo}: the study's runs have {out[algo].get('steps')} steps, the new ones "
                             f"{data.get('steps')}: one design per study")
        for label, e in data["engines"].items():
            rows = {**by_seed(out[algo]["engines"].get(label) or {"seeds": []}), **by_seed(e)}
            seeds = sorted(rows)
            out[algo]["engines"][label] = {"seeds": seeds, **{m: [rows[s][m] for s in seeds] for m in PARITY_METRICS}}
    return out


def mde(sd: float, n: int, *, alpha: float, tests: int, power: float = stats.POWER_TARGET) -> float:
    """The smallest margin at which the rule, with n seeds per engine and seed sd `sd`, reports a true
    difference of that margin as different with probability >= power (bisection on the margin / sd)."""
    if sd == 0:
        return 0.0
    lo, hi = 0.1, 20.0
    for _ in range(18):
        mid = (lo + hi) / 2
        p = stats.design_power(1.0, n, mid, alpha=alpha, tests=tests, sims=4000)["different_margin"]
        lo, hi = (mid, hi) if p < power else (lo, mid)
    return hi * sd


def study(run_dirs: list[Path] | None = None, *, inputs: dict | None = None, window: int = 10,
          alpha: float = 0.05, margins: dict | None = None, max_seeds: int = 10, design_engines: int = 3) -> dict:
    """The power study from run directories, from a previous study's `inputs` (the committed data), or from
    both (the runs added to the inputs: merge_inputs)."""
    if inputs is None:
        inputs = extract_inputs(list(run_dirs or []), window)
    elif run_dirs:
        inputs = merge_inputs(inputs, extract_inputs(list(run_dirs), window))
    margins = {algo: margins_for(margins or DEFAULT_MARGINS, algo) for algo in inputs}
    out: dict = {"schema_version": STUDY_SCHEMA_VERSION, "window": window, "alpha": alpha, "margins": margins,
                 "design_engines": design_engines,
                 "power_target": stats.POWER_TARGET, "inputs": inputs, "algos": {}}
    for algo, data in inputs.items():
        engines = data["engines"]
        # the design's family: every pair of its engines x every metric (not the engines of these runs)
        tests = max(1, design_engines * (design_engines - 1) // 2) * len(margins[algo])
        per_metric = {}
        for metric, margin in margins[algo].items():
            spread = measure_spread(engines, metric)
            row: dict = {"margin": margin, **spread, "designs": {}}
            if spread.get("sd") is not None:
                for which in ("sd", "sd_upper80"):
                    sd = spread[which]
                    row["designs"][which] = {
                        str(n): {**stats.design_power(sd, n, margin, alpha=alpha, tests=tests, sims=8000),
                                 "mde": mde(sd, n, alpha=alpha, tests=tests)}
                        for n in range(2, max_seeds + 1)}
                rhos = list(spread["pair_correlation"].values())
                if rhos:  # the paired design at the measured mean same-seed correlation
                    rho = float(np.clip(np.mean(rhos), -0.9, 0.9))
                    row["paired_rho"] = rho
                    row["designs_paired"] = {str(n): {
                        f"{k}_{name}": v for name, delta in (("null", 0.0), ("margin", margin))
                        for k, v in stats.simulate_paired(delta, spread["sd"], rho, n, margin, alpha=alpha,
                                                          alpha_diff=alpha / tests, sims=8000).items()}
                        for n in range(2, max_seeds + 1)}
            per_metric[metric] = row
        injected = {}
        for label, e in engines.items():
            base = label.split("-")[0]
            if _is_clean(label) or base not in engines:
                continue
            res = {}
            for metric, margin in margins[algo].items():
                t = stats.equivalence(e.get(metric) or [], engines[base].get(metric) or [], margin, alpha=alpha,
                                      alpha_diff=alpha / tests, plan=False)
                res[metric] = {"diff": t["diff"], "diff_in_margins": t["diff"] / margin if margin else None,
                               "ci_tost": t["ci_tost"], "outcome": t["outcome"], "p_diff": t["p_diff"]}
            injected[f"{label}-vs-{base}"] = res
        out["algos"][algo] = {"engines": {k: len(v["seeds"]) for k, v in engines.items()}, "steps": data.get("steps"),
                              "difference_tests": tests, "metrics": per_metric, "injected": injected,
                              "modes": mode_split(engines, "final")}
    return out


def print_study(doc: dict, seeds: tuple[int, ...] = (3, 4, 5, 6, 8)) -> None:
    for algo, a in doc["algos"].items():
        print(f"[rl power] {algo}: engines {a['engines']}, {a['steps']} steps, {a['difference_tests']} difference "
              f"tests share alpha {doc['alpha']:g}")
        for metric, m in a["metrics"].items():
            if m.get("sd") is None:
                print(f"  {metric:12s} margin {m['margin']:g}: no spread measured")
                continue
            cells = []
            for n in seeds:
                d = (m["designs"].get("sd") or {}).get(str(n))
                if d:
                    cells.append(f"n={n}: power {d['different_margin']:.2f} eq|0 {d['equivalent_null']:.2f} "
                                 f"mde {d['mde']:.3g}")
            corr = ", ".join(f"{k} {v:+.2f}" for k, v in m["pair_correlation"].items())
            print(f"  {metric:12s} margin {m['margin']:g}  sd {m['sd']:.3g} (df {m['df']}, 80% upper "
                  f"{m['sd_upper80']:.3g})  same-seed corr [{corr}]")
            print("      " + " | ".join(cells))
            if m.get("designs_paired"):
                print(f"      paired (rho {m['paired_rho']:+.2f}): " + " | ".join(
                    f"n={n}: power {m['designs_paired'][str(n)]['different_margin']:.2f} eq|0 "
                    f"{m['designs_paired'][str(n)]['equivalent_null']:.2f}" for n in seeds
                    if str(n) in m["designs_paired"]))
        if a.get("modes"):
            m = a["modes"]
            print(f"  final is bimodal: split at {m['split']:.3f} (modes {m['lower_mean']:.3f} / {m['upper_mean']:.3f}); "
                  "upper mode per engine: " + ", ".join(f"{k} {e['upper']}/{e['n']}" for k, e in m["engines"].items())
                  + "; " + "; ".join(f"{k}: diff {v['diff']:+.2f} [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}], Fisher p "
                                      f"{v['p_fisher']:.3g}" for k, v in m["pairs"].items()))
        for name, res in a["injected"].items():
            print(f"  injected {name}: " + "; ".join(
                f"{k} {v['diff']:+.3g} ({v['diff_in_margins']:+.2f} margins, {v['outcome']})" for k, v in res.items()))


def write_study(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


