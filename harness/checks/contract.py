"""rollout_contract_*: can a trainer swap one rollout for the other? Field by field, for one RolloutConfig.

For each pair of engine rollouts with `tunix` rows of a case (the batch through generate(prompts,
RolloutConfig) and get_per_token_logps, harness/recorder.py), one verdict per field of what a trainer
consumes:

- `rollout_contract_pad_eos`: pad_id() and eos_id() equal (the GRPO learner masks completions with
  tokens != pad_id and computes with eos_id);
- `rollout_contract_prompt`: left_padded_prompt_tokens rows equal (width, pad id, prompt ids);
- `rollout_contract_tokens`: EOS kept by both (a completion shorter than max tokens ends on an EOS/stop
  token), and on greedy rows the same tokens (a divergence only as tie noise);
- `rollout_contract_logprobs`: the same meaning (mode) and positions: each rollout's logprobs are matched
  against the reference's exact raw / temperature / processed values of its own rows; different modes fail
  with the per-token log IS-ratio shift a trainer sees when it swaps them, measured on these rows. The
  detail also gives each rollout's distance to what tunix's trainer recomputes (RLCluster:
  log_softmax(logits / T), no renormalisation: the "temperature" mode);
- `rollout_contract_text`: on rows with the same tokens, the same text;
- `rollout_contract_per_token_logps`: get_per_token_logps of each rollout's rows is the raw teacher-forced
  logprob (the reference's), 0 at padding, for both.
- `rollout_contract_update_params`: each form in which tunix hands a rollout weights (HF-named arrays, the
  tunix state as `nnx.state(model)`, with `filter_types=(nnx.Param,)` as `RLCluster.sync_weights` passes it, a
  partial update in two calls; harness/backends/update_forms.py) is accepted by both and takes effect, or
  refused by both with an error. Accepted but without effect (the old weights still live: silent staleness,
  or other weights) fails for either; accepted by one and refused by the other fails. A form one venv cannot
  build (no flax: no nnx filter) is named in the detail, not compared.

A difference fails, unless the case accepts it (`accept: {rollout_contract_<field>: reason}`): then the verdict
passes, its detail saying what differs and the suite's reason.
"""

from __future__ import annotations

import itertools
import math

from harness.checks.base import Unit, Units, check, not_applicable, verdict
from harness.checks.compare_fns import compare_token_streams
from harness.checks.data import REFERENCE, RunData, Unavailable
from harness.suite import Case
from harness.verdict import Verdict

FIELDS = ("pad_eos", "prompt", "tokens", "logprobs", "text", "per_token_logps", "update_params")
MODES = ("raw", "temperature", "processed")


def _pairs(ctx: RunData, case: Case) -> list[tuple[str, str]]:
    """Every pair of backends that are engine rollouts (vllm, sglang_jax)."""
    from harness.checks.tunix import engine_kind

    return list(itertools.combinations([x for x in ctx.engines if engine_kind(ctx, x) is not None], 2))


def _broken(ctx: RunData, case: Case) -> list[Verdict]:
    """An engine whose generate phase failed before saying what it is: an error naming it, never a skip."""
    out = []
    for x in ctx.engines:
        if ctx.session(x) is None:
            problem = ctx.phase_problem(x, "generate") or f"{x} has no session record"
            out.append(not_applicable("rollout_contract", case.id, [x], "differences",
                                      f"{x} cannot be held to the contract: {problem}", "error"))
    return out


def _ref(ctx: RunData, case: Case, x: str) -> dict:
    if not ctx.has_reference:
        raise Unavailable("skipped", "the logprob semantics need the reference's exact modes (run with reference)")
    got = ctx.variant_scores.get((REFERENCE, case.id, x, "tunix"))
    if not got:
        raise Unavailable("error", f"no reference score of {x}'s tunix rows (the reference's score phase scores them)")
    return got


