"""sampling_distribution, sampling_effects: does a sampling field *do* what its canonical meaning says,
on each engine; plus the run-level sampling table and the mapping verdicts.

sampling_distribution (per backend, the reference included as the method's own control): the first
completion token of every main-variant sample is a draw from the engine's next-token distribution
(an unseeded case's repeat variants are pooled with it: fresh draws); per prompt, harness.sampling.stats.goodness_of_fit tests the draws against the exact processed
distribution the reference computed from its float64 logits (ScoreRecord.distribution.processed,
harness/sampling/expect.py). False-alarm rate: the case's `alpha` (catalog default 1e-3) per verdict,
Bonferroni-split over the case's prompts. Power: at least POWER_TARGET against any alternative at
total-variation distance MIN_TV on the test's bins; a test with less power than that is an error
(underpowered), never a pass. Where an engine declares its own order of the filters and it differs for
the spec (sglang-jax: top_p combined with top_k or min_p), the draws are also tested against that
engine's semantics (`distribution.processed_by_engine`), so that the verdict says whether a failure is that
convention difference or a sampler defect. For an unseeded case recorded with `repeats: 2+`, a second
verdict (metric repeat_independence_p) tests that the repeat's draws are independent of the first
call's: matches of the same (prompt, sample) beyond sum_t p_t^2 reject (a frozen PRNG key).

sampling_effects (per backend, greedy cases): every completion token must be the reference's argmax
under the spec given the same prefix (teacher-forced; a logit margin within logprob_atol is a tie),
and the completion must end exactly where the spec says (first stop/EOS token, not before
min_tokens, else max_tokens). The case must exercise every effect field it sets (the reference's
argmax without the field differs somewhere, or the termination rule bites); a field it does not
exercise is an error. A token equal to the argmax *without* a field is reported as "as if <field>
were not set".

mapping_verdicts (run level, every case, called by harness/compare.py): a `sampling_mapping` fail
verdict for each (case, engine) whose spec sets a field that engine drops or ignores
(harness.sampling.mapping.issues). write_sampling_table writes sampling_table.json.
"""

from __future__ import annotations

import json
import zlib

import os
import sys
from pathlib import Path

import numpy as np

from harness.backends import registry
from harness.checks.base import WITH_REFERENCE_EACH_BACKEND, Unit, Units, check, verdict
from harness.checks.catalog import DISTRIBUTION, EFFECTS, SEQUENCE
from harness.checks.data import REFERENCE, RunData, Unavailable
from harness.records import FirstStepDistribution
from harness.sampling import mapping
from harness.sampling.table import acting
from harness.sampling.stats import (
    bonferroni,
    pit_sequence_test,
    pit_values,
    fmt_p,
    goodness_of_fit,
    repeat_independence,
    required_n,
)
from harness.suite import Case
from harness.verdict import Verdict

MIN_TV = 0.1  # the minimal effect the distribution test is sized for (total-variation distance)
POWER_TARGET = 0.95


# ============================================================================ helpers
def _dists(ctx: RunData, case: Case, source: str) -> dict[int, FirstStepDistribution]:
    """prompt index -> the reference's exact first-step distribution (from its score of `source`'s completions)."""
    scores = ctx.scores_of(REFERENCE, case, source)
    out = {}
    for (p, s), rec in scores.items():
        if rec.distribution is not None:
            out[p] = rec.distribution
    if not out:
        raise Unavailable("error", f"the reference's score of {source}'s completions of case {case.id} carries no "
                                   "exact distribution (its distribution field): re-run the reference's score phase "
                                   "with this harness version (harness/sampling/expect.py)")
    return out


def _probs(logp: list[float]) -> np.ndarray:
    p = np.exp(np.asarray(logp, dtype=np.float64))
    return p / p.sum()


def _first_tokens(gens: dict, prompt: int) -> list[int]:
    return [int(g.completion_ids[0]) for (p, _), g in sorted(gens.items()) if p == prompt and g.completion_ids]


