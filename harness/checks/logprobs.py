"""Completion logprobs against the truth: completion_logprobs, logprob_mode, replay, self_consistency.

The truth for a backend's completion is the reference's teacher-forced score of
*that backend's own tokens* (`reference.score.jsonl`, source_backend = it), in
every mode (`by_mode`: raw, temperature, processed). Positions follow seed
001's worked example: logprob i is log p(completion[i] | prompt + completion[:i]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.checks.base import (EACH_BACKEND, EACH_BACKEND_VS_REFERENCE, SCORER_SOURCE_PAIRS, NotApplicable, check,
                                 fmt_keys, subject, verdict)
from harness.checks.catalog import GATE
from harness.checks.compare_fns import abs_quantile, abs_quantiles, compare_logprobs, k3_kl, mode_distances
from harness.checks.data import REFERENCE, RunData, Unavailable
from harness.sampling.table import acting
from harness.spec import LOGPROB_MODES, SamplingSpec
from harness.suite import Case
from harness.verdict import Verdict


def truth(score, mode: str, who: str):
    """The reference's exact logprobs of a scored completion in `mode`."""
    if mode not in score.by_mode:
        raise Unavailable("error", f"the reference's score of {who}'s tokens has no {mode!r} values "
                                   f"(by_mode has {sorted(score.by_mode)})")
    return score.by_mode[mode]


@dataclass(frozen=True)
class Gate:
    """How a check judges |dlogp| over a unit's tokens: the `quantile` (1: the max) within `atol`,
    and the max within `max_atol`. float32 gates the max alone (quantile 1, max_atol inf); a
    low-precision profile gates a high quantile, so that rare rounding outliers of a correct engine
    pass while a defect moving most tokens fails, with a looser cap on the max."""

    atol: float
    quantile: float = 1.0
    max_atol: float = math.inf

    @classmethod
    def of(cls, case: Case, check: str, atol_name: str = "logprob_atol") -> "Gate":
        return cls(case.tolerance(atol_name, check), case.tolerance("logprob_quantile", check),
                   case.tolerance("logprob_max_atol", check))

    @classmethod
    def metric_of(cls, check: str):
        """A declaration's metric: the gate's (it names the quantile it gates)."""
        return lambda case: cls.of(case, check).metric

    @property
    def metric(self) -> str:
        return "max_abs_dlogp" if self.quantile >= 1.0 else f"q{self.quantile:g}_abs_dlogp"

    @property
    def label(self) -> str:
        return "max |dlogp|" if self.quantile >= 1.0 else f"q{self.quantile:g} |dlogp|"

    def passes(self, stat: float, worst: float) -> bool:
        return stat <= self.atol and worst <= self.max_atol

    def describe(self, stat: float, worst: float) -> str:
        if self.quantile >= 1.0:
            return f"atol {self.atol:g}"
        cap = f", max {worst:.3g} (cap {self.max_atol:g})" if math.isfinite(self.max_atol) else f", max {worst:.3g}"
        return f"{self.label} {stat:.3g} (atol {self.atol:g}){cap}"


class Worst:
    """Keeps the largest comparison, every |dlogp| and the structural problems over many sequences."""

    def __init__(self):
        self.value, self.desc, self.problems, self.per, self.n = 0.0, "", [], [], 0
        self.abs_sum = 0.0
        self.diffs: list = []

    def add(self, where: str, c, **extra) -> None:
        if c.problem:
            self.problems.append(f"{where}: {c.describe()}")
            return
        self.per.append({"where": where} | c.as_dict() | extra)
        self.n += c.n
        self.abs_sum += c.mean_abs * c.n
        self.diffs.append(c.diffs)
        if c.max_abs > self.value or not self.desc:
            self.value, self.desc = max(self.value, c.max_abs), f"{where}: {c.describe()}"

    @property
    def result(self) -> float:
        return math.inf if self.problems else self.value

    def stat(self, gate: "Gate") -> float:
        """The gated statistic (the gate's quantile of |dlogp|); inf with a structural problem."""
        return math.inf if self.problems else abs_quantile(self.diffs, gate.quantile)

    def judged(self, gate: "Gate") -> bool:
        return not self.problems and bool(self.per) and gate.passes(self.stat(gate), self.value)

    def detail(self, gate: "Gate", head: str = "") -> str:
        if self.problems:
            more = f" (+{len(self.problems) - 4} more)" if len(self.problems) > 4 else ""
            return head + "; ".join(self.problems[:4]) + more
        if not self.per:
            return head + "nothing to compare"
        return f"{head}worst {self.desc}; {gate.describe(self.stat(gate), self.value)}"

    def data(self) -> dict:
        out = {"per_sequence": self.per, "problems": self.problems, "n_tokens": self.n,
               "mean_abs_dlogp": self.abs_sum / self.n if self.n else 0.0, "max_abs_dlogp": self.result}
        if self.diffs and not self.problems:
            out["quantiles_abs_dlogp"] = dict(zip(map(str, QUANTILES), abs_quantiles(self.diffs, QUANTILES)))
        return out