def _modes(rows: dict, ref: dict, atol: float) -> tuple[set[str], dict[str, float]]:
    """The modes whose exact values every row's logprobs match within atol, and the max distance per mode."""
    dist = {m: 0.0 for m in MODES}
    for key, r in rows.items():
        sc = ref.get(key)
        lp = r.completion_logprobs
        if sc is None or lp is None:
            raise Unavailable("error", f"row {key[0]}: no logprobs or no reference score")
        for m in MODES:
            vals = sc.by_mode.get(m)
            if vals is None or len(vals) != len(lp):
                dist[m] = math.inf
                continue
            d = max((abs(a - b) if math.isfinite(b) else math.inf for a, b in zip(lp, vals)), default=0.0)
            dist[m] = max(dist[m], d)
    return {m for m, d in dist.items() if d <= atol}, dist


def _shift(rows: dict, ref: dict, ma: str, mb: str) -> dict:
    """log IS-ratio shift per token if a trainer got mode mb where it had mode ma, on these rows."""
    ds = []
    for key in rows:
        sc = ref.get(key)
        if sc is None or ma not in sc.by_mode or mb not in sc.by_mode:
            continue
        ds += [a - b for a, b in zip(sc.by_mode[ma], sc.by_mode[mb]) if math.isfinite(a) and math.isfinite(b)]
    if not ds:
        return {"tokens": 0}
    mean = sum(ds) / len(ds)
    return {"tokens": len(ds), "mean_log_shift": mean, "max_abs_log_shift": max(abs(d) for d in ds),
            "is_ratio_mean": sum(math.exp(d) for d in ds) / len(ds),
            "is_ratio_min": math.exp(min(ds)), "is_ratio_max": math.exp(max(ds))}


def _units(ctx: RunData, case: Case) -> list[Unit]:
    """An error for each engine that cannot be held to the contract, then a verdict per pair of engine rollouts
    and field (verdict rollout_contract_<field>); with fewer than two rollouts, one verdict saying so."""
    units = [Unit((), [v.backends[0]], instead=lambda c, m, v=v: v) for v in _broken(ctx, case)]
    pairs = _pairs(ctx, case)
    if not pairs:
        from harness.checks.tunix import NO_ROLLOUT

        named = [x for x in ctx.backends if ctx.session(x) is not None]
        return units + [Unit((), named, instead=lambda c, m: not_applicable(
            c, case.id, named, m, "rollout_contract needs two engine rollouts (vllm, sglang_jax); in this run every "
                                  f"backend but at most one {NO_ROLLOUT}"))]
    return units + [Unit((f, a, b), [a, b], check=f"rollout_contract_{f}") for a, b in pairs for f in FIELDS]


@check("rollout_contract", section="rollout",
       units=Units("pair of engine rollouts (`tunix: true`)", _units), metric="differences",
       tolerances={"logprob_atol": 1e-4},
       prerequisite=(lambda c: c.tunix, "check rollout_contract needs tunix: true (it compares the rollouts' tunix "
                                        "outputs)"),
       summary="swap one rollout for the other: for one RolloutConfig the two rollouts' RolloutOutput as a trainer "
               "consumes it, field by field (verdicts rollout_contract_<field>: pad_eos, prompt, tokens, logprobs, "
               "text, per_token_logps, update_params: each form tunix passes weights in accepted and effective, or "
               "refused by both); each difference fails with its effect on a trainer (e.g. the per-token "
               "IS-ratio shift), unless the suite accepts it with a reason",
       measures="differences in one field of what a trainer consumes (verdicts `rollout_contract_<field>`: "
                + ", ".join(f"`{f}`" for f in FIELDS) + "; greedy rows: `greedy_tokens`' `top_k_rescue`)",
       fails="the rollouts cannot be swapped: each difference named with its effect on a trainer; `logprobs` fails "
             "when the two return different modes (detected against the reference's exact modes of each rollout's "
             "rows), with the per-token log IS-ratio shift measured on those rows; `update_params` when a form is "
             "accepted without taking effect (silently stale) or accepted by one rollout and refused by the other")
