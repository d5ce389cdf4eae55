"""seed_determinism, batch_invariance, n_samples: what a backend returns across repeats, batch
shapes and samples of one request."""

from __future__ import annotations

import math

from harness.checks.base import EACH_BACKEND, NotApplicable, check, fmt_keys, verdict
from harness.checks.compare_fns import compare_logprobs, compare_token_streams
from harness.checks.data import REFERENCE, RunData, Unavailable
from harness.sampling.stats import bonferroni, coincidence_p_value, fmt_p
from harness.suite import Case
from harness.verdict import Verdict


def _needs_seed(case: Case) -> str | None:
    if not case.sampling.greedy and case.sampling.seed is None:
        return (f"case samples (T={case.sampling.temperature:g}) without a seed: repeated or re-batched "
                f"outputs may legitimately differ")
    return None


def _compare_runs(a_name: str, a, b_name: str, b, atol: float, k: int | None) -> tuple[bool, str, dict]:
    """Two generations of the same request: tokens (exact, or vLLM's tie rule when k is given),
    finish reason, then logprobs within atol. Returns (ok, what differed, data)."""
    c = compare_token_streams(name_0=a_name, ids_0=list(a.completion_ids), top_0=a.completion_top if k else None,
                              name_1=b_name, ids_1=list(b.completion_ids), top_1=b.completion_top if k else None,
                              k=k or 0)
    data = {"tokens": c.outcome, "position": c.position}
    if c.outcome == "tie":
        return True, f"{c.describe()} (tie noise)", data
    if c.outcome != "equal":
        return False, c.describe(), data
    if a.finish_reason != b.finish_reason:
        return False, f"finish reason {a_name} {a.finish_reason!r} vs {b_name} {b.finish_reason!r}", data
    if a.completion_logprobs is None and b.completion_logprobs is None:
        return True, "", data
    lc = compare_logprobs(name_0=a_name, lp_0=a.completion_logprobs, name_1=b_name, lp_1=b.completion_logprobs)
    data["max_abs_dlogp"] = None if lc.problem else lc.max_abs
    if not lc.within(atol):
        return False, lc.describe(), data
    return True, "", data


def _chance_repeated(ctx: RunData, case: Case, x: str, main: dict) -> float | None:
    """The chance that fresh draws (a seed ignored) would equal every main completion anyway: the product
    of their probabilities under the reference's exact sampling distribution, per repeat. A differing
    repeat is a defect whatever the distribution, so this never fails a run; it says how much a pass
    proves (near 1 on a peaked model: little). None without the reference's processed scores."""
    if case.sampling.greedy or not ctx.has_reference:
        return None
    try:
        scores = ctx.scores_of(REFERENCE, case, x)
    except Unavailable:
        return None
    logp = 0.0
    for key in main:
        s = scores.get(key)
        if s is None or "processed" not in s.by_mode:
            return None
        logp += sum(s.by_mode["processed"])
    return math.exp(logp * (case.repeats - 1))


def _repeated_and_seeded(case: Case) -> NotApplicable | None:
    if case.repeats < 2:
        return NotApplicable("suite configuration: seed_determinism needs `repeats: 2` or more (no repeat variant "
                             "was recorded)", "error")
    return NotApplicable(why) if (why := _needs_seed(case)) else None


@check("seed_determinism", section="determinism",
       units=EACH_BACKEND, metric="completions_differing", precondition=_repeated_and_seeded,
       tolerances={"logprob_atol": 1e-4},
       prerequisite=(lambda c: c.repeats >= 2, "check seed_determinism needs repeats >= 2 (it compares repeats)"),
       summary="the same seed gives the same tokens, finish reasons and logprobs (within logprob_atol) on a repeat "
               "(per backend; needs repeats >= 2)",
       measures="repeat completions that differ from the main run (tokens, finish reason, logprobs); "
                "`data.chance_all_repeated_if_seed_ignored` says how likely fresh draws would have repeated them "
                "anyway",
       fails="seed ignored (sglang-jax's frozen PRNG key, compat `unseeded_key_advances` in docs/sglang_jax.md), "
             "nondeterministic kernels")
