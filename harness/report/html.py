"""index.html: one self-contained page a reviewer reads top-down.

Built from the loaded run (records, verdicts, manifest) and the summary; the
token streams and logprob differences come straight from the records, so a
reviewer can see *why* a check failed, not only that it did. No external
resource of any kind: CSS inline, plots inline SVG (harness/report/plots.py),
a Content-Security-Policy that forbids the page to load anything.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import jinja2
import numpy as np
from markupsafe import Markup

from harness.report import plots
from harness.report import rl as rl_run
from harness.report.data import REFERENCE, RunData, load_vocab, token_text
from harness.report.summary import group_verdict
from harness.rundir import generation_index, score_index
from harness.verdict import OUTCOMES

RANK = {"error": 0, "fail": 1, "pass": 2, "measured": 3, "skipped": 4}
LOG_TAIL_LINES = 40
CAUSE_CHECKS = ("backend_ran", "rl.run")  # checks that say why a backend did not run: never folded away
MAX_PROMPTS_PER_CASE = 24  # prompt/sample panels shown in full per case; the rest are listed (records/ has them)
MAX_CASES_IN_FULL = 40  # case sections with panels (failing cases first); the rest compact (verdicts, errors)
MAX_TABLE_ROWS = 1000  # rows of a long verdict table (failing checks, every verdict); the rest are counted


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["tojson_pretty"] = lambda x: json.dumps(x, indent=2, sort_keys=True, default=str)
    env.filters["ts"] = _ts
    return env


def _num(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return {"Infinity": "∞", "-Infinity": "−∞"}.get(x, x)
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return plots.fmt(float(x))


def _ts(x) -> str:
    if not x:
        return "–"
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(x)))


def _status_class(status: str) -> str:
    s = (status or "").lower()
    if any(w in s for w in ("mismatch", "differ", "unsupported", "missing", "error", "fail", "bug")):
        return "fail"
    if any(w in s for w in ("ok", "same", "equal", "mapped", "pass")):
        return "pass"
    return "note"


_LOG_NOISE = re.compile(r"^(Requirement already satisfied|Processing /|Collecting |Using cached |Downloading |"
                        r"Loading weights:|Loading safetensors|\s*$)")
_LOG_ERROR = re.compile(r"error|exception|traceback|failed|killed|timed out|abort", re.I)


def _log_tail(run_dir: Path, rel: str | None) -> tuple[str, str]:
    """(the last LOG_TAIL_LINES lines that are not install/progress noise, the last line that names an error)."""
    if not rel:
        return "", ""
    p = run_dir / rel
    try:
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"(log {rel} not found)", ""
    lines = [ln for ln in lines if not _LOG_NOISE.match(ln)]
    tail = lines[-LOG_TAIL_LINES:]
    cause = next((ln for ln in reversed(tail) if _LOG_ERROR.search(ln) and not ln.startswith("nox >")), "")
    return "\n".join(tail), cause.strip()


# ----------------------------------------------------------------------------- token streams
def _first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _dlogp(gen, ref_score) -> list[float | None]:
    """Backend's completion logprob minus the reference's teacher-forced logprob of the same token, in
    the backend's declared mode; None where either is missing."""
    n = len(gen.completion_ids)
    ref = _ref_mode(gen, ref_score)
    lp = gen.completion_logprobs
    if lp is None or ref is None:
        return [None] * n
    m = min(n, len(ref), len(lp))  # positions both have; None past them
    # -inf == -inf (a masked token in processed mode) is agreement
    out: list[float | None] = [None if a is None else 0.0 if a == b else a - b for a, b in zip(lp[:m], ref[:m])]
    return out + [None] * (n - m) if m < n else out


def _ref_mode(gen, ref_score) -> list[float] | None:
    """The reference's teacher-forced logprobs of gen's tokens in gen's declared mode (None if not recorded:
    never another mode in its place, which would show a difference that is not there)."""
    if ref_score is None:
        return None
    ref = ref_score.by_mode.get(gen.logprob_mode)
    if ref is None and gen.logprob_mode == ref_score.logprob_mode:
        ref = ref_score.logprobs
    return ref