def rollout_contract(ctx: RunData, case: Case, f: str, a: str, b: str) -> Verdict:
    atol = case.tolerance("logprob_atol", "rollout_contract")
    k = int(case.tolerance("top_k_rescue", "greedy_tokens"))
    accepted = dict(getattr(case, "accept", {}) or {})
    return _field(ctx, case, f, a, b, atol, k, accepted.get(f"rollout_contract_{f}"))


def _field(ctx: RunData, case: Case, f: str, a: str, b: str, atol: float, k: int, accept: str | None) -> Verdict:
    ra, rb = ctx.gens_of(a, case, "tunix"), ctx.gens_of(b, case, "tunix")
    keys = sorted(set(ra) & set(rb))
    if set(ra) != set(rb):
        raise Unavailable("error", f"the rollouts returned different rows: {a} {sorted(ra)}, {b} {sorted(rb)}")
    diffs: list[str] = []
    data: dict = {}
    effect = ""
    same = {}
    for key in keys:
        c = compare_token_streams(name_0=a, ids_0=list(ra[key].completion_ids), top_0=None, name_1=b,
                                  ids_1=list(rb[key].completion_ids), top_1=None, k=0)
        same[key] = c.outcome == "equal"
    if f == "pad_eos":
        for key in keys:
            ta, tb = ra[key].tunix or {}, rb[key].tunix or {}
            for fld in ("pad_id", "eos_id"):
                if ta.get(fld) != tb.get(fld):
                    diffs.append(f"{fld}(): {a} {ta.get(fld)}, {b} {tb.get(fld)}")
        diffs = sorted(set(diffs))
        effect = "the trainer's completion mask (tokens != pad_id) and EOS handling change with the rollout"
        data = {x: {"pad_id": (r[keys[0]].tunix or {}).get("pad_id"), "eos_id": (r[keys[0]].tunix or {}).get("eos_id")}
                for x, r in ((a, ra), (b, rb))} if keys else {}
    elif f == "prompt":
        for key in keys:
            pa, pb = (ra[key].tunix or {}).get("left_padded_prompt"), (rb[key].tunix or {}).get("left_padded_prompt")
            if pa != pb:
                diffs.append(f"row {key[0]}: {a} {pa} vs {b} {pb}")
        effect = "prompt_mask, positions and the prompt the trainer conditions on differ"
    elif f == "tokens":
        for x, rows in ((a, ra), (b, rb)):
            stops = set(ctx.eos_ids()[0]) | set(case.sampling.stop_token_ids)
            for key, r in rows.items():
                width = len((r.tunix or {}).get("tokens") or [])
                comp = list(r.completion_ids)
                if comp and len(comp) < width and comp[-1] not in stops:
                    diffs.append(f"{x} row {key[0]}: ends after {len(comp)} of {width} tokens without its EOS/stop "
                                 f"token (EOS dropped)")
        if case.sampling.greedy:
            for key in keys:
                c = compare_token_streams(name_0=a, ids_0=list(ra[key].completion_ids), top_0=ra[key].completion_top,
                                          name_1=b, ids_1=list(rb[key].completion_ids), top_1=rb[key].completion_top,
                                          k=k)
                if c.outcome not in ("equal", "tie"):
                    diffs.append(f"row {key[0]}: {c.describe()}")
        effect = "the trainer trains on other tokens (an EOS kept by one rollout only shifts every mask and reward)"
    elif f == "logprobs":
        for x, rows in ((a, ra), (b, rb)):
            for key, r in rows.items():
                if r.completion_logprobs is None or len(r.completion_logprobs) != len(r.completion_ids):
                    diffs.append(f"{x} row {key[0]}: {0 if r.completion_logprobs is None else len(r.completion_logprobs)}"
                                 f" logprobs for {len(r.completion_ids)} tokens (positions differ)")
        ref_a, ref_b = _ref(ctx, case, a), _ref(ctx, case, b)
        ma, da = _modes(ra, ref_a, atol)
        mb, db = _modes(rb, ref_b, atol)
        trainer = {a: da.get("temperature"), b: db.get("temperature")}
        data = {"modes": {a: sorted(ma), b: sorted(mb)}, "distance_by_mode": {a: da, b: db},
                "trainer_recompute_max_abs_dlogp": trainer}
        if not ma or not mb:
            diffs.append(f"no exact mode explains {a if not ma else b}'s logprobs (max |dlogp| by mode: "
                         f"{da if not ma else db})")
        elif not ma & mb:
            pa, pb = sorted(ma)[0], sorted(mb)[0]
            sh = _shift(ra, ref_a, pa, pb)
            data["swap_shift"] = sh
            if sh.get("tokens"):
                diffs.append(f"{a} returns {'/'.join(sorted(ma))} logprobs, {b} {'/'.join(sorted(mb))}: a trainer "
                             f"swapping them sees each token's log IS ratio move by {sh['mean_log_shift']:+.4f} on "
                             f"average (max |{sh['max_abs_log_shift']:.4f}|), IS ratio mean "
                             f"{sh['is_ratio_mean']:.4f} (range {sh['is_ratio_min']:.4f}..{sh['is_ratio_max']:.4f})")
            else:
                diffs.append(f"{a} returns {'/'.join(sorted(ma))} logprobs, {b} {'/'.join(sorted(mb))}")
        effect = "importance ratios, clipping and the KL term shift by the per-token difference"
        if not diffs:
            common = "/".join(sorted(ma & mb))
            data["explained"] = (f"both return {common} logprobs on these rows; tunix's trainer recomputes "
                                 f"log_softmax(logits / T): max |dlogp| to it {a} {trainer[a]:.3g}, {b} {trainer[b]:.3g}")
    elif f == "text":
        for key in keys:
            if same[key] and ra[key].text != rb[key].text:
                diffs.append(f"row {key[0]}: same tokens, text {ra[key].text!r} vs {rb[key].text!r}")
        effect = "text-based rewards differ for the same tokens"
    elif f == "per_token_logps":
        if not ctx.has_reference:
            raise Unavailable("skipped", "needs the reference's raw teacher-forced logprobs")
        for x, rows in ((a, ra), (b, rb)):
            ref = _ref(ctx, case, x)
            for key, r in rows.items():
                t = r.tunix or {}
                ptl, n = list(t.get("per_token_logps") or []), len(r.completion_ids)
                raw = (ref.get(key).by_mode.get("raw") if ref.get(key) else None) or []
                if len(raw) != n:
                    diffs.append(f"{x} row {key[0]}: no raw reference values for its {n} tokens")
                    continue
                d = max((abs(u - v) for u, v in zip(ptl[:n], raw)), default=0.0)
                if d > atol:
                    diffs.append(f"{x} row {key[0]}: get_per_token_logps differs from the raw teacher-forced "
                                 f"logprob by {d:.3g} (atol {atol:g})")
                if any(v != 0.0 for v in ptl[n:]):
                    diffs.append(f"{x} row {key[0]}: get_per_token_logps not 0 at padding")
        effect = "old/reference logprobs recomputed through the rollout differ, and with them every ratio"
    elif f == "update_params":
        data, diffs = _update_params(ctx, a, b, ra, rb, keys, atol)
        effect = ("a trainer's weight sync (RLCluster.sync_weights) fails with one rollout, or the rollout keeps "
                  "generating from weights the trainer has left")
    check = f"rollout_contract_{f}"
    if diffs:
        detail = f"{'; '.join(diffs[:8])}{'; ...' if len(diffs) > 8 else ''} -> {effect}"
        if accept:
            return verdict(check, case.id, [a, b], metric="differences", value=len(diffs), threshold=len(diffs),
                           passed=True, detail=f"accepted by the suite ({accept}): {detail}",
                           data={**data, "differences": diffs, "accepted": accept})
        return verdict(check, case.id, [a, b], metric="differences", value=len(diffs), threshold=0, passed=False,
                       detail=detail, data={**data, "differences": diffs})
    detail = {"pad_eos": "same pad_id and eos_id", "prompt": f"{len(keys)} left-padded prompt rows identical",
              "tokens": "EOS kept by both" + (", greedy rows identical" if case.sampling.greedy else ""),
              "logprobs": data.get("explained", "same logprob meaning and positions"),
              "text": f"same text on the {sum(same.values())} rows with the same tokens",
              "per_token_logps": "both return the raw teacher-forced logprobs, 0 at padding",
              "update_params": data.get("explained", "")}[f]
    return verdict(check, case.id, [a, b], metric="differences", value=0, threshold=0, passed=True, detail=detail,
                   data=data)