def seed_determinism(ctx: RunData, case: Case, x: str) -> Verdict:
    """Repeat variants of a seeded (or greedy) case equal the main run: same tokens, finish reasons,
    logprobs within tolerance."""
    check, metric = "seed_determinism", "completions_differing"
    atol = case.tolerance("logprob_atol", check)
    variants = ctx.variants_of(x, case)
    main = ctx.gens_of(x, case)
    bad, lines, worst = 0, [], 0.0
    for r in range(1, case.repeats):
        name = f"repeat-{r}"
        rep = ctx.gens_of(x, case, name)
        for key in sorted(set(main) | set(rep)):
            if key not in main or key not in rep:
                bad += 1
                lines.append(f"{fmt_keys(key)}: missing from {'main' if key not in main else name}")
                continue
            ok, what, d = _compare_runs("main", main[key], name, rep[key], atol, None)
            worst = max(worst, d.get("max_abs_dlogp") or 0.0)
            if not ok:
                bad += 1
                lines.append(f"{fmt_keys(key)}: {what}")
    seed = "greedy" if case.sampling.greedy else f"seed {case.sampling.seed}"
    chance = _chance_repeated(ctx, case, x, main)
    power = (f"; an engine ignoring the seed would have repeated every one by chance with probability "
             f"{chance:.3g}" if chance is not None else "")
    detail = "; ".join(lines) or (f"{seed}: {case.repeats - 1} repeat(s) identical to the main run for "
                                  f"{len(main)} completions (max |dlogp| {worst:.3g}){power}")
    return verdict(check, case.id, [x], metric=metric, value=bad, threshold=0, passed=bad == 0, detail=detail,
                   data={"repeats": case.repeats, "max_abs_dlogp": worst, "variants": sorted(variants),
                         "problems": lines, "chance_all_repeated_if_seed_ignored": chance})


def _alone_and_seeded(case: Case) -> NotApplicable | None:
    if not case.alone:
        return NotApplicable("suite configuration: batch_invariance needs `alone: true` (no alone-i variant was "
                             "recorded)", "error")
    return NotApplicable(why) if (why := _needs_seed(case)) else None


@check("batch_invariance", section="determinism",
       units=EACH_BACKEND, metric="completions_differing", precondition=_alone_and_seeded,
       tolerances={"logprob_atol": 1e-4, "top_k_rescue": 5},
       prerequisite=(lambda c: c.alone, "check batch_invariance needs alone: true (it compares each prompt alone with "
                                        "the batch)"),
       summary="a prompt alone gives the same tokens (a divergence only as vLLM-rule tie noise) and completion and "
               "prompt logprobs within tolerance as inside the batch (needs alone: true)",
       measures="completions alone that differ from the batched ones (tokens, finish reason, completion and prompt "
                "logprobs)",
       fails="padding/batch-position effects, dp \"messed up\" logprobs, a batch-only prefill defect")
def batch_invariance(ctx: RunData, case: Case, x: str) -> Verdict:
    """Each prompt run alone (variant alone-i) gives what it gave inside the batch: same tokens
    (a divergence passes only as vLLM-rule tie noise, noted), same finish reason, completion and prompt
    logprobs within tolerance."""
    check, metric = "batch_invariance", "completions_differing"
    atol = case.tolerance("logprob_atol", check)
    k = int(case.tolerance("top_k_rescue", check))
    main = ctx.gens_of(x, case)
    bad, lines, worst, ties = 0, [], 0.0, 0
    for i in range(len(case.prompts)):
        alone = ctx.gens_of(x, case, f"alone-{i}")
        keys = sorted(kk for kk in set(main) | set(alone) if kk[0] == i)
        if not keys:
            raise Unavailable("error", f"{x} has no record of prompt {i}")
        for key in keys:
            if key not in main or key not in alone:
                bad += 1
                lines.append(f"{fmt_keys(key)}: missing from {'batch' if key not in main else 'alone'}")
                continue
            ok, what, d = _compare_runs("in batch", main[key], "alone", alone[key], atol, k)
            worst = max(worst, d.get("max_abs_dlogp") or 0.0)
            ties += d["tokens"] == "tie"
            # prompt logprobs too: a batch-only defect in the prefill shows there first
            pa, pb = main[key].prompt_logprobs, alone[key].prompt_logprobs
            if pa is not None or pb is not None:
                if pa is None or pb is None or len(pa) != len(pb) \
                        or [v is None for v in pa] != [v is None for v in pb]:
                    ok, what = False, ((what + "; ") if what else "") + "prompt logprobs missing or misaligned"
                else:
                    dp = max((abs(u - v) for u, v in zip(pa, pb) if u is not None), default=0.0)
                    worst = max(worst, dp)
                    if dp > atol:
                        ok = False
                        what = ((what + "; ") if what else "") + (f"prompt logprobs differ by {dp:.3g} "
                                                                  f"(atol {atol:g})")
            if not ok:
                bad += 1
            if what:
                lines.append(f"{fmt_keys(key)}: {what}")
    detail = "; ".join(lines) or (f"{len(case.prompts)} prompts alone equal to the batch "
                                  f"(max |dlogp| {worst:.3g}, atol {atol:g})")
    return verdict(check, case.id, [x], metric=metric, value=bad, threshold=0, passed=bad == 0, detail=detail,
                   data={"max_abs_dlogp": worst, "tie_divergences": ties, "problems": lines})


