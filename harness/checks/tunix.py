"""params_sent, seed_rule, tunix_surface: what a rollout sent to its engine, whether each seeded draw is the
one its documented seed rule gives, and whether tunix's surface hands a trainer what the rich API returned.

The records these read: `native_params` captured at the engine call (`native_params_source: sent`), the
variants `rule-main` / `rule-tunix` (each seeded draw again alone, with its documented seed) and `tunix` (the
batch through generate(prompts, RolloutConfig) and get_per_token_logps on left-padded arrays), all written by
harness/recorder.py.
"""

from __future__ import annotations

from harness.checks.base import Unit, Units, check, fmt_keys, not_applicable, verdict
from harness.checks.catalog import SEED_RULE_VARIANTS
from harness.checks.compare_fns import compare_token_streams
from harness.checks.data import RunData, Unavailable
from harness.backends.seeds import ENGINES, documented_seed, request_seed, row_seed, sends_n, sent_spec
from harness.sampling.mapping import NOT_SENT
from harness.sampling.table import ROWS
from harness.spec import SamplingSpec
from harness.suite import Case
from harness.verdict import Verdict


NO_ROLLOUT = ("is not one of the engine rollouts this check holds to a documented seed rule, parameter spelling "
              "and tunix surface (vllm, sglang_jax)")


def engine_kind(ctx: RunData, backend: str) -> str | None:
    """vllm / sglang_jax for the engine rollouts (their documented rules and spellings), from the backend's
    session record (harness/recorder.py writes config.engine_kind); None for the reference, served engines and
    synthetic backends."""
    s = ctx.session(backend)
    kind = (s.config or {}).get("engine_kind") if s is not None else None
    return kind if kind in ENGINES else None


def _no_rollout(ctx: RunData, case: Case, x: str, check: str, metric: str) -> Verdict:
    ctx.gens_of(x, case)  # the case's own error or skip comes first (it says more)
    return not_applicable(check, case.id, [x], metric, f"{x} {NO_ROLLOUT}")


def without_rollout(ctx: RunData, backend: str) -> bool:
    """The backend recorded (it has a session) and says it has no rollout of its own. A backend whose phase
    failed before saying anything is not: its checks must be errors, never skips."""
    return ctx.session(backend) is not None and engine_kind(ctx, backend) is None


#: each backend with a rollout of its own; for the others a verdict saying the check does not apply to them
EACH_ROLLOUT = Units("engine rollout", lambda ctx, case: [
    Unit((x,), [x], instead=(lambda check, metric, x=x: _no_rollout(ctx, case, x, check, metric))
         if without_rollout(ctx, x) else None) for x in ctx.backends])


# ------------------------------------------------------------------------------------------ params_sent
# The spec fields params_sent compares value for value, from the sampling table's rows: those a request of the
# rich API carries, and those of them a RolloutConfig carries too (the row's tunix side is sent). n, seed and
# stop_token_ids have rules of their own (below); top_logprobs is what comes back, not how a token is drawn.
_OWN_RULE = ("n", "seed", "stop_token_ids", "top_logprobs")
_RICH_FIELDS = tuple(r.canonical for r in ROWS if r.canonical in SamplingSpec.model_fields
                     and r.canonical not in _OWN_RULE)
_TUNIX_FIELDS = tuple(r.canonical for r in ROWS if r.canonical in _RICH_FIELDS and r.tunix.status not in NOT_SENT)


#: (engine, repr of the parameters) -> sent_spec's SamplingSpec (frozen, so shared): a run sends a few distinct
#: parameter sets thousands of times, and mapping one back costs 100 us. repr tells 1 from 1.0, True and "1".
_SENT_SPECS: dict[tuple[str, str], SamplingSpec] = {}


def _sent_spec(kind: str, sent: dict) -> SamplingSpec:
    """sent_spec(kind, sent), once per distinct parameter set; one that does not map raises every time."""
    key = (kind, repr(sent))
    got = _SENT_SPECS.get(key)
    if got is None:
        got = sent_spec(kind, sent)
        if len(_SENT_SPECS) >= 4096:
            _SENT_SPECS.clear()
        _SENT_SPECS[key] = got
    return got


def _expected_seed(kind: str, case: Case, variant: str, i: int, j: int, rows: int, sent_n: int) -> int | None:
    spec = case.sampling
    if variant.startswith("rule-"):
        surface = "tunix" if variant == "rule-tunix" else "rich"
        return documented_seed(kind, surface, spec.seed, i, j, 1 if surface == "tunix" else spec.n, rows)
    if variant == "tunix":
        return row_seed(kind, spec.seed, i, rows)
    return request_seed(kind, spec.seed, j, spec.n, sent_n)