def _ref_values(gen, ref_score) -> list[float | None]:
    ref = _ref_mode(gen, ref_score)
    if ref is None:
        return [None] * len(gen.completion_ids)
    return [ref[i] if i < len(ref) else None for i in range(len(gen.completion_ids))]


class _Index:
    """Records indexed by what the report looks up."""

    def __init__(self, data: RunData):
        self.gen = generation_index(data.generations)  # (backend, case, prompt, sample, variant) -> record
        self.by_case: dict[str, list] = defaultdict(list)
        for g in data.generations:
            self.by_case[g.key.case_id].append(g)
        # the reference's scores: (source, case, prompt, sample, variant) -> record
        self.ref_score = {k[1:]: s for k, s in score_index(data.scores).items() if k[0] == REFERENCE}


def _stream_row(label: str, backend: str, gen, ref_score, base_ids: list[int] | None, vocab, color: str,
                sampled: bool) -> dict:
    ids = list(gen.completion_ids)
    d = _dlogp(gen, ref_score)
    refv = _ref_values(gen, ref_score)
    div = None if base_ids is None else _first_divergence(base_ids, ids)
    lps = gen.completion_logprobs or [None] * len(ids)
    cells = []
    for i, t in enumerate(ids):
        cls = ""
        if div is not None and i >= div:
            cls = "div-first" if i == div else "div"
        cells.append({"id": t, "text": token_text(vocab, t), "lp": lps[i] if i < len(lps) else None,
                      "ref": refv[i], "d": d[i], "cls": cls})
    finite = [abs(x) for x in d if x is not None and math.isfinite(x)]
    nonfinite = sum(1 for x in d if x is not None and not math.isfinite(x))
    return {"label": label, "backend": backend, "color": color, "cells": cells, "divergence": div,
            "finish_reason": gen.finish_reason, "stop_reason": gen.stop_reason, "mode": gen.logprob_mode,
            "text": gen.text, "dlogp": d, "max_abs_d": (float("inf") if nonfinite else (max(finite) if finite else None)),
            "has_ref": _ref_mode(gen, ref_score) is not None, "sampled": sampled, "is_variant": gen.key.variant != "main"}


def _fold(verdicts: list, broken: list[str]) -> tuple[list, dict[str, list]]:
    """Split error verdicts into those to show one by one and, per backend that did not run cleanly, those
    that only follow from it (any error verdict involving it, except CAUSE_CHECKS, which say why)."""
    own, folded = [], {b: [] for b in broken}
    for v in verdicts:
        cause = next((b for b in v.backends if b in broken), None) if v.verdict == "error" else None
        if cause is not None and v.check not in CAUSE_CHECKS:
            folded[cause].append(v)
        else:
            own.append(v)
    return own, {b: vs for b, vs in folded.items() if vs}


def _case_ids(data: RunData, suite_cases: dict) -> list[str]:
    """Suite cases in suite order, then cases only the records or error records name."""
    ids = list(suite_cases)
    seen = set(ids)
    for g in data.generations:
        if g.key.case_id not in seen:
            ids.append(g.key.case_id)
            seen.add(g.key.case_id)
    error_cases = {e.key.case_id for e in data.errors if e.key}
    for v in data.verdicts:
        if v.case in seen or not v.case:
            continue
        if v.case in error_cases:
            ids.append(v.case)
            seen.add(v.case)
    for e in data.errors:
        if e.key and e.key.case_id not in seen:
            ids.append(e.key.case_id)
            seen.add(e.key.case_id)
    return ids


def _main_keys(gens: list) -> list[tuple[int, int]]:
    return sorted({(g.key.prompt_index, g.key.sample_index) for g in gens if g.key.variant == "main"})