# ============================================================================ sampling_distribution
def _distribution_units(ctx: RunData, case: Case) -> list[Unit]:
    """Per backend the draws' test and, for an unseeded case with repeats, the repeat-independence test."""
    repeats = case.sampling.seed is None and case.repeats >= 2
    return [u for x in ctx.backends for u in [Unit((x, False), [x])]
            + ([Unit((x, True), [x], metric="repeat_independence_p")] if repeats else [])] if ctx.has_reference else []


@check("sampling_distribution", section="sampling",
       units=Units("backend vs reference's exact processed distribution", _distribution_units),
       requires="the reference (it computes the exact distribution)", metric="p_value", tolerances={"alpha": 1e-3},
       needs=[DISTRIBUTION], scored_by_engines=False,
       prerequisite=(lambda c: not c.sampling.greedy, "check sampling_distribution needs temperature > 0 (a greedy "
                                                      "case has no distribution)"),
       summary="empirical next-token distribution matches the exact processed distribution from the reference logits "
               "(chi-square, stated false-alarm rate)",
       measures="chi-square p-value (and, with unseeded repeats, the repeat-independence p-value) vs `alpha` per "
                "prompt; power >= 0.95 against binned TV 0.1 or the verdict is an error",
       fails="temperature/top-k/top-p/min-p meaning something else, a near-uniform sampler (sglang-jax's seeded "
             "sampler, compat `seeded_sampler_exact`), a frozen PRNG key (`unseeded_key_advances`), sglang-jax's top-p "
             "convention")