QUANTILES = (0.5, 0.9, 0.95, 0.99)  # recorded in every logprob verdict's data: the calibration reads them


def _matched(score, rec, who: str) -> str | None:
    if list(score.completion_ids) != list(rec.completion_ids) or list(score.prompt_ids) != list(rec.prompt_ids):
        return f"the reference scored other tokens than {who} generated (records out of sync: re-run the score phase)"
    return None


@check("completion_logprobs", section="logprobs",
       units=EACH_BACKEND_VS_REFERENCE, metric=Gate.metric_of("completion_logprobs"),
       tolerances={"logprob_atol": 1e-4, **GATE},
       summary="each backend's completion logprobs equal the reference's teacher-forced logprobs of that backend's own "
               "tokens, in the logprob mode the backend declares; metric max |dlogp|",
       measures="max \\|dlogp\\| against the reference's score of the backend's own tokens in its declared mode",
       fails="shifted positions, wrong mode, wrong weights, precision loss (bf16 lm_head)")
def completion_logprobs(ctx: RunData, case: Case, x: str) -> Verdict:
    """Each backend's completion logprobs equal the reference's score of its own tokens, in the
    mode the backend declares (greedy: every mode is raw)."""
    check = "completion_logprobs"
    gate = Gate.of(case, check)
    metric = gate.metric
    gens = ctx.gens_of(x, case)
    scores = ctx.scores_of(REFERENCE, case, x)
    w, modes = Worst(), set()
    for key, rec in sorted(gens.items()):
        where = fmt_keys(key)
        mode = rec.logprob_mode
        modes.add(mode)
        s = scores.get(key)
        if s is None:
            w.problems.append(f"{where}: the reference has no score of it")
            continue
        if (m := _matched(s, rec, x)):
            w.problems.append(f"{where}: {m}")
            continue
        w.add(where, compare_logprobs(name_0=f"{x} ({mode})", lp_0=rec.completion_logprobs,
                                      name_1=f"reference {mode}", lp_1=truth(s, mode, x)),
              prompt=key[0], sample=key[1])
    greedy = " (greedy: all modes are raw)" if case.sampling.greedy else ""
    head = f"declared mode {'/'.join(sorted(modes)) or '?'}{greedy}; "
    return verdict(check, case.id, subject(x), metric=metric, value=w.stat(gate), threshold=gate.atol,
                   passed=w.judged(gate), detail=w.detail(gate, head),
                   data=w.data() | {"declared_mode": sorted(modes)})


def _sampled_only(case: Case) -> NotApplicable | None:
    return NotApplicable("greedy: the support is the argmax; greedy_tokens checks it") if case.sampling.greedy else None


@check("sampling_support", section="sampling", units=EACH_BACKEND_VS_REFERENCE, metric="tokens_outside_support",
       precondition=_sampled_only, unit_doc="backend vs reference (sampled cases)",
       summary="every sampled token lies inside the support of the case's processed distribution (the reference's "
               "processed logprob of it is finite): top-k, top-p and min-p were obeyed",
       measures="sampled tokens whose reference processed logprob is -inf",
       fails="top-k/top-p/min-p ignored; in raw or temperature mode an engine's own logprob of such a token is right "
             "for it, so only this check sees it")