def _update_outcome(got: dict | None, atol: float) -> str:
    """One rollout's answer to one form: takes effect / refused / silently stale / other weights / not built."""
    if got is None or got.get("outcome") == "not_built":
        return "not built"
    if got["outcome"] == "refused":
        return "refused"
    if got["d_new"] <= atol:
        return "takes effect"
    return "silently stale" if got["d_old"] <= atol else "other weights"


def _update_params(ctx: RunData, a: str, b: str, ra: dict, rb: dict, keys: list, atol: float) -> tuple[dict, list]:
    """rollout_contract_update_params: the probe each rollout's first tunix row carries (harness/recorder.py)."""
    from harness.backends.update_forms import FORMS

    probes = {}
    for x, rows in ((a, ra), (b, rb)):
        pr = (rows[keys[0]].tunix or {}).get("update_params") if keys else None
        if pr is None:
            raise Unavailable("skipped", f"{x}'s records carry no update_params probe (recorded before it existed, "
                                         "or a rollout the harness cannot swap back): re-record")
        if "skipped" in pr:
            raise Unavailable("skipped", f"{x}: update_params probe not run: {pr['skipped']}")
        if pr["d_sets"] <= atol:
            raise Unavailable("error", f"{x}: weight sets {pr['from']} and {pr['to']} score the probe tokens alike "
                                       f"(max |dlogp| {pr['d_sets']:.3g}): the probe cannot tell an update's effect")
        probes[x] = pr
    table, diffs, compared, not_built = {}, [], [], []
    for form in FORMS:
        got = {x: probes[x]["forms"].get(form) for x in (a, b)}
        out = {x: _update_outcome(got[x], atol) for x in (a, b)}
        table[form] = {x: {**(got[x] or {}), "verdict": out[x]} for x in (a, b)}
        for x in (a, b):
            if out[x] in ("silently stale", "other weights"):
                g = got[x]
                diffs.append(f"{form}: {x} accepted update_params({g.get('built_as')}) and "
                             + ("kept the old weights" if out[x] == "silently stale" else "runs neither weight set")
                             + f" (max |dlogp| {g['d_new']:.3g} to the new set, {g['d_old']:.3g} to the old)")
        if "not built" in out.values():
            not_built.append(f"{form} ({'; '.join(f'{x}: ' + (got[x] or {}).get('reason', 'not recorded') for x in (a, b) if out[x] == 'not built')})")
            continue
        compared.append(form)
        if out[a] != out[b] and not any(v in ("silently stale", "other weights") for v in out.values()):
            err = "; ".join(f"{x}: {got[x].get('error')}" for x in (a, b) if out[x] == "refused")
            diffs.append(f"{form}: {a} {out[a]}, {b} {out[b]} ({err})")
    data = {"forms": table, "compared": compared, "not_compared": not_built,
            "d_sets": {x: probes[x]["d_sets"] for x in (a, b)}}
    if not compared and not diffs:
        raise Unavailable("skipped", f"no form of update_params could be built in both venvs: {'; '.join(not_built)}")
    if not diffs:
        both = {form: table[form][a]["verdict"] for form in compared}
        data["explained"] = ("; ".join(f"{form}: {v} on both" for form, v in both.items())
                             + (f"; not compared: {'; '.join(not_built)}" if not_built else ""))
    return data, diffs