def _case_views(data: RunData, idx: _Index, vocab: dict[int, str], colors: dict[str, str],
                broken: list[str]) -> list[dict]:
    """One view per case. The first MAX_CASES_IN_FULL cases by outcome (errors, then failures, then the
    rest, each in suite order) get their prompt/sample panels; the others are `compact`: verdicts and
    error records only (a 100k-record run has thousands of cases; the page would not open)."""
    suite_cases = {c.id: c for c in data.suite.cases} if data.suite is not None else {}
    ids = _case_ids(data, suite_cases)
    verdicts_of: dict[str, list] = defaultdict(list)
    for v in data.verdicts:
        verdicts_of[v.case].append(v)
    errors_of: dict[str, list] = defaultdict(list)
    for e in data.errors:
        if e.key:
            errors_of[e.key.case_id].append(e)

    views = []
    for cid in ids:
        case = suite_cases.get(cid)
        verdicts = sorted(verdicts_of.get(cid, []), key=lambda v: (RANK[v.verdict], v.check))
        shown, folded = _fold(verdicts, broken)
        bad = [v for v in shown if v.verdict in ("fail", "error")]
        good = [v for v in shown if v.verdict not in ("fail", "error")]
        errors = errors_of.get(cid, [])
        gens = idx.by_case.get(cid, [])
        sampled = bool(case and not case.sampling.greedy) or any(
            (g.native_params or {}).get("temperature", 0) not in (0, 0.0, None) for g in gens[:1])
        tol = _case_tolerance(case, verdicts)
        outcome = group_verdict([v.verdict for v in verdicts])
        real_errors = [e for e in errors if e.error_type != "Skipped"]
        if real_errors and outcome != "error":
            outcome = "error"
        if case is not None:
            sampling = case.sampling.model_dump(mode="json", exclude_defaults=True)
        else:  # no suite: the canonical spec as recorded, minus its defaults
            from harness.spec import SamplingSpec

            defaults = SamplingSpec().canonical()
            native = (gens[0].native_params or {}) if gens else {}
            sampling = {k: v for k, v in native.items() if k not in defaults or defaults[k] != v}
        views.append({
            "id": cid, "description": case.description if case else "", "hash": case.content_hash() if case else (
                gens[0].key.case_hash if gens else ""), "weights": case.weights if case else (
                gens[0].key.weights if gens else ""), "checks": list(case.checks) if case else [],
            "sampling": sampling, "sampled": sampled, "tolerance": tol, "verdicts": verdicts, "errors": errors,
            "shown": shown, "folded": folded, "bad": bad, "good": good,
            "n_pass": sum(1 for v in good if v.verdict == "pass"),
            "n_skipped": sum(1 for v in good if v.verdict == "skipped"),
            "n_measured": sum(1 for v in good if v.verdict == "measured"),
            "good_checks": _unique([v.check for v in good]),
            "outcome": outcome if (verdicts or real_errors) else "none", "prompts": [], "hidden": [],
            "repeats": case.repeats if case else None, "alone": case.alone if case else None,
            "compact": False, "panels": len(_main_keys(gens)),
        })
    order = sorted(range(len(views)), key=lambda i: (RANK.get(views[i]["outcome"], len(RANK)), i))
    full = set(order[:MAX_CASES_IN_FULL])
    for i, view in enumerate(views):
        if i in full:
            view["prompts"], view["hidden"] = _prompt_panels(data, idx, view, suite_cases.get(view["id"]), vocab,
                                                             colors)
        else:
            view["compact"] = True
    return views


def _unique(names: list[str]) -> list[str]:
    """jinja's `unique` filter: first occurrences, compared case-insensitively."""
    seen: set[str] = set()
    out = []
    for n in names:
        k = n.lower()
        if k not in seen:
            seen.add(k)
            out.append(n)
    return out


def _case_tolerance(case, verdicts: list) -> float | None:
    """The case's completion |dlogp| threshold as compare applied it (the run's tolerance profile
    included): the completion_logprobs verdict's, else the suite's."""
    tol = next((v.threshold for v in verdicts if v.check == "completion_logprobs" and v.threshold), None)
    if tol is None and case is not None:
        try:
            tol = case.tolerance("logprob_atol", "completion_logprobs")
        except KeyError:
            tol = None
    return tol