def sampling_support(ctx: RunData, case: Case, x: str) -> Verdict:
    """Every sampled token lies inside the support of the case's processed distribution: the
    reference's processed logprob of it is finite. In raw or temperature mode a backend's own
    logprob of a token that top-k/top-p/min-p should have excluded is still correct for that
    token, so only this check sees the filter ignored."""
    check, metric = "sampling_support", "tokens_outside_support"
    gens = ctx.gens_of(x, case)
    scores = ctx.scores_of(REFERENCE, case, x)
    outside, problems, n = [], [], 0
    for key, rec in sorted(gens.items()):
        s = scores.get(key)
        if s is None or _matched(s, rec, x):
            problems.append(f"{fmt_keys(key)}: no matching reference score")
            continue
        for i, lp in enumerate(truth(s, "processed", x)):
            n += 1
            if not math.isfinite(lp):
                outside.append(f"{fmt_keys(key)} position {i} token {rec.completion_ids[i]}")
    if problems:
        return verdict(check, case.id, subject(x), metric=metric, value=math.inf, threshold=0.0, passed=False,
                       detail="; ".join(problems[:4]), data={"problems": problems})
    sp = case.sampling
    filt = f"top_k {sp.top_k}, top_p {sp.top_p}, min_p {sp.min_p}"
    detail = (f"{len(outside)} of {n} sampled tokens outside the support ({filt}): " + "; ".join(outside[:4])
              if outside else f"all {n} sampled tokens inside the support ({filt})")
    return verdict(check, case.id, subject(x), metric=metric, value=float(len(outside)), threshold=0.0,
                   passed=not outside and n > 0, detail=detail, data={"outside": outside, "n_tokens": n})


@check("logprob_mode", section="logprobs", units=EACH_BACKEND_VS_REFERENCE, metric="distance_to_declared_mode",
       tolerances={"logprob_atol": 1e-4, **GATE},
       summary="the logprob mode detected from the data (distance to the reference's exact raw / temperature / "
               "processed values) includes the one the backend declares: catches processed labelled raw and "
               "temperature applied twice (no mode matches); greedy cases cannot tell modes apart and say so",
       measures="distance to the declared mode (max \\|dlogp\\|); `data` has the distance to every mode and the "
                "detected modes",
       fails="declared mode not among the modes within tolerance: processed labelled raw (detected `processed`), "
             "temperature applied twice (no mode matches)")
def logprob_mode(ctx: RunData, case: Case, x: str) -> Verdict:
    """Detect which mode a backend's logprobs are in, by their distance to each exact reference
    mode over all the case's tokens; fail when the declared mode is not among those within
    tolerance. Catches temperature applied twice (no mode matches), processed labelled raw, etc."""
    check, metric = "logprob_mode", "distance_to_declared_mode"
    gate = Gate.of(case, check)
    atol = gate.atol
    gens = ctx.gens_of(x, case)
    scores = ctx.scores_of(REFERENCE, case, x)
    lp: list[float] = []
    ref: dict[str, list[float]] = {m: [] for m in LOGPROB_MODES}
    declared, problems = set(), []
    for key, rec in sorted(gens.items()):
        s = scores.get(key)
        if s is None or _matched(s, rec, x):
            problems.append(f"{fmt_keys(key)}: no matching reference score")
            continue
        if rec.completion_logprobs is None:
            problems.append(f"{fmt_keys(key)}: {x} returned no logprobs")
            continue
        if len(rec.completion_logprobs) != len(rec.completion_ids):
            problems.append(f"{fmt_keys(key)}: {len(rec.completion_logprobs)} logprobs for "
                            f"{len(rec.completion_ids)} tokens")
            continue
        declared.add(rec.logprob_mode)
        lp += list(rec.completion_logprobs)
        for m in LOGPROB_MODES:
            ref[m] += list(truth(s, m, x))
    if len(declared) > 1:
        problems.append(f"{x}'s records declare several modes: {sorted(declared)}")
    if problems:
        return verdict(check, case.id, subject(x), metric=metric, value=math.inf, threshold=atol, passed=False,
                       detail="; ".join(problems[:4]), data={"problems": problems})
    if not lp:
        return verdict(check, case.id, subject(x), metric=metric, value=None, threshold=atol, passed=False,
                       detail=f"{x} produced no completion tokens in this case: nothing to detect a mode from")
    mode = declared.pop()
    dist = mode_distances(name=x, lp=lp, by_mode=ref, atol=atol, quantile=gate.quantile)
    # modes that coincide on these tokens (greedy; T=1 without truncation) cannot be told apart
    same_as_declared = [m for m in LOGPROB_MODES
                        if abs_quantile([compare_logprobs(name_0=mode, lp_0=ref[mode], name_1=m,
                                                          lp_1=ref[m]).diffs], gate.quantile) <= atol]
    matching = dist.matching
    worst = compare_logprobs(name_0=x, lp_0=lp, name_1=mode, lp_1=ref[mode]).max_abs
    passed = mode in matching and worst <= gate.max_atol
    dists = ", ".join(f"{m} {d:.3g}" for m, d in dist.distances.items()) + \
        ("" if gate.quantile >= 1.0 else f" ({gate.label}; max to declared {worst:.3g}, cap {gate.max_atol:g})")
    if mode in matching and not passed:
        detail = f"declared {mode}: one token {worst:.3g} away, beyond the cap {gate.max_atol:g}; distances {dists}"
    elif passed:
        detected = "/".join(matching)
        note = f" (indistinguishable here: {'/'.join(same_as_declared)})" if len(same_as_declared) > 1 else ""
        detail = f"declared {mode}, detected {detected}{note}; distances {dists}"
    elif matching:
        detail = (f"declared {mode} but the logprobs are {'/'.join(matching)} "
                  f"(e.g. processed labelled raw); distances {dists}")
    else:
        detail = (f"declared {mode} but no mode matches within {atol:g} (nearest {dist.nearest}): e.g. "
                  f"temperature applied twice, a shifted alignment or other weights; distances {dists}")
    return verdict(check, case.id, subject(x), metric=metric, value=dist.distances[mode], threshold=atol,
                   passed=passed, detail=detail,
                   data={"declared": mode, "detected": matching, "nearest": dist.nearest,
                         "distances": dist.distances, "indistinguishable": same_as_declared,
                         "n_tokens": len(lp), "max_abs_dlogp": worst, "quantile": gate.quantile})