def sampling_distribution(ctx: RunData, case: Case, x: str, independence: bool) -> Verdict:
    if independence:
        return _repeat_independence(ctx, case, x)
    check, metric = "sampling_distribution", "p_value"
    spec = case.sampling
    alpha = case.tolerance("alpha", check)
    m = len(case.prompts)
    a_each = bonferroni(alpha, m)
    # engines whose own filter order gives another distribution for this spec: the draws are tested against it too
    conventions = {e: c for e, c in mapping.conventions().items() if c.applies(spec)}

    # unseeded repeats are fresh draws (the independence verdict tests that they are): pooled; seeded repeats
    # are copies by design: main only
    pooled = ["main"] + ([f"repeat-{r}" for r in range(1, case.repeats)] if spec.seed is None else [])

    variants = [ctx.gens_of(x, case, v) for v in pooled]
    dists = _dists(ctx, case, x)
    per_prompt, fails, weak = [], [], []
    worst_p = 1.0
    for i in range(m):
        if i not in dists:
            raise Unavailable("error", f"no exact distribution for prompt {i} (the reference's score of {x}'s "
                                       f"sample 0 of prompt {i} is missing)")
        d = dists[i]
        draws = [t for gens in variants for t in _first_tokens(gens, i)]
        if not draws:
            raise Unavailable("error", f"{x} returned no tokens for prompt {i}")
        p = _probs(d.processed)
        border = set(d.borderline)
        g = goodness_of_fit(draws, p, alpha=a_each, tv=MIN_TV, borderline=border)
        row = {"prompt": i, **g.as_dict(), "alpha": a_each}
        for e in conventions:
            p_alt = _probs(d.processed_by_engine[e])
            alt = goodness_of_fit(draws, p_alt, alpha=a_each, tv=MIN_TV, borderline=border)
            row[f"{e}_semantics"] = {"p_value": alt.p_value, "out_of_support": alt.out_of_support,
                                     "tv_between_semantics": 0.5 * float(np.abs(p - p_alt).sum())}
        if g.p_value < a_each:  # which alternative explains the draws (the diagnosis), best fit first
            alts = {f"{c.label}'s {c.what} convention": d.processed_by_engine[e] for e, c in conventions.items()}
            alts.update({f"{f} not applied": q for f, q in d.processed_without.items()})
            fits = []
            for name, logq in alts.items():
                q = _probs(logq)
                ga = goodness_of_fit(draws, q, alpha=a_each, tv=MIN_TV, borderline=border)
                if ga.p_value >= a_each:
                    fits.append({"explanation": name, "p_value": ga.p_value,
                                 "tv_from_canonical": 0.5 * float(np.abs(p - q).sum())})
            row["explained_by"] = sorted(fits, key=lambda f: -f["p_value"])
        if g.power < POWER_TARGET:
            row["required_n"] = required_n(p, MIN_TV, a_each, POWER_TARGET)
            weak.append(row)
        worst_p = min(worst_p, g.p_value)
        if g.p_value < a_each:
            fails.append(row)
        per_prompt.append(row)
    data = {"alpha": alpha, "alpha_per_prompt": a_each, "min_effect_tv": MIN_TV, "power_target": POWER_TARGET,
            "prompts": per_prompt, "variants": pooled, "spec": case.sampling.canonical()}
    parts = []
    for r in per_prompt:
        s = (f"prompt {r['prompt']}: N={r['n']} chi2 {r['statistic']:.1f} on {r['df']} df, p={fmt_p(r['p_value'])}"
             f", binned TV {r['binned_tv']:.3f}, power {r['power']:.3f} vs TV {MIN_TV}")
        if r["out_of_support"]:
            s += f", {r['out_of_support']} draws of masked tokens (e.g. {list(r['out_of_support_tokens'])[:5]})"
        if r["borderline"]:
            s += f", {r['borderline']} borderline draws set aside"
        for e, c in conventions.items():
            sj = r[f"{e}_semantics"]
            s += (f"; vs {c.label}'s {c.what} semantics (TV {sj['tv_between_semantics']:.3f} from canonical): "
                  f"p={fmt_p(sj['p_value'])}")
        parts.append(s)
    detail = f"alpha {alpha:g} ({a_each:g} per prompt); " + "; ".join(parts)
    if fails:
        why = []
        for r in fails:
            fits = r.get("explained_by") or []
            if fits and fits[0]["explanation"].endswith(" convention"):
                why.append(f"prompt {r['prompt']} follows {fits[0]['explanation']}, not the canonical one")
            elif fits:
                why.append(f"prompt {r['prompt']}'s draws fit the distribution with {fits[0]['explanation']} "
                           f"(p={fmt_p(fits[0]['p_value'])})")
            if len(fits) > 1:
                why[-1] += " (also consistent: " + ", ".join(
                    f"{f['explanation']} p={fmt_p(f['p_value'])}" for f in fits[1:]) + ")"
        if why:
            detail = "; ".join(why) + " — " + detail
        v = verdict(check, case.id, [x], metric=metric, value=worst_p, threshold=a_each, passed=False,
                    detail=detail, data=data)
        return v
    if weak:
        needs = ", ".join(f"prompt {r['prompt']}: N={r['n']} gives power {r['power']:.3f}, needs N>={r['required_n']}"
                          for r in weak)
        v = verdict(check, case.id, [x], metric=metric, value=worst_p, threshold=a_each, passed=True,
                    detail=f"underpowered for TV {MIN_TV} at power {POWER_TARGET} ({needs}); " + detail, data=data)
        v.verdict = "error"
        return v
    return verdict(check, case.id, [x], metric=metric, value=worst_p, threshold=a_each, passed=True,
                   detail=detail, data=data)


def _repeat_independence(ctx: RunData, case: Case, x: str) -> Verdict:
    """An unseeded case's repeats draw afresh: matches with the first call's draws beyond chance reject."""
    check, m, alpha = "sampling_distribution", len(case.prompts), case.tolerance("alpha", "sampling_distribution")
    gens = ctx.gens_of(x, case)
    dists = _dists(ctx, case, x)
    rows, worst = [], 1.0
    tests = (case.repeats - 1) * m
    a_each2 = bonferroni(alpha, tests)
    for r in range(1, case.repeats):
        rep = ctx.gens_of(x, case, f"repeat-{r}")
        for i in range(m):
            pairs = [(int(gens[k].completion_ids[0]), int(rep[k].completion_ids[0])) for k in sorted(gens)
                     if k[0] == i and k in rep and gens[k].completion_ids and rep[k].completion_ids]
            p = _probs(dists[i].processed)
            emp = np.bincount([a for a, _ in pairs], minlength=p.size) / max(1, len(pairs))
            q = max(float((p * p).sum()), float((emp * emp).sum()))  # the larger: conservative
            res = repeat_independence(pairs, q)
            rows.append({"repeat": r, "prompt": i, **res.as_dict()})
            worst = min(worst, res.p_value)
    detail = "; ".join(f"repeat-{r['repeat']} prompt {r['prompt']}: {r['matches']}/{r['pairs']} draws equal to "
                       f"the first call's (expected {r['expected']:.1f} if independent), p={fmt_p(r['p_value'])}"
                       for r in rows)
    return verdict(check, case.id, [x], metric="repeat_independence_p", value=worst, threshold=a_each2,
                   passed=worst >= a_each2, detail=f"unseeded repeats, alpha {alpha:g}: " + detail,
                   data={"alpha": alpha, "alpha_per_test": a_each2, "tests": rows})