def _prompt_panels(data: RunData, idx: _Index, view: dict, case, vocab: dict[int, str], colors: dict[str, str]
                   ) -> tuple[list[dict], list[str]]:
    """A case's prompt/sample panels (token streams, Δ plot, per-token table), at most MAX_PROMPTS_PER_CASE
    (the interesting ones first); and the prompt/sample labels of those left out."""
    cid, tol, sampled = view["id"], view["tolerance"], view["sampled"]
    gens = idx.by_case.get(cid, [])
    keys = _main_keys(gens)
    # which panels to show is decided on what they would show (divergence, missing backends, Δ beyond the
    # tolerance): work out only that for every panel, and the panels themselves for those shown
    looks = []
    for pi, si in keys:
        base_backend = REFERENCE if (REFERENCE, cid, pi, si, "main") in idx.gen else next(
            (b for b in data.backends if (b, cid, pi, si, "main") in idx.gen), None)
        base = idx.gen.get((base_backend, cid, pi, si, "main"))
        missing, mismatch, over = [], False, False
        for b in data.backends:
            g = idx.gen.get((b, cid, pi, si, "main"))
            if g is None:
                missing.append(b)
                continue
            if b != base_backend and _first_divergence(list(base.completion_ids), list(g.completion_ids)) is not None:
                mismatch = True
            if tol is not None and not over:
                m = _max_abs_d(_dlogp(g, idx.ref_score.get((b, cid, pi, si, "main"))))
                over = m is not None and m > tol
        looks.append((mismatch or bool(missing) or over))
    hidden: list[str] = []
    keep = set(range(len(keys)))
    if len(keys) > MAX_PROMPTS_PER_CASE:  # keep the page readable: interesting panels first
        keep = {i for i, interesting in enumerate(looks) if interesting}
        keep = set(sorted(keep)[:MAX_PROMPTS_PER_CASE])
        keep |= set([i for i in range(len(keys)) if i not in keep][:MAX_PROMPTS_PER_CASE - len(keep)])
        hidden = [f"{pi}/{si}" for i, (pi, si) in enumerate(keys) if i not in keep]
    prompts = []
    for i, (pi, si) in enumerate(keys):
        if i not in keep:
            continue
        rows = []
        base_backend = REFERENCE if (REFERENCE, cid, pi, si, "main") in idx.gen else next(
            (b for b in data.backends if (b, cid, pi, si, "main") in idx.gen), None)
        base = idx.gen.get((base_backend, cid, pi, si, "main"))
        missing = []
        for b in data.backends:
            g = idx.gen.get((b, cid, pi, si, "main"))
            if g is None:
                missing.append(b)
                continue
            rs = idx.ref_score.get((b, cid, pi, si, "main"))
            row = _stream_row(b, b, g, rs, None if b == base_backend else list(base.completion_ids), vocab,
                              colors[b], sampled)
            rows.append(row)
        variants_same, variant_rows = [], []
        for b in data.backends:
            main = idx.gen.get((b, cid, pi, si, "main"))
            if main is None:
                continue
            for g in gens:
                k = g.key
                if g.backend != b or k.variant == "main" or k.prompt_index != pi or k.sample_index != si:
                    continue
                if list(g.completion_ids) == list(main.completion_ids):
                    variants_same.append(f"{b} {k.variant}")
                else:
                    rs = idx.ref_score.get((b, cid, pi, si, k.variant))
                    variant_rows.append(_stream_row(f"{b} ({k.variant})", b, g, rs, list(main.completion_ids),
                                                    vocab, colors[b], sampled))
        width = max((len(r["cells"]) for r in rows + variant_rows), default=0)
        first_div = min((r["divergence"] for r in rows if r["divergence"] is not None), default=None)
        plot_series = [(r["label"] + ("" if r["backend"] != REFERENCE else " (self)"), r["color"], r["dlogp"])
                       for r in rows if r["has_ref"]]
        plot = Markup(plots.logprob_diff_plot(plot_series, threshold=tol, divergence=first_div)) \
            if plot_series else None
        prompt_text = None
        if case is not None and pi < len(case.prompts):
            prompt_text = case.prompts[pi].text
        pids = list(base.prompt_ids) if base is not None else []
        prompt_ld = []
        ref_gen = idx.gen.get((REFERENCE, cid, pi, si, "main"))
        for r in rows:
            g = idx.gen.get((r["backend"], cid, pi, si, "main"))
            if r["backend"] == REFERENCE or ref_gen is None or not g.prompt_logprobs or not ref_gen.prompt_logprobs:
                continue
            diffs = [abs(a - b) for a, b in zip(g.prompt_logprobs, ref_gen.prompt_logprobs)
                     if a is not None and b is not None]
            prompt_ld.append((r["backend"], max(diffs) if diffs else None))
        prompts.append({
            "prompt_index": pi, "sample_index": si, "text": prompt_text, "ids": pids,
            "tokens": [token_text(vocab, t) for t in pids], "rows": rows, "variant_rows": variant_rows,
            "variants_same": variants_same, "width": width, "base": base_backend, "missing": missing,
            "plot": plot, "first_divergence": first_div, "prompt_logprob_diff": prompt_ld,
            "mismatch": any(r["divergence"] is not None for r in rows),
        })
    return prompts, hidden


