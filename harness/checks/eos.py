"""eos_policy: a completion that stops on EOS or a stop token includes it, in ids and logprobs.

The harness's convention (harness.spec): the token that ends a completion is
kept (vLLM's behaviour; tunix found that stripping EOS causes "30+ nat"
sampler-trainer logp differences). sglang-jax drops special tokens from
output_ids by default, which this check catches.
"""

from __future__ import annotations

from harness.checks.base import EACH_BACKEND_AND_REFERENCE, check, fmt_keys, verdict
from harness.checks.data import REFERENCE, TUNIX, RunData, Unavailable
from harness.suite import Case
from harness.verdict import Verdict


def stop_ids(ctx: RunData, case: Case) -> tuple[set[int], str]:
    eos, source = ctx.eos_ids()
    stops = set(case.sampling.stop_token_ids) | (set() if case.sampling.ignore_eos else eos)
    if not stops:
        raise Unavailable("error", f"cannot tell which token is EOS ({source}) and the case sets no stop_token_ids")
    return stops, source


def completion_problems(rec, stops: set[int], max_tokens: int) -> list[str]:
    """What is wrong with one completion's ending, by itself."""
    ids, lp, out = list(rec.completion_ids), rec.completion_logprobs, []
    if lp is not None and len(lp) != len(ids):
        out.append(f"{len(ids)} tokens but {len(lp)} logprobs")
    inside = [i for i, t in enumerate(ids[:-1]) if t in stops]
    if inside:
        out.append(f"stop token {ids[inside[0]]} at position {inside[0]} inside the completion: it did not stop")
    if rec.finish_reason == "stop":
        if not ids:
            out.append("finish reason 'stop' with no tokens: the stop token was dropped")
        elif ids[-1] not in stops:
            out.append(f"finish reason 'stop' but the last token {ids[-1]} is not EOS/stop {sorted(stops)}: "
                       f"the stop token was dropped")
    elif rec.finish_reason == "length":
        if len(ids) != max_tokens:
            out.append(f"finish reason 'length' after {len(ids)} tokens, max_tokens is {max_tokens}")
        if ids and ids[-1] in stops:
            out.append(f"ends with stop token {ids[-1]} but finish reason is 'length'")
    else:
        out.append(f"finish reason {rec.finish_reason!r}")
    return out


@check("eos_policy", section="eos", units=EACH_BACKEND_AND_REFERENCE, metric="violations",
       summary="a completion that stops on EOS or a stop token includes it in tokens and logprobs, with finish "
               "reason 'stop'; 'length' means max_tokens; no stop token inside; on identical greedy streams the "
               "finish reasons equal the reference's",
       measures="violations",
       fails="'stop' without a trailing EOS/stop token (dropped by skip_special_tokens), len(logprobs) != len(ids), "
             "'length' with fewer than max_tokens, a stop token inside, a stream ending where the reference's "
             "identical stream went on")
def eos_policy(ctx: RunData, case: Case, x: str) -> Verdict:
    """Per backend: every completion (all variants) that finishes 'stop' ends with an EOS/stop token
    counted in its ids and logprobs; 'length' means max_tokens; no stop token inside. For greedy
    cases, against the reference: identical streams have identical finish reasons, and a stream
    that is a proper prefix of the other's is a dropped or extra stop token."""
    stops, source = stop_ids(ctx, case)
    problems, n = [], 0
    for variant, recs in sorted((v, r) for v, r in ctx.variants_of(x, case).items() if v != TUNIX):
        for key, rec in sorted(recs.items()):
            n += 1
            problems += [f"{variant} {fmt_keys(key)}: {p}"
                         for p in completion_problems(rec, stops, case.sampling.max_tokens)]
    compared = 0
    if x != REFERENCE and ctx.has_reference and case.sampling.greedy:
        mine, ref = ctx.gens_of(x, case), ctx.gens_of(REFERENCE, case)
        for key in sorted(set(mine) & set(ref)):
            a, b = list(mine[key].completion_ids), list(ref[key].completion_ids)
            n_common = min(len(a), len(b))
            if a[:n_common] != b[:n_common]:
                continue  # diverged: greedy_tokens judges that
            compared += 1
            if len(a) != len(b):
                longer, shorter = (x, REFERENCE) if len(a) > len(b) else (REFERENCE, x)
                nxt = (a if len(a) > len(b) else b)[n_common]
                problems.append(f"{fmt_keys(key)}: {shorter} ended after {n_common} tokens "
                                f"({(mine if shorter == x else ref)[key].finish_reason!r}) where {longer} "
                                f"went on with token {nxt}{' (a stop token)' if nxt in stops else ''}")
            elif mine[key].finish_reason != ref[key].finish_reason:
                problems.append(f"{fmt_keys(key)}: finish reason {x} {mine[key].finish_reason!r} vs reference "
                                f"{ref[key].finish_reason!r} on identical tokens")
    finishes = sorted({r.finish_reason or "None" for v, recs in ctx.variants_of(x, case).items() if v != TUNIX
                       for r in recs.values()})
    detail = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "") or (
        f"{n} completions end consistently (finish reasons {finishes}; stop ids {sorted(stops)} from {source})"
        + (f"; finish reasons equal the reference's on {compared} identical greedy streams" if compared else ""))
    who = [x] if x == REFERENCE or not ctx.has_reference else [x, REFERENCE]
    return verdict("eos_policy", case.id, who, metric="violations",
                   value=len(problems), threshold=0, passed=not problems, detail=detail,
                   data={"stop_ids": sorted(stops), "stop_ids_source": source, "problems": problems,
                         "completions": n, "compared_with_reference": compared})