@check("params_sent", section="tunix", units=EACH_ROLLOUT, metric="fields_differing",
       summary="the sampling parameters each rollout passed to its engine (captured at the engine call, not "
               "recomputed) mean the case's spec: no field dropped or rewritten (top_k, top_p, min_p, temperature, "
               "max tokens, penalties, ...), seeds as the documented rule gives them, and no explicit seed shared by "
               "two requests of an unseeded case; fails even when no draw shows the difference",
       measures="fields of the parameters each request was sent with (`native_params`, captured where the rollout "
                "calls the engine: `native_params_source: sent`) that, mapped back to the canonical spec, differ from "
                "the case's; seeds against their documented rule (`harness/backends/seeds.py`); an explicit seed "
                "shared by two requests of an unseeded case",
       fails="top_k/top_p/min_p (or any field) dropped or rewritten on the way to the engine even when no draw shows "
             "it; one seed for every row; row i sent row i-1's seed; every unseeded request given one default seed")
def params_sent(ctx: RunData, case: Case, x: str) -> Verdict:
    """Every record's captured engine parameters, mapped back to the canonical spec, equal the case's:
    no field dropped or rewritten, seeds as documented, no explicit seed shared in an unseeded case."""
    check, metric = "params_sent", "fields_differing"
    spec = case.sampling
    kind = engine_kind(ctx, x)
    variants = ctx.variants_of(x, case)
    recs = [(v, k, r) for v, got in sorted(variants.items()) for k, r in sorted(got.items())]
    if any(r.native_params_source != "sent" for _, _, r in recs):
        raise Unavailable("skipped", f"{x} records derived parameters (recomputed from the spec), not the ones "
                                     "sent: nothing to check them against")
    rows = len(case.prompts)
    problems: list[str] = []
    seeds: dict[int, list[str]] = {}
    for variant, (i, j), r in recs:
        where = f"{variant} {fmt_keys((i, j))}"
        try:
            got = _sent_spec(kind, r.native_params)
        except Exception as e:  # noqa: BLE001 - an unmappable field is a finding, not a crash
            problems.append(f"{where}: {e}")
            continue
        fields = _TUNIX_FIELDS if variant == "tunix" else _RICH_FIELDS
        for f in fields:
            if spec.greedy and f in ("top_p", "top_k", "min_p"):
                continue  # greedy ignores them (every engine)
            want, have = getattr(spec, f), getattr(got, f)
            if f == "temperature" and spec.greedy:
                want, have = 0.0, (0.0 if got.greedy else have)
            if want != have:
                problems.append(f"{where}: {f} sent as {have!r}, the spec says {want!r}")
        if not set(spec.stop_token_ids) <= set(got.stop_token_ids):
            problems.append(f"{where}: stop_token_ids sent {list(got.stop_token_ids)}, missing "
                            f"{sorted(set(spec.stop_token_ids) - set(got.stop_token_ids))}")
        if sends_n(kind) and (variant == "main" or variant.startswith(("repeat-", "alone-"))) \
                and got.n != spec.n:
            problems.append(f"{where}: n sent as {got.n}, the spec says {spec.n}")
        if spec.greedy:
            continue
        if spec.seed is None:
            if got.seed is not None:
                seeds.setdefault(got.seed, []).append(where)
            continue
        want = _expected_seed(kind, case, variant, i, j, rows, got.n)
        if got.seed != want:
            problems.append(f"{where}: seed sent as {got.seed}, its documented rule gives {want}")
    for seed, where in seeds.items():
        if len(where) > 1:
            problems.append(f"unseeded case: {len(where)} requests sent the same explicit seed {seed} "
                            f"({', '.join(where[:4])}{', ...' if len(where) > 4 else ''}): one default seed "
                            "makes every 'random' request draw alike")
    detail = "; ".join(problems[:12]) + (f"; ... {len(problems) - 12} more" if len(problems) > 12 else "") \
        if problems else f"{len(recs)} requests sent exactly the spec's fields ({', '.join(sorted(variants))})"
    return verdict(check, case.id, [x], metric=metric, value=len(problems), threshold=0, passed=not problems,
                   detail=detail, data={"problems": problems, "requests": len(recs)})