# ============================================================================ sampling_sequence
@check("sampling_sequence", section="sampling",
       units=WITH_REFERENCE_EACH_BACKEND, metric="p_value", tolerances={"alpha": 1e-3},
       needs=[SEQUENCE], scored_by_engines=False,
       unit_doc="backend vs reference's exact processed distribution at every sampled position",
       prerequisite=(lambda c: not c.sampling.greedy, "check sampling_sequence needs temperature > 0 (a greedy case "
                                                      "has no distribution)"),
       summary="whole sampled sequences: the randomised PIT of every sampled token under the exact processed "
               "distribution at its position is i.i.d. Uniform(0,1) (uniformity and lag-1 independence, "
               "Fisher-combined; stated false-alarm rate)",
       measures="p-value of \"the PIT values are i.i.d. Uniform(0,1)\": Fisher's combination of a "
                "Kolmogorov-Smirnov uniformity test and a lag-1 serial test (docs/checks.md) vs `alpha`",
       fails="a sampler reusing its random key at every position (degenerate loops such as 3, 11, 6, 3, 11, 6), "
             "any sampler whose later draws are not draws of the distribution given their prefix")
def sampling_sequence(ctx: RunData, case: Case, x: str) -> Verdict:
    """Whole sampled sequences, position by position (sampling_distribution sees first tokens only): the
    randomised PIT of every sampled token under the reference's exact processed distribution at its own
    position (teacher-forced on the sampled prefix, ScoreRecord.sequence,
    harness/sampling/expect.py) must look i.i.d. Uniform(0,1): harness.sampling.stats.pit_sequence_test
    over the case's main completions, all prompts and samples."""
    check_name, metric = "sampling_sequence", "p_value"
    alpha = case.tolerance("alpha", check_name)
    gens = ctx.gens_of(x, case)  # a crashed or missing generate phase is an error, not an empty pass
    scores = ctx.scores_of(REFERENCE, case, x)
    missing = sorted(set(gens) - set(scores))
    if missing:
        raise Unavailable("error", f"the reference did not score {x}'s completions {missing[:4]} of case {case.id}")
    # V of the randomised PIT: a fixed stream per (case, backend), so a re-compare gives the same verdict
    rng = np.random.default_rng(zlib.crc32(f"{case.id}:{x}".encode()))
    seqs, rows = [], []
    for (pi, si), rec in sorted(scores.items()):
        if rec.sequence is None:
            raise Unavailable("error", f"the reference's score of {x}'s completions of case {case.id} has no "
                                       "per-position PIT (its sequence field): re-run the reference's score phase "
                                       "with this harness version (harness/sampling/expect.py)")
        u = pit_values(rec.sequence.above, rec.sequence.p, rng)
        seqs.append(u)
        rows.append({"prompt": pi, "sample": si, "tokens": len(u), "mean_u": float(u.mean()) if u.size else None})
    r = pit_sequence_test(seqs)  # against the null simulated once per shape (fixed seed): deterministic
    if r.pairs < 10:
        raise Unavailable("error", f"{x}: {r.pairs} consecutive sampled positions in case {case.id}: too few "
                                   "for the independence test (needs >= 10)")
    detail = (f"{r.n} sampled tokens in {len(seqs)} sequences, PIT mean {r.mean_u:.3f} (0.5 expected): "
              f"uniformity KS D={r.ks_statistic:.3f} p={fmt_p(r.ks_p)}; lag-1 serial z={r.serial_z:+.2f} over "
              f"{r.pairs} pairs p={fmt_p(r.serial_p)}; Fisher {r.fisher:.1f}, p={fmt_p(r.p_value)} against "
              f"{r.null_draws} simulated null data sets of these shapes, vs alpha {alpha:g}")
    if r.p_value < alpha and r.serial_p < alpha ** 0.5 and r.serial_z > 0:
        detail = "consecutive draws depend on each other (random noise reused across positions?) — " + detail
    elif r.p_value < alpha:
        detail = "sampled tokens are not draws of the processed distribution at their positions — " + detail
    return verdict(check_name, case.id, [x], metric=metric, value=r.p_value, threshold=alpha,
                   passed=r.p_value >= alpha, detail=detail, data={**r.as_dict(), "alpha": alpha, "sequences": rows})