@check("n_samples", section="determinism", units=EACH_BACKEND, metric="problems", tolerances={"alpha": 1e-3},
       summary="n > 1 returns n samples per prompt, indices 0..n-1 grouped by prompt in order, and no coincidence "
               "between them that is improbable (p < alpha) under the reference's exact sampling distribution",
       measures="problems: indices not 0..n-1, order, and coincidences improbable under the exact distribution: equal "
                "samples fail only when p < `alpha` (Bonferroni over prompts; see below)",
       fails="sglang-jax's n=2 identical copies, dropped or reordered samples")
def n_samples(ctx: RunData, case: Case, x: str) -> Verdict:
    """n samples per prompt, sample indices 0..n-1, recorded grouped by prompt in order, and no more
    coincidences between them than chance allows: equal samples fail only when their probability
    under the reference's exact sampling distribution (its processed-mode score of the backend's
    tokens) makes the coincidence improbable at the case's `alpha`, Bonferroni-split over prompts
    (harness.sampling.stats.coincidence_p_value). Two equal samples of a peaked model pass."""
    check, metric = "n_samples", "problems"
    n = case.sampling.n
    alpha = case.tolerance("alpha", check)
    a_each = bonferroni(alpha, len(case.prompts))
    main = ctx.gens_of(x, case)
    problems, tests = [], []
    scores = None
    for p in range(len(case.prompts)):
        got = sorted(s for (pp, s) in main if pp == p)
        if got != list(range(n)):
            problems.append(f"prompt {p}: sample indices {got}, expected 0..{n - 1}")
        streams = [tuple(main[(p, s)].completion_ids) for s in got]
        if len(set(streams)) == len(streams):
            continue
        if not ctx.has_reference:
            raise Unavailable("error", f"prompt {p}: samples {got} are not all distinct, and without the "
                                       "reference there is no exact distribution to tell chance from a "
                                       "duplication defect")
        if scores is None:
            scores = ctx.scores_of(REFERENCE, case, x)
        logp = []
        for s in got:
            sc = scores.get((p, s))
            if sc is None or "processed" not in sc.by_mode:
                raise Unavailable("error", f"no reference score (processed mode) of {x}'s {fmt_keys((p, s))}: "
                                           "re-run the reference's score phase")
            logp.append(float(sum(sc.by_mode["processed"])))
        res = coincidence_p_value(streams, logp)
        groups = [{**g, "samples": [got[i] for i in g["members"]]} for g in res.groups]
        tests.append({"prompt": p, "p_value": res.p_value, "groups": groups})
        if res.p_value < a_each:
            what = ", ".join(f"samples {g['samples']} (P={math.exp(g['logp']):.3g} each)" for g in groups)
            problems.append(f"prompt {p}: identical {what}: p={fmt_p(res.p_value)} < {a_each:g} that "
                            f"independent draws coincide so (n > 1 must draw independently)")
    extra = sorted({pp for (pp, _) in main} - set(range(len(case.prompts))))
    if extra:
        problems.append(f"samples for prompt indices {extra}, which the case does not have")
    order = [(r.key.prompt_index, r.key.sample_index) for r in ctx.order_of(x, case) if r.key.variant == "main"]
    if order != sorted(order):
        problems.append(f"samples not grouped by prompt in order: recorded as {order}")
    chance = "; ".join(f"prompt {t['prompt']}: identical samples "
                       + ", ".join(str(g["samples"]) for g in t["groups"])
                       + f" by chance (p={fmt_p(t['p_value'])} >= {a_each:g})"
                       for t in tests if t["p_value"] >= a_each)
    detail = "; ".join(problems) or (f"{n} sample(s) for each of {len(case.prompts)} prompts, grouped in order, "
                                     + (chance if chance else "pairwise distinct"))
    return verdict(check, case.id, [x], metric=metric, value=len(problems), threshold=0, passed=not problems,
                   detail=detail, data={"n": n, "problems": problems, "alpha": alpha, "alpha_per_prompt": a_each,
                                        "coincidences": tests})