_OFF = SamplingSpec()  # every field at its default: the value that leaves the logits alone


def modes_coincide(case: Case, mode_a: str, mode_b: str) -> bool:
    """Whether two logprob modes are the same numbers under the case's sampling: always when
    greedy; temperature = processed without truncation, penalties or bias; raw = temperature at T=1."""
    sp = case.sampling
    if mode_a == mode_b or sp.greedy:
        return True
    # processed = temperature when every field the reference applies besides temperature is off
    untruncated = all(getattr(sp, f) == getattr(_OFF, f) for f in acting("filter", "logits"))
    pair = {mode_a, mode_b}
    if pair == {"temperature", "processed"}:
        return untruncated
    if pair == {"raw", "temperature"}:
        return sp.temperature == 1.0
    return sp.temperature == 1.0 and untruncated  # raw vs processed


_comparable = modes_coincide


@check("replay", section="trainer",
       units=SCORER_SOURCE_PAIRS, metric=Gate.metric_of("replay"), tolerances={"logprob_atol": 1e-4, **GATE},
       summary="forced-token replay: engine B's get_per_token_logps of backend A's completion equals A's own logprobs "
               "where the modes coincide (greedy, or the same mode) and the reference's score of the same tokens",
       measures="max \\|dlogp\\| of B's `get_per_token_logps` of A's tokens vs the reference's score (always) and "
                "vs A's own logprobs (where the modes coincide)",
       fails="a broken or misaligned score path")