def _max_abs_d(d: list[float | None]) -> float | None:
    """A stream row's max_abs_d: inf when a Δ is non-finite, None when there is none."""
    finite = [abs(x) for x in d if x is not None and math.isfinite(x)]
    if any(x is not None and not math.isfinite(x) for x in d):
        return float("inf")
    return max(finite) if finite else None


def _dlogp_series(data: RunData, idx: _Index, cases: list[dict]) -> list[tuple[str, list[float | None], float | None]]:
    """(backend, Δ per token, the case's tolerance) of every main-variant completion, in page order (case,
    prompt/sample, backend): what the statistics and histograms cover, whether or not its panel is shown."""
    out = []
    for c in cases:
        cid = c["id"]
        for pi, si in _main_keys(idx.by_case.get(cid, [])):
            for b in data.backends:
                g = idx.gen.get((b, cid, pi, si, "main"))
                if g is not None:
                    out.append((b, _dlogp(g, idx.ref_score.get((b, cid, pi, si, "main"))), c["tolerance"]))
    return out


# ----------------------------------------------------------------------------- aggregate views
def _dlogp_stats(series: list[tuple[str, list[float | None], float | None]], backends: list[str],
                colors: dict[str, str], tol_default: float | None):
    """Per backend over every token with a Δ: counts, max/mean/p95 of the finite |Δ| (numpy: the mean is its
    pairwise sum / n, p95 linear interpolation), signed mean, tokens over their case's tolerance."""
    per: dict[str, tuple[list, list]] = {}
    for b, ds, tol in series:
        d, t = per.setdefault(b, ([], []))
        kept = [x for x in ds if x is not None]
        d += kept
        t += [math.inf if tol is None or tol != tol else tol] * len(kept)
    stats, hists = [], []
    for b in backends:
        if not per.get(b, ([],))[0]:
            continue
        d = np.asarray(per[b][0], dtype=np.float64)
        tol = np.asarray(per[b][1], dtype=np.float64)
        absd = np.abs(d)
        finite = np.isfinite(d)
        fd, fa = d[finite], absd[finite]
        n = int(fa.size)
        stats.append({
            "backend": b, "color": colors[b], "tokens": int(d.size), "nonfinite": int(d.size - n),
            "max": float(fa.max()) if n else None,
            "mean": float(np.mean(fa)) if n else None,
            "p95": float(np.percentile(fa, 95.0)) if n else None,
            "mean_signed": float(np.mean(fd)) if n else None,
            "over_tol": int(np.count_nonzero(fa > tol[finite])),
        })
        title = f"{REFERENCE}: generate vs own score" if b == REFERENCE else f"{b}: |Δ logprob| vs reference"
        hists.append({"backend": b, "svg": Markup(plots.log_histogram(absd.tolist(), color=colors[b], title=title))})
    return stats, hists


