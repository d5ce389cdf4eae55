"""weight_update: after update_params(W), logprobs follow weight set W and not the other one.

The reference scores every completion of a case that names this check under
the case's weight set (by_mode[mode]) and, as well, under the other set
(other_weights[<other>][mode], written by harness.recorder.Recorder.run_score). A
backend whose logprobs match the other set is serving stale weights.
"""

from __future__ import annotations

from harness.checks.base import EACH_BACKEND_VS_REFERENCE, check, fmt_keys, subject, verdict
from harness.checks.catalog import GATE, OTHER_WEIGHTS
from harness.checks.compare_fns import compare_logprobs
from harness.checks.data import REFERENCE, RunData, Unavailable
from harness.checks.logprobs import Gate, Worst, truth
from harness.suite import Case
from harness.verdict import Verdict


def other_set(weights: str) -> str:
    return "B" if weights == "A" else "A"


def _missing_set(ctx: RunData, weight_set: str) -> str | None:
    """Why the run has no weight set `weight_set` (a model directory given without --model-b), or None.
    Without it nothing can say what stale weights would look like."""
    key = "model" if weight_set == "A" else "model_b"
    if ctx.has_manifest and ctx.manifest.has(key):
        given = getattr(ctx.manifest, key) is not None
    else:  # a bare `parity record` directory: the sessions list the sets each backend had
        sessions = [s for ss in ctx.sessions.values() for s in ss]
        given = not sessions or any(weight_set in s.models for s in sessions)
    if given:
        return None
    return (f"the run has no weight set {weight_set} (--model without --model-b): there is nothing to tell "
            f"stale weights from live ones by")


@check("weight_update", section="weights", units=EACH_BACKEND_VS_REFERENCE,
       metric=lambda case: f"{Gate.of(case, 'weight_update').metric}_vs_live_weights",
       tolerances={"logprob_atol": 1e-4, **GATE}, needs=[OTHER_WEIGHTS],
       summary="after update_params(W) logprobs match the reference under W and not under the other set (the "
               "reference scores weight_update cases under both: stale-weight detection)",
       measures="max \\|dlogp\\| vs the reference under the live set; `data` has the distance to the other set and "
                "the sets' separation",
       fails="logprobs matching the other set (\"STALE WEIGHTS\"), or neither")
def weight_update(ctx: RunData, case: Case, x: str) -> Verdict:
    check = "weight_update"
    gate = Gate.of(case, check)
    atol = gate.atol
    metric = f"{gate.metric}_vs_live_weights"
    live, stale = case.weights, other_set(case.weights)
    missing = _missing_set(ctx, stale)
    if missing:
        raise Unavailable("skipped", missing)
    gens = ctx.gens_of(x, case)
    scores = ctx.scores_of(REFERENCE, case, x)
    vs_live, vs_stale, sep = Worst(), Worst(), Worst()
    for key, rec in sorted(gens.items()):
        where = fmt_keys(key)
        s = scores.get(key)
        if s is None or list(s.completion_ids) != list(rec.completion_ids):
            vs_live.problems.append(f"{where}: no matching reference score")
            continue
        mode = rec.logprob_mode
        want = truth(s, mode, x)
        old = s.other_weights.get(stale, {}).get(mode)
        if old is None:
            raise Unavailable("error", f"the reference did not score case {case.id} under weight set {stale} "
                                       f"(its other_weights has no {stale} {mode}): re-record the reference score "
                                       f"phase (harness.recorder scores weight_update cases under both sets)")
        vs_live.add(where, compare_logprobs(name_0=x, lp_0=rec.completion_logprobs,
                                            name_1=f"reference under {live}", lp_1=want))
        vs_stale.add(where, compare_logprobs(name_0=x, lp_0=rec.completion_logprobs,
                                             name_1=f"reference under {stale}", lp_1=old))
        sep.add(where, compare_logprobs(name_0=f"reference under {live}", lp_0=want,
                                        name_1=f"reference under {stale}", lp_1=old))
    if vs_live.problems:
        return verdict(check, case.id, subject(x), metric=metric, value=float("inf"), threshold=atol,
                       passed=False, detail=vs_live.detail(gate), data={"problems": vs_live.problems})
    if not sep.per:
        raise Unavailable("error", f"{x} has no completions in case {case.id}")
    d_sep = sep.stat(gate)
    if d_sep <= 2 * atol:
        raise Unavailable("error", f"weight sets {live} and {stale} give the same logprobs on these tokens "
                                   f"({gate.label} of their difference {d_sep:.3g} <= 2 x atol {atol:g}): this "
                                   f"case cannot detect stale weights; use prompts where they differ")
    d_live, d_stale = vs_live.stat(gate), vs_stale.stat(gate)
    is_live = vs_live.judged(gate)
    is_stale = d_stale <= atol
    passed = is_live and not is_stale
    if passed:
        detail = (f"{x} follows weight set {live}: {gate.label} {d_live:.3g} vs reference under {live}, "
                  f"{d_stale:.3g} vs {stale} (sets differ by up to {sep.value:.3g} here); "
                  f"{gate.describe(d_live, vs_live.value)}")
    elif is_stale:
        detail = (f"STALE WEIGHTS: {x}'s logprobs match weight set {stale} ({gate.label} {d_stale:.3g}), not the "
                  f"live set {live} ({d_live:.3g}): update_params did not take effect")
    else:
        detail = (f"{x}'s logprobs match neither set: {d_live:.3g} vs {live}, {d_stale:.3g} vs {stale} "
                  f"(atol {atol:g}); worst vs {live}: {vs_live.desc}")
    return verdict(check, case.id, subject(x), metric=metric, value=d_live, threshold=atol, passed=passed,
                   detail=detail,
                   data={"live": live, "stale": stale, "max_abs_vs_live": vs_live.value,
                         "max_abs_vs_stale": vs_stale.value, "stat_vs_live": d_live, "stat_vs_stale": d_stale,
                         "quantile": gate.quantile, "separation": sep.value, "n_tokens": vs_live.n,
                         "quantiles_abs_dlogp": vs_live.data().get("quantiles_abs_dlogp")})