def replay(ctx: RunData, case: Case, b: str, a: str) -> Verdict:
    """Forced-token replay: engine B's get_per_token_logps of A's completion equals A's own
    generate logprobs where the modes agree (greedy, or the same mode), and the reference's score
    of the same tokens in B's scoring mode always."""
    check = "replay"
    gate = Gate.of(case, check)
    metric = gate.metric
    gens = ctx.gens_of(a, case)
    replays = ctx.scores_of(b, case, a)
    refs = ctx.scores_of(REFERENCE, case, a) if ctx.has_reference else None
    vs_src, vs_ref = Worst(), Worst()
    skipped_src = set()
    for key, rec in sorted(gens.items()):
        where = fmt_keys(key)
        s = replays.get(key)
        if s is None:
            vs_ref.problems.append(f"{where}: {b} has no score of it")
            continue
        if list(s.completion_ids) != list(rec.completion_ids):
            vs_ref.problems.append(f"{where}: {b} scored other tokens than {a} generated")
            continue
        if refs is not None:
            r = refs.get(key)
            if r is None:
                vs_ref.problems.append(f"{where}: the reference has no score of it")
            else:
                vs_ref.add(where, compare_logprobs(name_0=f"{b} score ({s.logprob_mode})", lp_0=s.logprobs,
                                                   name_1=f"reference {s.logprob_mode}",
                                                   lp_1=truth(r, s.logprob_mode, a)))
        if rec.completion_logprobs is None:
            skipped_src.add(f"{a} returned no logprobs")
        elif _comparable(case, rec.logprob_mode, s.logprob_mode):
            vs_src.add(where, compare_logprobs(name_0=f"{b} score ({s.logprob_mode})", lp_0=s.logprobs,
                                               name_1=f"{a} generate ({rec.logprob_mode})",
                                               lp_1=rec.completion_logprobs))
        else:
            skipped_src.add(f"{a} generates {rec.logprob_mode} logprobs, {b} scores {s.logprob_mode}: "
                            f"compared with the reference only")
    if not vs_ref.per and not vs_src.per and not vs_ref.problems and not vs_src.problems:
        raise Unavailable("skipped", "; ".join(sorted(skipped_src)) or "nothing comparable")
    sides = [w for w in (vs_ref, vs_src) if w.per or w.problems]
    value = max(w.stat(gate) for w in sides)
    passed = all(w.judged(gate) for w in sides)
    parts = [f"{b} replaying {a}'s tokens"]
    if vs_ref.per or vs_ref.problems:
        parts.append(f"vs reference: {vs_ref.detail(gate)}")
    if vs_src.per or vs_src.problems:
        parts.append(f"vs {a}'s own logprobs: {vs_src.detail(gate)}")
    parts += sorted(skipped_src)
    return verdict(check, case.id, [b, a], metric=metric, value=value, threshold=gate.atol, passed=passed,
                   detail="; ".join(parts),
                   data={"vs_reference": vs_ref.data(), "vs_source": vs_src.data(), "notes": sorted(skipped_src)})


@check("self_consistency", section="trainer", units=EACH_BACKEND, metric=Gate.metric_of("self_consistency"),
       tolerances={"logprob_atol": 1e-4, **GATE},
       summary="a backend's get_per_token_logps of its own completion equals the logprobs its generate returned "
               "where the modes coincide (skipped, with the reason, where they cannot); k3 reported",
       measures="max \\|dlogp\\| between its score of its own completion and its generate logprobs (k3 in `data`)",
       fails="generate and score paths disagree")
def self_consistency(ctx: RunData, case: Case, x: str) -> Verdict:
    """A backend's get_per_token_logps of its own completion equals what its generate returned,
    where the modes are comparable (greedy, or it generates in the mode it scores in). Also
    reports SGLang's k3 self-consistency KL."""
    check = "self_consistency"
    gate = Gate.of(case, check)
    metric = gate.metric
    gens = ctx.gens_of(x, case)
    scores = ctx.scores_of(x, case, x)
    w, gen_lp, score_lp, notes = Worst(), [], [], set()
    for key, rec in sorted(gens.items()):
        where = fmt_keys(key)
        s = scores.get(key)
        if s is None:
            w.problems.append(f"{where}: {x} has no score of its own completion")
            continue
        if rec.completion_logprobs is None:
            w.problems.append(f"{where}: {x} returned no logprobs from generate")
            continue
        if not _comparable(case, rec.logprob_mode, s.logprob_mode):
            notes.add(f"{x} generates {rec.logprob_mode} logprobs at T={case.sampling.temperature:g} but scores "
                      f"{s.logprob_mode}: not comparable (completion_logprobs and replay check both against "
                      f"the reference)")
            continue
        c = compare_logprobs(name_0=f"{x} score", lp_0=s.logprobs, name_1=f"{x} generate",
                             lp_1=rec.completion_logprobs)
        w.add(where, c)
        if not c.problem:
            gen_lp.append(list(rec.completion_logprobs))
            score_lp.append(list(s.logprobs))
    if not w.per and not w.problems:
        raise Unavailable("skipped", "; ".join(sorted(notes)) or "nothing to compare")
    k3 = k3_kl(rollout_name=f"{x} generate", rollout=gen_lp, trainer_name=f"{x} score",
               trainer=score_lp) if gen_lp else None
    return verdict(check, case.id, [x], metric=metric, value=w.stat(gate), threshold=gate.atol,
                   passed=w.judged(gate), detail=w.detail(gate),
                   data=w.data() | {"k3": k3, "notes": sorted(notes)})