def _pair_matrix(pairs: list[dict], backends: list[str]) -> dict:
    cell: dict[tuple[str, str], dict] = {}
    for p in pairs:
        bs = p["backends"]
        if len(bs) == 1:
            cell[(bs[0], bs[0])] = p
        elif len(bs) == 2:
            cell[(bs[0], bs[1])] = p
            cell[(bs[1], bs[0])] = p
    return {"backends": backends,
            "rows": [[cell.get((a, b)) for b in backends] for a in backends]}


def _extras(data: RunData, colors: dict[str, str], order: list[str], verdicts: list) -> dict:
    ex = data.extras
    out: dict = {"sampling_table": None, "selftest": None, "rl": None, "rl_algos": None, "bench": None}
    st = ex.get("sampling_table")
    if isinstance(st, dict):
        st = st.get("rows")
    if isinstance(st, list) and st:
        cols = ["canonical", "vllm_field", "vllm_default", "sglang_field", "sglang_default", "tunix_field",
                "conversion", "status", "reason"]
        out["sampling_table"] = {"cols": cols, "rows": [
            {**{c: r.get(c) for c in cols}, "cls": _status_class(str(r.get("status", "")))}
            for r in st if isinstance(r, dict)]}
    sel = ex.get("selftest")
    if isinstance(sel, dict) and sel.get("faults"):
        faults = [f for f in sel["faults"] if isinstance(f, dict)]
        checks = list(sel.get("checks") or [])
        for f in faults:
            for c in list(f.get("expected", [])) + list(f.get("detected", [])):
                if c not in checks:
                    checks.append(c)
        rows = []
        for f in faults:
            exp, det = set(f.get("expected", [])), set(f.get("detected", []))
            cells = []
            for c in checks:
                if c in exp and c in det:
                    cells.append(("caught", "pass"))
                elif c in exp:
                    cells.append(("MISSED", "fail"))
                elif c in det:
                    cells.append(("also", "note"))
                else:
                    cells.append(("", ""))
            rows.append({"name": f.get("name", "?"), "description": f.get("description", ""), "cells": cells,
                         "verdict": "pass" if exp <= det and (exp or det) else ("fail" if exp else "skipped")})
        out["selftest"] = {"checks": checks, "rows": rows, "note": sel.get("note", "")}
    curves = []
    for c in ex.get("rl", []):
        series = c.get("series") or {}
        if not isinstance(series, dict) or not series:
            continue
        ser = [(name, colors.get(name) or plots.color_for(name, order),
                [(float(x), float(y)) for x, y in pts]) for name, pts in series.items()]
        curves.append({"name": c.get("name"), "verdict": c.get("verdict"), "detail": c.get("detail", ""),
                       "svg": Markup(plots.line_chart(ser, title=str(c.get("name")),
                                                      x_label=str(c.get("x_label", "step")),
                                                      y_label=str(c.get("metric", "reward")))),
                       "final": [(n, pts[-1][1] if pts else None) for n, _, pts in ser]})
    if curves:
        out["rl"] = curves
    algos = rl_run.algo_views(data, verdicts, colors)
    for a in algos:
        a["charts"] = [Markup(svg) for svg in a["charts"]]
    out["rl_algos"] = algos or None
    bench = ex.get("bench")
    if isinstance(bench, dict) and bench.get("figures"):
        figs = []
        for f in bench["figures"]:
            vals = f.get("values") or {}
            bars = [(b, colors.get(b) or plots.color_for(b, order), float(v) if v is not None else None)
                    for b, v in vals.items()]
            figs.append({"title": f.get("title", ""), "unit": f.get("unit", ""), "note": f.get("note", ""),
                         "lower_is_better": f.get("lower_is_better"), "values": vals,
                         "svg": Markup(plots.bar_chart(bars, title=str(f.get("title", "")),
                                                       unit=str(f.get("unit", ""))))})
        out["bench"] = {"figures": figs, "device": bench.get("device"), "note": bench.get("note", "")}
    return out