# ============================================================================ sampling_effects
def _exercised(ctx: RunData, case: Case) -> tuple[dict[str, bool], dict[str, str]]:
    """Which of the case's effect fields the reference's own completions exercise, and how."""
    spec = case.sampling
    gens = ctx.gens_of(REFERENCE, case)
    scores = ctx.scores_of(REFERENCE, case, REFERENCE)
    active = [f for f in mapping.EFFECT_NEUTRAL if getattr(spec, f) != mapping.EFFECT_NEUTRAL[f]]
    done = {f: False for f in active}
    how: dict[str, str] = {}
    for key, g in sorted(gens.items()):
        s = scores.get(key)
        if s is None or s.effects is None:
            raise Unavailable("error", f"the reference's score of its own completion {key} carries no greedy "
                                       "expectation (its effects field): re-run its score phase with this harness "
                                       "version")
        ids = list(g.completion_ids)
        eos = set(s.effects.eos)
        am = s.effects.argmax
        for f in active:
            if f in acting("logits", "length"):  # the argmax without the field differs somewhere
                wo = s.effects.without.get(f, [])
                for i, (a, b) in enumerate(zip(am, wo)):
                    if a != b:
                        done[f] = True
                        how.setdefault(f, f"prompt {key[0]} position {i}: argmax {a}, without {f} {b}")
                        break
            elif f == "stop_token_ids" and ids and ids[-1] in spec.stop_token_ids and g.finish_reason == "stop":
                done[f] = True
                how.setdefault(f, f"prompt {key[0]} stopped on {ids[-1]} after {len(ids)} tokens")
            elif f == "ignore_eos" and any(t in eos for t in ids):
                done[f] = True
                how.setdefault(f, f"prompt {key[0]} ran past EOS at position {[t in eos for t in ids].index(True)}")
    return done, how


@check("sampling_effects", section="sampling",
       units=WITH_REFERENCE_EACH_BACKEND, requires="the reference (it computes the expected tokens)",
       metric="problems", tolerances={"logprob_atol": 1e-4}, needs=[EFFECTS],
       scored_by_engines=False, unit_doc="backend vs reference (greedy, teacher-forced)",
       prerequisite=(lambda c: c.sampling.greedy, "check sampling_effects needs temperature 0 (its expected tokens "
                                                  "are the reference's argmax)"),
       summary="deterministic effect of stop_token_ids, ignore_eos, max_tokens, min_tokens, penalties and logit_bias "
               "equals the expectation computed from the reference",
       measures="tokens that are not the reference's argmax under the spec (a logit margin within `logprob_atol` is a "
                "tie), wrong stopping",
       fails="stop_token_ids, ignore_eos, min_tokens, penalties, logit_bias ignored or mis-applied")
