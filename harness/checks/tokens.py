"""greedy_tokens: greedy streams equal up to the first divergence, vLLM's tie rule at a divergence."""

from __future__ import annotations

from harness.checks.base import ALL_PAIRS, NotApplicable, check, fmt_keys, verdict
from harness.checks.compare_fns import compare_token_streams
from harness.checks.data import REFERENCE, RunData, Unavailable
from harness.suite import Case
from harness.verdict import Verdict


def tops_for(ctx: RunData, case: Case, backend: str, key, rec) -> tuple[list | None, str]:
    """A side's top-k per position: its own completion_top (vLLM's rule), else the reference's
    raw top-k at the same prefix (its score of this side's tokens)."""
    if rec.completion_top:
        return rec.completion_top, f"{backend}'s own top-k"
    if ctx.has_reference:
        try:
            s = ctx.scores_of(REFERENCE, case, backend).get(key)
        except Unavailable:
            s = None
        if s is not None and s.top and list(s.completion_ids) == list(rec.completion_ids):
            return s.top, "the reference's top-k at the same prefix"
    return None, "none"


def ref_gap(ctx: RunData, case: Case, a: str, key, pos: int, tok_a: int, tok_b: int) -> float | None:
    """The reference's raw logprob gap between the two tokens at the divergence (from its top-k of a's prefix)."""
    try:
        s = ctx.scores_of(REFERENCE, case, a).get(key)
    except Unavailable:
        return None
    if s is None or not s.top or pos >= len(s.top):
        return None
    top = s.top[pos]
    if str(tok_a) in top and str(tok_b) in top:
        return abs(top[str(tok_a)] - top[str(tok_b)])
    return None


def _greedy_only(case: Case) -> NotApplicable | None:
    if case.sampling.greedy:
        return None
    return NotApplicable(f"case is not greedy (temperature {case.sampling.temperature:g}): token streams of "
                         f"sampling engines are compared by distribution, not token by token")


@check("greedy_tokens", section="tokens", units=ALL_PAIRS, metric="prompts_diverged", precondition=_greedy_only,
       tolerances={"top_k_rescue": 5},
       summary="greedy token streams equal the reference's (and each other's) up to the first divergence; at a "
               "divergence each side's token must be in the other's top-k (vLLM's rule: tie noise, not a defect); "
               "a stream that is a proper prefix of the other fails",
       measures="prompts whose streams diverge without the tie excuse (top-k: `top_k_rescue`)",
       fails="vLLM's rule: at the first differing token each side's token must be in the other's top-k (its own "
             "`completion_top`, else the reference's top-k at the same prefix); stricter than vLLM: a stream that "
             "is a proper prefix of the other fails")
def greedy_tokens(ctx: RunData, case: Case, a: str, b: str) -> Verdict:
    k = int(case.tolerance("top_k_rescue", "greedy_tokens"))
    ga, gb = ctx.gens_of(a, case), ctx.gens_of(b, case)
    bad, lines, per = 0, [], []
    for key in sorted(set(ga) | set(gb)):
        ra, rb = ga.get(key), gb.get(key)
        if ra is None or rb is None:
            bad += 1
            lines.append(f"{fmt_keys(key)}: no record from {a if ra is None else b}")
            continue
        ta, src_a = tops_for(ctx, case, a, key, ra)
        tb, src_b = tops_for(ctx, case, b, key, rb)
        c = compare_token_streams(name_0=a, ids_0=list(ra.completion_ids), top_0=ta,
                                  name_1=b, ids_1=list(rb.completion_ids), top_1=tb, k=k)
        entry = {"prompt": key[0], "sample": key[1]} | c.as_dict() | {"top_source_0": src_a, "top_source_1": src_b}
        if c.position is not None and c.outcome in ("tie", "diverged"):
            entry["reference_gap"] = ref_gap(ctx, case, a, key, c.position, c.tok_0, c.tok_1)
        per.append(entry)
        if not c.ok:
            bad += 1
        if c.outcome != "equal":
            lines.append(f"{fmt_keys(key)}: {c.describe()}")
    equal = sum(1 for e in per if e["outcome"] == "equal")
    detail = "; ".join(lines) if lines else f"{a} and {b}: identical greedy tokens for all {equal} prompts"
    return verdict("greedy_tokens", case.id, [a, b], metric="prompts_diverged", value=bad, threshold=0,
                   passed=bad == 0, detail=detail, data={"per_prompt": per, "top_k": k})