def render_html(data: RunData, summary: dict) -> str:
    order = list(data.backends)
    colors = {b: plots.color_for(b, order) for b in order}
    model_path = (summary["provenance"].get("model") or {}).get("path")
    vocab = load_vocab(model_path)
    idx = _Index(data)
    backends = summary["backends"]
    broken = [b for b in order if backends.get(b, {}).get("status", "ok") != "ok"]
    cases = _case_views(data, idx, vocab, colors, broken)
    tol_default = None
    stats, hists = _dlogp_stats(_dlogp_series(data, idx, cases), order, colors, tol_default)
    verdicts = sorted(data.verdicts, key=lambda v: (RANK[v.verdict], v.check, v.case))
    case_ids = {c["id"] for c in cases}
    logs = {}
    for b, st in backends.items():
        if st["status"] != "ok" and data.kind == "rl":  # each failed training run has its own log
            logs[b] = [(what, rel, *_log_tail(data.run_dir, rel)) for what, rel in rl_run.failed_logs(data, b)]
        elif st["status"] != "ok":
            logs[b] = [(p, ph.get("log"), *_log_tail(data.run_dir, ph.get("log")))
                       for p, ph in st["phases"].items() if ph.get("exit_code") != 0]
            details = [e.detail for e in data.errors if e.backend == b and e.detail]
            if details and not logs[b]:
                logs[b] = [("record", None, details[-1], "")]
    artefacts = [p for p in ("summary.json", "junit.xml", "checks.json", "run.json")
                 if (data.run_dir / p).exists() or p in ("summary.json", "junit.xml")]
    dirs = ["rl/", "records/rl/"] if data.kind == "rl" else ["records/", "logs/"]
    # Failing checks: parity failures first, then errors; errors that only follow from a backend that did
    # not run are folded into one row per backend (a crashed engine would otherwise bury everything else).
    fails = [v for v in verdicts if v.verdict == "fail"]
    errors, consequential = _fold([v for v in verdicts if v.verdict == "error"], broken)
    failing_rows = fails + errors
    ctx = {
        "s": summary, "colors": colors, "order": order, "broken": broken,
        "failing": fails + errors + [v for vs in consequential.values() for v in vs],
        "failing_rows": failing_rows[:MAX_TABLE_ROWS], "failing_more": max(0, len(failing_rows) - MAX_TABLE_ROWS),
        "consequential": consequential, "max_rows": MAX_TABLE_ROWS, "max_cases": MAX_CASES_IN_FULL,
        "verdicts": verdicts, "case_ids": case_ids, "cases": cases,
        "matrix": _pair_matrix(summary["pairs"], order), "stats": stats, "hists": hists,
        "extras": _extras(data, colors, order, verdicts), "logs": logs, "vocab": bool(vocab),
        "artefacts": artefacts, "dirs": dirs, "by_check": _by_check(verdicts), "kind": data.kind,
        "rl_algos": [c["algo"] for c in data.extras.get("rl_curves", [])],
    }
    return _env().get_template("report.html.j2").render(**ctx)


def _by_check(verdicts) -> list[dict]:
    """Per check name: how many verdicts of each outcome, and the check's worst outcome; worst first."""
    tally: dict[str, Counter] = defaultdict(Counter)
    for v in verdicts:
        tally[v.check][v.verdict] += 1
    out = []
    for check, row in tally.items():
        c = {o: int(row.get(o, 0)) for o in OUTCOMES}
        out.append({"check": check, **c, "verdict": group_verdict([o for o, n in c.items() if n])})
    out.sort(key=lambda r: (RANK[r["verdict"]], r["check"]))
    return out