def sampling_effects(ctx: RunData, case: Case, x: str) -> Verdict:
    check, metric = "sampling_effects", "problems"
    spec = case.sampling
    tie = case.tolerance("logprob_atol", check)
    exercised, how = _exercised(ctx, case)
    gens = ctx.gens_of(x, case)
    scores = ctx.scores_of(REFERENCE, case, x)
    problems: list[str] = []
    blamed: dict[str, int] = {}
    lengths = []
    for key, g in sorted(gens.items()):
        s = scores.get(key)
        if s is None or s.effects is None:
            raise Unavailable("error", f"no greedy expectation for {x}'s completion {key} (the reference's "
                                       "score phase did not add its effects)")
        ids = list(g.completion_ids)
        lengths.append(len(ids))
        eos = set(s.effects.eos)
        am, margin = s.effects.argmax, s.effects.margin
        for i, tok in enumerate(ids):
            if tok == am[i] or margin[i] <= tie:
                continue
            as_if = [f for f, v in s.effects.without.items() if v[i] == tok]
            for f in as_if:
                blamed[f] = blamed.get(f, 0) + 1
            problems.append(f"prompt {key[0]} position {i}: token {tok}, expected {am[i]} (logit margin "
                            f"{margin[i]:.3g})" + (f", as if {', '.join(as_if)} were not set" if as_if else ""))
            break  # later positions are teacher-forced on this prefix, but one finding per stream is enough
        stops = set(spec.stop_token_ids) | (set() if spec.ignore_eos else eos)
        inner = [i for i, t in enumerate(ids[:-1]) if t in stops]
        if inner:
            problems.append(f"prompt {key[0]}: continued past stop/EOS token {ids[inner[0]]} at position "
                            f"{inner[0]}")
        elif ids and ids[-1] in stops:
            if len(ids) <= spec.min_tokens:
                problems.append(f"prompt {key[0]}: stopped on {ids[-1]} after {len(ids)} tokens, before "
                                f"min_tokens {spec.min_tokens}")
            if g.finish_reason != "stop":
                problems.append(f"prompt {key[0]}: ends with stop token {ids[-1]} but finish reason "
                                f"{g.finish_reason!r}")
        elif len(ids) != spec.max_tokens:
            problems.append(f"prompt {key[0]}: ended after {len(ids)} of max_tokens {spec.max_tokens} tokens "
                            f"without a stop token (finish {g.finish_reason!r})")
        elif g.finish_reason != "length":
            problems.append(f"prompt {key[0]}: {len(ids)} = max_tokens tokens but finish reason "
                            f"{g.finish_reason!r}")
    missing = [f for f, ok in exercised.items() if not ok]
    data = {"problems": problems, "exercised": how, "not_exercised": missing, "as_if_not_set": blamed,
            "tie_margin": tie, "lengths": lengths, "spec": mapping.set_fields(spec)}
    fields = ", ".join(f"{f}={getattr(spec, f)!r}" for f in exercised) or "max_tokens only"
    if problems:
        lead = ""
        if blamed:
            lead = "no effect of " + ", ".join(sorted(blamed)) + " — "
        return verdict(check, case.id, [x], metric=metric, value=len(problems), threshold=0, passed=False,
                       detail=lead + "; ".join(problems[:6]) + (f" (+{len(problems) - 6} more)"
                                                                  if len(problems) > 6 else ""), data=data)
    if missing:
        v = verdict(check, case.id, [x], metric=metric, value=0, threshold=0, passed=True,
                    detail=f"suite configuration: the case does not exercise {', '.join(missing)} (the reference's "
                           "completions are the same without it): it cannot show that the field works", data=data)
        v.verdict = "error"
        return v
    return verdict(check, case.id, [x], metric=metric, value=0, threshold=0, passed=True,
                   detail=f"{fields}: every token is the reference's argmax under the spec and every completion "
                          f"ends where the spec says ({len(lengths)} completions, lengths {lengths}); exercised: "
                          + "; ".join(f"{f}: {h}" for f, h in how.items()), data=data)