# ------------------------------------------------------------------------------------------ seed_rule
@check("seed_rule", section="tunix", units=EACH_ROLLOUT, metric="draws_differing", tolerances={"top_k_rescue": 5},
       needs=[SEED_RULE_VARIANTS], unit_doc="engine rollout (seeded cases with n > 1 or `tunix: true`)",
       prerequisite=(lambda c: c.sampling.seed is not None and (c.sampling.n > 1 or c.tunix),
                     "check seed_rule needs a seed and n > 1 or tunix: true (it reproduces each draw from its "
                     "documented seed)"),
       summary="each seeded draw (sample j of n; each row of a tunix batch) equals the same prompt generated alone "
               "with the seed its documented rule gives (harness/backends/seeds.py): n samples in their order, distinct "
               "reproducible rows for the repeated prompts of a GRPO group; a divergence passes only as tie noise",
       measures="seeded draws that are not the draw of their documented seed: sample j of n (variant `rule-main`) and "
                "each tunix row (`rule-tunix`) generated again alone, n = 1, with the seed `harness/backends/seeds.py` "
                "gives (a divergence only as tie noise)",
       fails="n samples returned in another order, every row of a GRPO group given the same seed, row seeds shifted")
def seed_rule(ctx: RunData, case: Case, x: str) -> Verdict:
    """Each seeded draw equals its documented-seed reproduction (rule-main for sample j of n, rule-tunix for
    a tunix row): tokens equal, a divergence only as vLLM-rule tie noise."""
    check, metric = "seed_rule", "draws_differing"
    k = int(case.tolerance("top_k_rescue", check))
    variants = ctx.variants_of(x, case)
    pairs = []
    if case.sampling.n > 1:
        pairs.append(("main", "rule-main"))
    if case.tunix:
        pairs.append(("tunix", "rule-tunix"))
    bad, lines, n = 0, [], 0
    for drawn, rule in pairs:
        if rule not in variants:
            raise Unavailable("error", f"{x} recorded no {rule} variant (the seed-rule reproductions)")
        got, want = ctx.gens_of(x, case, drawn), variants[rule]
        for key in sorted(set(got) | set(want)):
            n += 1
            if key not in got or key not in want:
                bad += 1
                lines.append(f"{drawn} {fmt_keys(key)}: missing from {drawn if key not in got else rule}")
                continue
            a, b = got[key], want[key]
            c = compare_token_streams(name_0=drawn, ids_0=list(a.completion_ids), top_0=a.completion_top,
                                      name_1="its seed alone", ids_1=list(b.completion_ids),
                                      top_1=b.completion_top, k=k)
            if c.outcome not in ("equal", "tie"):
                bad += 1
                lines.append(f"{drawn} {fmt_keys(key)} is not the draw of its documented seed "
                             f"{b.native_params.get('seed', b.native_params.get('sampling_seed'))}: {c.describe()}")
    detail = "; ".join(lines[:10]) or f"{n} seeded draws each equal to the draw of its documented seed"
    return verdict(check, case.id, [x], metric=metric, value=bad, threshold=0, passed=bad == 0, detail=detail,
                   data={"problems": lines, "draws": n})


# ------------------------------------------------------------------------------------------ tunix_surface
def model_pad_id(ctx: RunData) -> int | None:
    import json
    from pathlib import Path

    for (_, _), sessions in sorted(ctx.sessions.items()):
        for s in sessions:
            path = s.model.get("path")
            for name in ("generation_config.json", "config.json"):
                f = Path(path) / name if path else None
                if f is not None and f.is_file():
                    try:
                        pad = json.loads(f.read_text()).get("pad_token_id")
                    except (OSError, ValueError):
                        continue
                    if pad is not None:
                        return int(pad)
    return None


@check("tunix_surface", section="tunix", units=EACH_ROLLOUT, metric="problems", tolerances={"logprob_atol": 1e-4},
       unit_doc="engine rollout (`tunix: true`)", prerequisite=(lambda c: c.tunix, "check tunix_surface needs tunix: true"),
       summary="what a trainer receives through tunix's surface (generate(prompts, RolloutConfig), "
               "get_per_token_logps on left-padded arrays, pad_id, eos_id) agrees with the rollout's rich API: "
               "left-padded prompt rows, padded token rows, one logprob per completion token, eos_id a model EOS, "
               "pad_id the tokenizer's pad, get_per_token_logps equal to the teacher-forced score of the same tokens "
               "and 0 at padding; greedy rows equal the rich API's",
       measures="problems in the rows a trainer gets from generate(prompts, RolloutConfig) + get_per_token_logps"
                "(left-padded prompt tokens, padded completion tokens), called as tunix's RLCluster / GRPO learner "
                "call them (greedy rows: `greedy_tokens`' `top_k_rescue`)",
       fails="left padding or pad id wrong, eos_id() not a model EOS (e.g. the pad id), pad_id() not the model's pad, "
             "logprob count != token count, get_per_token_logps not the teacher-forced score of the same tokens (e.g. "
             "left-pad tokens kept as prompt tokens) or not 0 at padding, greedy rows unlike the rich API's")
