"""prompt_ids and prompt_logprobs: what each backend was given, and how it scored the prompt."""

from __future__ import annotations

from harness.checks.base import (EACH_BACKEND_VS_REFERENCE, REFERENCE_PAIRS_ELSE_ENGINE_PAIRS, check, fmt_keys,
                                 subject, verdict)
from harness.checks.catalog import GATE
from harness.checks.compare_fns import compare_prompt_logprobs
from harness.checks.logprobs import Gate, Worst
from harness.checks.data import REFERENCE, TUNIX, RunData, Unavailable
from harness.suite import Case
from harness.verdict import Verdict


def _prompts_by_index(recs_by_variant: dict) -> dict[int, set[tuple[int, ...]]]:
    out: dict[int, set[tuple[int, ...]]] = {}
    for recs in recs_by_variant.values():
        for (p, _), r in recs.items():
            out.setdefault(p, set()).add(tuple(r.prompt_ids))
    return out


@check("prompt_ids", section="prompt", units=REFERENCE_PAIRS_ELSE_ENGINE_PAIRS, metric="prompts_differing",
       summary="every backend was given the same prompt token ids (each engine tokenizes in its own venv), in every "
               "variant, and id prompts arrive unchanged; per engine vs the reference (engine pairs without one)",
       measures="prompts whose ids differ", fails="another tokenization in an engine's venv; an id prompt changed")
def prompt_ids(ctx: RunData, case: Case, a: str, b: str) -> Verdict:
    """Every backend tokenized (or was given) the same prompt ids, in every variant and sample,
    and id prompts of the suite arrive unchanged."""
    pa = _prompts_by_index(ctx.variants_of(a, case))
    pb = _prompts_by_index(ctx.variants_of(b, case))
    problems = []
    for i, prompt in enumerate(case.prompts):
        for name, got in ((a, pa), (b, pb)):
            if len(got.get(i, ())) > 1:
                problems.append(f"prompt {i}: {name}'s records disagree among themselves on its ids")
        ids_a, ids_b = pa.get(i), pb.get(i)
        if not ids_a or not ids_b:
            problems.append(f"prompt {i}: no record from {a if not ids_a else b}")
            continue
        xa, xb = sorted(ids_a)[0], sorted(ids_b)[0]
        if xa != xb:
            j = next((k for k, (u, v) in enumerate(zip(xa, xb)) if u != v), min(len(xa), len(xb)))
            problems.append(f"prompt {i}: {a} has {len(xa)} ids, {b} has {len(xb)}; first difference at "
                            f"position {j}: {list(xa[j:j + 3])} vs {list(xb[j:j + 3])}")
        if prompt.ids is not None and tuple(prompt.ids) not in (xa, xb):
            problems.append(f"prompt {i}: the suite gives ids {list(prompt.ids)}, recorded {list(xa)}")
    extra = sorted((set(pa) | set(pb)) - set(range(len(case.prompts))))
    if extra:
        problems.append(f"records for prompt indices {extra}, which the case does not have")
    detail = "; ".join(problems) or f"{a} and {b}: identical ids for all {len(case.prompts)} prompts"
    return verdict("prompt_ids", case.id, [a, b], metric="prompts_differing", value=len(problems), threshold=0,
                   passed=not problems, detail=detail,
                   data={"prompt_lengths": [len(sorted(pa.get(i, {()}))[0]) for i in range(len(case.prompts))],
                         "problems": problems})


def _gate(case: Case) -> Gate:
    return Gate.of(case, "prompt_logprobs", "prompt_logprob_atol")


@check("prompt_logprobs", section="prompt", units=EACH_BACKEND_VS_REFERENCE, metric=lambda case: _gate(case).metric,
       tolerances={"prompt_logprob_atol": 1e-4, **GATE},
       summary="one entry per prompt token, the first None, each within tolerance of the reference's teacher-forced "
               "value (vLLM's structure rule plus values); metric max |dlogp|",
       measures="max \\|dlogp\\| over positions 1..",
       fails="a length other than len(prompt), a first entry that is not None, a None inside, values off")
def prompt_logprobs(ctx: RunData, case: Case, x: str) -> Verdict:
    """One entry per prompt token, the first None, each within tolerance of the reference's
    teacher-forced value (the reference's generation record carries its exact prompt logprobs)."""
    gate = _gate(case)
    if (why := ctx.lacks(x, "prompt_logprobs")):
        raise Unavailable("skipped", why)
    ref = ctx.gens_of(REFERENCE, case)
    w = Worst()
    for variant, recs in sorted((v, r) for v, r in ctx.variants_of(x, case).items() if v != TUNIX):
        for key, r in sorted(recs.items()):
            truth = ref.get((key[0], 0))
            where = f"{variant} {fmt_keys(key)}"
            if truth is None:
                w.problems.append(f"{where}: the reference has no record of prompt {key[0]}")
                continue
            if list(r.prompt_ids) != list(truth.prompt_ids):
                w.problems.append(f"{where}: prompt ids differ from the reference's (see prompt_ids)")
                continue
            w.add(where, compare_prompt_logprobs(name_0=x, plp_0=r.prompt_logprobs, name_1=REFERENCE,
                                                 plp_1=truth.prompt_logprobs, prompt_len=len(r.prompt_ids)),
                  variant=variant, prompt=key[0], sample=key[1])
    if w.problems:
        detail = "; ".join(w.problems[:5]) + (f" (+{len(w.problems) - 5} more)" if len(w.problems) > 5 else "")
    elif w.per:
        detail = w.detail(gate)
    else:
        detail = "no prompt logprobs compared"
    data = w.data()
    data["per_prompt"] = data.pop("per_sequence")
    return verdict("prompt_logprobs", case.id, subject(x), metric=gate.metric,
                   value=w.stat(gate), threshold=gate.atol, passed=w.judged(gate), detail=detail, data=data)
