"""mismatch: trainer-vs-rollout mismatch metrics of each engine against the reference, per case.

The engine is the rollout; the reference, scoring the engine's own tokens in
the engine's declared mode, is the trainer (a trainer recomputing logprobs
of rollout tokens does exactly that). All metrics go into Verdict.data; the
verdict is gated on k3 and on the fraction of importance ratios outside
[0.9, 1.1].
"""

from __future__ import annotations

import math

from harness.checks.base import ENGINE_VS_REFERENCE, check, fmt_keys, verdict
from harness.checks.compare_fns import mismatch_metrics
from harness.checks.data import REFERENCE, RunData, Unavailable
from harness.checks.logprobs import truth
from harness.suite import Case
from harness.verdict import Verdict


@check("mismatch", section="trainer",
       units=ENGINE_VS_REFERENCE, metric="k3", tolerances={"k3_max": 1e-6, "is_outside_max": 0.0},
       summary="trainer-vs-rollout mismatch metrics of each engine against the reference, the way verl and tunix "
               "define them (max/mean |dlogp|, k1, k3, chi2, Pearson of probs, prob diffs, IS ratios outside "
               "[0.9, 1.1], PPL ratio); gated on k3 and on the IS fraction",
       measures="k3, then the fraction of IS ratios outside [0.9, 1.1]", fails="any systematic logprob error")
def mismatch(ctx: RunData, case: Case, x: str) -> Verdict:
    check = "mismatch"
    k3_max = case.tolerance("k3_max", check)
    is_max = case.tolerance("is_outside_max", check)
    gens = ctx.gens_of(x, case)
    scores = ctx.scores_of(REFERENCE, case, x)
    rollout, trainer, problems, modes = [], [], [], set()
    for key, rec in sorted(gens.items()):
        s = scores.get(key)
        if s is None or list(s.completion_ids) != list(rec.completion_ids):
            problems.append(f"{fmt_keys(key)}: no matching reference score")
            continue
        if rec.completion_logprobs is None or len(rec.completion_logprobs) != len(rec.completion_ids) \
                or any(v is None for v in rec.completion_logprobs):
            problems.append(f"{fmt_keys(key)}: {x}'s logprobs missing or not one per token")
            continue
        modes.add(rec.logprob_mode)
        rollout.append(list(rec.completion_logprobs))
        trainer.append(list(truth(s, rec.logprob_mode, x)))
    if problems:
        return verdict(check, case.id, [x, REFERENCE], metric="k3", value=math.inf, threshold=k3_max,
                       passed=False, detail="; ".join(problems[:4]), data={"problems": problems})
    if not rollout:
        raise Unavailable("error", f"{x} has no completions in case {case.id}")
    m = mismatch_metrics(rollout_name=x, rollout=rollout, trainer_name=f"reference ({'/'.join(sorted(modes))})",
                         trainer=trainer)
    m["mode"] = sorted(modes)
    gates = [("k3", m["k3"], k3_max), ("is_outside_frac", m["is_outside_frac"], is_max)]
    failed = [(n, v, t) for n, v, t in gates if not v <= t]
    name, value, thr = failed[0] if failed else gates[0]
    summary = (f"k3 {m['k3']:.3g} (max {k3_max:g}), IS outside [0.9, 1.1] {m['is_outside_frac']:.3g} "
               f"(max {is_max:g}); k1 {m['k1']:.3g}, max |dlogp| {m['max_abs_dlogp']:.3g}, "
               f"mean |dlogp| {m['mean_abs_dlogp']:.3g}, Pearson(p) "
               f"{'n/a' if m['pearson_probs'] is None else format(m['pearson_probs'], '.6f')}, "
               f"PPL ratio {m['ppl_ratio']:.6f} over {m['n_tokens']} tokens")
    if failed:
        summary = f"{', '.join(n for n, _, _ in failed)} over threshold: " + summary
    return verdict(check, case.id, [x, REFERENCE], metric=name, value=value, threshold=thr,
                   passed=not failed, detail=summary, data=m)