def tunix_surface(ctx: RunData, case: Case, x: str) -> Verdict:
    """The tunix rows agree with the rich API: layout (left pads, right pads, logprob count), pad_id/eos_id,
    get_per_token_logps vs the teacher-forced score of the same tokens, greedy rows vs the rich generation."""
    check, metric = "tunix_surface", "problems"
    atol = case.tolerance("logprob_atol", check)
    kk = int(case.tolerance("top_k_rescue", "greedy_tokens"))
    rows = ctx.gens_of(x, case, "tunix")
    main = ctx.gens_of(x, case)
    eos_ids, eos_src = ctx.eos_ids()
    pad_model = model_pad_id(ctx)
    problems, worst = [], 0.0
    for (i, _), r in sorted(rows.items()):
        t = r.tunix or {}
        where = f"row {i}"
        pad, eos = t.get("pad_id"), t.get("eos_id")
        if eos_ids and eos not in eos_ids:
            problems.append(f"{where}: eos_id() = {eos}, not a model EOS ({sorted(eos_ids)}, {eos_src}): the "
                            "trainer masks completions at the wrong token")
        if pad_model is not None and pad != pad_model:
            problems.append(f"{where}: pad_id() = {pad}, the model's pad is {pad_model}")
        want_prompt = list(main[(i, 0)].prompt_ids) if (i, 0) in main else None
        left = list(t.get("left_padded_prompt") or [])
        if want_prompt is not None:
            expect = [pad] * (len(left) - len(want_prompt)) + want_prompt
            if left != expect:
                problems.append(f"{where}: left_padded_prompt_tokens {left} is not the prompt {want_prompt} "
                                f"left-padded with pad_id {pad}")
        comp = list(r.completion_ids)
        toks = list(t.get("tokens") or [])
        if toks[:len(comp)] != comp or any(v != pad for v in toks[len(comp):]):
            problems.append(f"{where}: tokens row {toks} is not the completion right-padded with {pad}")
        if r.completion_logprobs is not None and len(r.completion_logprobs) != len(comp):
            problems.append(f"{where}: {len(r.completion_logprobs)} logprobs for {len(comp)} completion tokens")
        ptl, score = list(t.get("per_token_logps") or []), list(t.get("score") or [])
        if len(score) != len(comp):
            problems.append(f"{where}: the rich score has {len(score)} values for {len(comp)} tokens")
        else:
            diffs = [abs(a - b) for a, b in zip(ptl[:len(comp)], score)]
            d = max(diffs, default=0.0)
            worst = max(worst, d)
            if d > atol:
                pos = diffs.index(d)
                problems.append(f"{where}: get_per_token_logps on the left-padded arrays differs from the "
                                f"teacher-forced score of the same tokens by {d:.3g} at position {pos} (atol "
                                f"{atol:g}): the trainer's old logprobs are not the rollout's")
        if any(v != 0.0 for v in ptl[len(comp):]):
            problems.append(f"{where}: get_per_token_logps is not 0 at padded positions")
        if case.sampling.greedy and (i, 0) in main:
            m = main[(i, 0)]
            c = compare_token_streams(name_0="tunix", ids_0=comp, top_0=None, name_1="rich",
                                      ids_1=list(m.completion_ids), top_1=m.completion_top, k=kk)
            if c.outcome not in ("equal", "tie"):
                problems.append(f"{where}: greedy tunix row differs from the rich API's: {c.describe()}")
    detail = "; ".join(problems[:10]) or (f"{len(rows)} rows: layout, pad/eos ids and get_per_token_logps agree "
                                          f"with the rich API (max |dlogp| {worst:.3g})")
    return verdict(check, case.id, [x], metric=metric, value=len(problems), threshold=0, passed=not problems,
                   detail=detail, data={"problems": problems, "max_abs_dlogp": worst})