# ============================================================================ run level: mapping verdicts + table
def _engine_facts(ctx: RunData, engine: str) -> tuple[str | None, bool | None, dict | None]:
    """(engine version, sglang-jax deterministic mode, compat workaround states) from the engine's
    generate session."""
    s = ctx.session(engine, "generate")
    if s is None:
        return None, None, None
    # the engine's own distribution (a served backend: its engine's; an external server: whichever it reports)
    b = registry.BACKENDS.get(engine)
    pkgs = [registry.get(b.engine).package] if b else [x.package for x in registry.BACKENDS.values()]
    version = next((s.versions[k] for p in pkgs if p for k in (p, p.replace("-", "_")) if s.versions.get(k)), None)
    det = None
    kw = (s.config or {}).get("engine_kwargs")
    if isinstance(kw, dict) and "enable_deterministic_sampling" in kw:
        det = bool(kw["enable_deterministic_sampling"])
    compat = (s.config or {}).get("compat")
    workarounds = compat.get("workarounds") if isinstance(compat, dict) else None
    return version, det, workarounds


def case_issues(ctx: RunData) -> list[dict]:
    out = []
    facts = {e: _engine_facts(ctx, e) for e in ctx.engines}
    for case in ctx.suite.cases:
        for e in ctx.engines:
            version, det, workarounds = facts[e]
            kind = registry.get(e).engine if e in registry.BACKENDS else e  # a served engine: its engine's mapping
            for i in mapping.issues(case.sampling, kind, deterministic=det, version=version, workarounds=workarounds):
                out.append({"case": case.id, **i.as_dict(), "engine": e})
    return out


def mapping_verdicts(ctx: RunData) -> list[Verdict]:
    """A fail verdict per (case, engine) whose spec sets a field the engine drops or ignores."""
    by: dict[tuple[str, str], list[dict]] = {}
    for i in case_issues(ctx):
        if i["severity"] == "fail":
            by.setdefault((i["case"], i["engine"]), []).append(i)
    out = []
    for (cid, e), items in by.items():
        out.append(Verdict(check="sampling_mapping", backends=[e], case=cid, metric="fields_not_honoured",
                           value=float(len(items)), threshold=0.0, verdict="fail",
                           detail="; ".join(f"{i['field']}: {i['reason']}" for i in items),
                           data={"issues": items}))
    return out


def sampling_table(ctx: RunData | None = None) -> dict:
    from harness.sampling.introspect import load_snapshots
    from harness.sampling.table import coverage_summary, table_rows

    snaps = load_snapshots()
    rows = table_rows(snaps)
    doc: dict = {"rows": rows, "coverage": coverage_summary(snaps),
                 "design": {"alpha_default": 1e-3, "min_effect_tv": MIN_TV, "power_target": POWER_TARGET},
                 "snapshots": {e: {"version": d["version"], "class": d["class"]} for e, d in snaps.items()}}
    if ctx is not None:
        issues = case_issues(ctx)
        doc["case_issues"] = issues
        for i in issues:  # visible in the report's table section too
            rows.append({"canonical": f"{i['field']} (case {i['case']})",
                         "vllm_field": None, "vllm_default": None, "sglang_field": None, "sglang_default": None,
                         "tunix_field": None, "conversion": f"this run, {i['engine']}",
                         "status": i["status"], "reason": i["reason"]})
        mismatch = {}
        for e in ctx.engines:
            version, _, _ = _engine_facts(ctx, e)
            snap = snaps.get(e)
            if version and snap and version != snap["version"]:
                mismatch[e] = f"the run's {e} is {version}, the table's snapshot {snap['version']}: run " \
                              f"`python -m harness.sampling.introspect --check` in that venv"
        doc["version_mismatch"] = mismatch
    return doc


def write_sampling_table(run_dir: Path, ctx: RunData | None = None) -> Path | None:
    """run_dir/sampling_table.json (the report's 'Sampling-parameter mapping' section). Never fatal:
    a problem here is printed and the compare result stands."""
    try:
        doc = sampling_table(ctx)
        path = Path(run_dir) / "sampling_table.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str, allow_nan=True) + "\n")
        os.replace(tmp, path)
        return path
    except Exception as e:  # pragma: no cover - reported
        print(f"warning: sampling_table.json not written: {type(e).__name__}: {e}", file=sys.stderr)
        return None


__all__ = ["sampling_distribution", "sampling_effects", "sampling_sequence", "mapping_verdicts", "write_sampling_table",
           "sampling_table", "case_issues", "MIN_TV", "POWER_TARGET"]

