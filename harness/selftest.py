"""`parity selftest`: prove the checks catch known defects in real engines' records, and stay quiet on a clean run.

    parity selftest                                  # on the committed golden run (golden/<class>/)
    parity selftest --run reports/latest             # on another clean recorded run
    parity selftest --out reports/latest             # selftest.json next to that run's report

What it does, all in the driver venv, on copies in a temporary directory:

1. **Clean run, 6 comparisons.** The base run (real engines' records) is compared as recorded,
   then 5 times more with every engine's logprobs (generate: completion and prompt; score phase)
   moved by independent deterministic Gaussian noise of sd 2e-6 (seeds 1..5), the size of the
   float32-vs-float64 differences measured on real engines (max 4.8e-6, docs/checks.md). Re-comparing
   identical records 5 times would prove nothing (compare is deterministic); the noisy copies
   show that no threshold sits on the edge of real float32 jitter. Every comparison must give no
   `fail` and no `error` verdict. The smallest headroom (threshold / value) is reported.
2. **Defects.** Each defect is injected into a copy, into one engine's records at a time (every
   engine of the run, by default), the way a real engine with that defect would have produced
   them (harness.checks.inject, plus the injectors below), and `compare_run` runs every check. A
   check *detects* a defect when one of its verdicts naming that engine fails and did not fail on
   the clean run. The defect is *caught* when every expected check detects it.

It prints the detection matrix (defect @ engine x check: caught / MISSED / also / .), writes
`selftest.json` (docs/report.md's shape, plus the clean runs) into `--out`, and exits 0 only
when every defect is caught by its expected checks and the clean run raised no alarm; 1
otherwise (including a defect that could not be injected into this run); 2 on a harness error.

Two defects need the model (run by the reference's interpreter, `python -m harness.selftest
derive RUN OUT.json`, stored as `derived.json` in the golden directory so the self-test runs
without torch): the temperature applied twice (each engine's sampled completions rescored at
T^2) and top-k ignored (each engine's top-k completions re-drawn without the top-k filter from
the first position where that admits a token the filter excludes).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.checks import inject
from harness.records import reference_fields
from harness.rundir import REFERENCE, read_manifest_dict, write_manifest
from harness.verdict import OUTCOMES

SELFTEST_SCHEMA_VERSION = 1
CLEAN_REPEATS = 5
CLEAN_NOISE = 2e-6  # float32-sized: engines vs the float64 reference measured at max 4.8e-6
ALARM = ("fail", "error")


# ---------------------------------------------------------------- the defects


def _t2(run_dir: Path, backend: str, derived: dict) -> str:
    values = (derived.get("temperature_twice") or {}).get(backend)
    if not values:
        raise LookupError(f"no temperature-applied-twice values for {backend} in derived.json "
                          f"(`python -m harness.selftest derive` in the reference's interpreter)")
    return inject.inject_temperature_twice(run_dir, backend, values)


def inject_reordered_samples(run_dir: Path, backend: str) -> str:
    """n > 1: the engine's samples come back sample-major (p0s0, p1s0, p0s1, ...) instead of
    grouped by prompt, and are recorded in that order."""
    files = inject.load(run_dir)
    cases = {c.id: c for c in inject._suite(run_dir).cases}
    rows = files[f"{backend}.generate.jsonl"]
    n = 0
    for cid, case in cases.items():
        if case.sampling.n < 2 or len(case.prompts) < 2:
            continue
        idx = [i for i, r in enumerate(rows) if r["kind"] == "generation" and r["key"]["case_id"] == cid
               and r["key"]["variant"] == "main"]
        if len(idx) < 4:
            continue
        recs = [rows[i] for i in idx]
        new = sorted(recs, key=lambda r: (r["key"]["sample_index"], r["key"]["prompt_index"]))
        if [id(r) for r in new] == [id(r) for r in recs]:
            continue
        for i, r in zip(idx, new):
            rows[i] = r
        n += len(recs)
    if not n:
        raise LookupError(f"{backend} has no n > 1 case with two prompts")
    inject.save(run_dir, files)
    return f"{n} samples of {backend} recorded sample-major"


def inject_topk_ignored(run_dir: Path, backend: str, derived: dict) -> str:
    """Sampling without the top-k filter: the completions the model-derived values re-drew (the
    first position where the unfiltered distribution admits a token top-k excludes takes that
    token, the rest is drawn without top-k), with the logprobs such an engine reports in its
    declared mode, and every score of those tokens replaced to match."""
    repl = (derived.get("topk_ignored") or {}).get(backend)
    if not repl:
        raise LookupError(f"no top-k-ignored completions for {backend} in derived.json (no sampled top-k case, "
                          f"or no position where ignoring top-k admits another token)")
    files = inject.load(run_dir)
    n = 0
    for r in files[f"{backend}.generate.jsonl"]:
        if r["kind"] != "generation":
            continue
        k = "/".join(map(str, inject._k(r)))
        if k not in repl or r["key"]["variant"].startswith("alone-"):
            continue
        d = repl[k]
        mode = r["logprob_mode"]
        r["completion_ids"] = list(d["completion_ids"])
        r["completion_logprobs"] = list(d["engine"][mode])
        if r.get("completion_top") is not None:
            r["completion_top"] = copy.deepcopy(d["engine_top"][mode])
        r["finish_reason"], r["stop_reason"], r["text"] = d["finish_reason"], d.get("stop_reason"), d.get("text", "")
        n += 1
    for s in inject._scores(files, source=backend):
        k = "/".join(map(str, inject._k(s)))
        if k not in repl:
            continue
        d = repl[k]
        s["completion_ids"] = list(d["completion_ids"])
        if s["backend"] == REFERENCE:  # the derived values are all the reference knows of the new tokens
            s.update(reference_fields())
            s["by_mode"] = {m: list(v) for m, v in d[REFERENCE].items()}
            s["logprobs"] = list(d[REFERENCE][s["logprob_mode"]])
        else:  # an engine's teacher-forced score of those tokens: the exact value stands in for its float32 one
            s["logprobs"] = list(d[REFERENCE]["raw" if s["logprob_mode"] == "raw" else s["logprob_mode"]])
        if s.get("top") is not None:
            s["top"] = copy.deepcopy(d["top_raw"])
    if not n:
        raise LookupError(f"{backend}'s records have none of the completions derived.json re-drew")
    inject.save(run_dir, files)
    positions = sorted({d["position"] for d in repl.values()})
    return f"{n} top-k completions of {backend} drawn without top-k (first excluded token at positions {positions})"


@dataclass(frozen=True)
class Defect:
    name: str
    description: str
    expected: Callable[[dict], list[str]]  # target's declared modes (case id -> mode) -> checks that must catch it
    inject: Callable[[Path, str, dict], str]
    core: bool = True  # one of the core defect classes (the others are extra coverage)
    #: needs engine records of the rollout surface (variant tunix, parameters captured as sent): a base run
    #: recorded before they existed (an older golden) cannot express it, and says so
    needs_rollout: bool = False


def _always(*checks: str) -> Callable[[dict], list[str]]:
    return lambda modes: list(checks)


def _topk_expected(modes: dict) -> list[str]:
    """A sampled token outside the top-k has processed logprob -inf under the reference: caught by
    sampling_support whatever mode the engine reports its logprobs in."""
    return ["sampling_support"]


DEFECTS: list[Defect] = [
    Defect("shifted-logprobs", "completion logprobs one position late (logprob i is token i-1's)",
           _always("completion_logprobs"), lambda d, b, dv: inject.inject_shifted_logprobs(d, b)),
    Defect("temperature-twice", "sampled logprobs computed at T^2 (logits divided by T twice; rescored by the model)",
           _always("logprob_mode"), _t2),
    Defect("processed-as-raw", "processed logprobs declared raw (processed vs raw swapped)",
           _always("logprob_mode"), lambda d, b, dv: inject.inject_relabelled(d, b, "processed", "raw")),
    Defect("eos-dropped", "the EOS/stop token that ended a completion dropped from ids and logprobs",
           _always("eos_policy"), lambda d, b, dv: inject.inject_dropped_eos(d, b)),
    Defect("topk-ignored", "top-k not applied: samples outside the top-k support (re-drawn by the model)",
           _topk_expected, inject_topk_ignored),
    Defect("stale-weights", "update_params had no effect: logprobs of the other weight set",
           _always("weight_update"), lambda d, b, dv: inject.inject_stale_weights(d, b)),
    Defect("samples-duplicated", "n > 1: every sample a copy of sample 0 (one seed shared)",
           _always("n_samples"), lambda d, b, dv: inject.inject_duplicate_samples(d, b)),
    Defect("samples-reordered", "n > 1: samples returned sample-major, not grouped by prompt",
           _always("n_samples"), lambda d, b, dv: inject_reordered_samples(d, b)),
    Defect("seed-ignored", "a repeat with the same seed draws other samples",
           _always("seed_determinism"), lambda d, b, dv: inject.inject_seed_ignored(d, b)),
    Defect("truncated", "'length' completions cut 2 tokens short",
           _always("eos_policy"), lambda d, b, dv: inject.inject_truncated(d, b)),
    Defect("prompt-logprobs-no-leading-none", "prompt logprobs without the leading None",
           _always("prompt_logprobs"), lambda d, b, dv: inject.inject_missing_leading_none(d, b)),
    # extra coverage beyond the core classes
    Defect("batch-dependent", "a prompt alone gives logprobs 1e-3 off the batched run",
           _always("batch_invariance"), lambda d, b, dv: inject.inject_batch_dependent(d, b), core=False),
    Defect("greedy-outside-topk", "a greedy step takes a token outside the top-k",
           _always("greedy_tokens"), lambda d, b, dv: inject.inject_token_swap(d, b, -1), core=False),
    Defect("other-tokenization", "another prompt tokenization in the engine's venv",
           _always("prompt_ids"), lambda d, b, dv: inject.inject_prompt_ids(d, b), core=False),
    Defect("score-path-shifted", "get_per_token_logps one position late",
           _always("replay", "self_consistency"), lambda d, b, dv: inject.inject_replay_shift(d, b), core=False),
    Defect("noise-reused", "a seeded sampler reusing one random number at every position (keyed by the seed, not "
                           "(seed, position)): each sequence's PIT intervals all hold one uniform",
           _always("sampling_sequence"), lambda d, b, dv: inject.inject_noise_reused(d, b), core=False),
    # the rollout surface and the parameters sent (records of variant tunix / rule-*, native_params as sent)
    Defect("row-seeds-shared", "every row of a seeded tunix batch sent the batch seed (a GRPO group collapses)",
           _always("params_sent", "seed_rule"), lambda d, b, dv: inject.inject_row_seeds_shared(d, b),
           core=False, needs_rollout=True),
    Defect("samples-reversed", "n > 1: sample j is the draw of sample n-1-j's seed",
           _always("seed_rule"), lambda d, b, dv: inject.inject_samples_reversed(d, b), core=False,
           needs_rollout=True),
    Defect("eos-id-is-pad", "the rollout's eos_id() returns its pad id",
           _always("tunix_surface", "rollout_contract_pad_eos"), lambda d, b, dv: inject.inject_eos_id_is_pad(d, b),
           core=False, needs_rollout=True),
    Defect("top-k-not-sent", "top_k not sent to the engine", _always("params_sent"),
           lambda d, b, dv: inject.inject_field_dropped(d, b, "top_k"), core=False, needs_rollout=True),
    Defect("top-p-not-sent", "top_p not sent to the engine", _always("params_sent"),
           lambda d, b, dv: inject.inject_field_dropped(d, b, "top_p"), core=False, needs_rollout=True),
    Defect("min-p-not-sent", "min_p not sent to the engine", _always("params_sent"),
           lambda d, b, dv: inject.inject_field_dropped(d, b, "min_p"), core=False, needs_rollout=True),
    Defect("one-default-seed", "every unseeded request sent one default seed", _always("params_sent"),
           lambda d, b, dv: inject.inject_default_seed(d, b), core=False, needs_rollout=True),
]


def has_rollout_records(run_dir: Path) -> bool:
    """Whether the run's engines recorded through their tunix surface with the parameters they sent."""
    files = inject.load(run_dir)
    return any(r.get("kind") == "generation" and r.get("native_params_source") == "sent"
               for name, rows in files.items() if name.endswith(".generate.jsonl") for r in rows)


# ---------------------------------------------------------------- the base run


class SelftestError(RuntimeError):
    """The self-test could not run (no base run, an unreadable one): exit 2."""


def prepare_base(source: Path, dest: Path) -> dict:
    """Copy a run (or golden) directory's records and run.json into dest, with run.json's suite
    pointing at a suite file that exists here; returns {'suite': path, 'derived': dict}."""
    source = Path(source)
    if not (source / "records").is_dir():
        raise SelftestError(f"{source}: no records/ directory: not a run or golden directory")
    dest.mkdir(parents=True)
    shutil.copytree(source / "records", dest / "records")
    manifest = read_manifest_dict(source)
    root = Path(__file__).resolve().parent.parent
    candidates = [source / "suite.yaml"]
    if manifest.get("suite"):
        s = Path(manifest["suite"])
        candidates += [s if s.is_absolute() else source / s, root / "cases" / s.name]
    candidates.append(root / "cases" / "default.yaml")
    suite = next(c for c in candidates if c.is_file())
    if not manifest:
        backends = sorted({p.name.split(".")[0] for p in (dest / "records").glob("*.jsonl")},
                          key=lambda b: (b != REFERENCE, b))
        inject.write_manifest(dest, backends, str(suite))
    else:
        manifest["suite"] = str(suite.resolve())
        write_manifest(dest, manifest)
    derived_path = source / "derived.json"
    derived = json.loads(derived_path.read_text()) if derived_path.exists() else {}
    return {"suite": str(suite.resolve()), "derived": derived, "manifest": manifest}


def engines_of(run_dir: Path) -> list[str]:
    files = inject.load(run_dir)
    return [n.split(".")[0] for n in sorted(files) if n.endswith(".generate.jsonl") and n.split(".")[0] != REFERENCE
            and any(r["kind"] == "generation" for r in files[n])]


def declared_modes(run_dir: Path, backend: str) -> dict:
    """case id -> the logprob mode the backend declares there; '_topk_cases' -> sampled top-k cases."""
    files = inject.load(run_dir)
    cases = {c.id: c for c in inject._suite(run_dir).cases}
    out: dict = {}
    for r in files.get(f"{backend}.generate.jsonl", []):
        if r["kind"] == "generation":
            out.setdefault(r["key"]["case_id"], r["logprob_mode"])
    out["_topk_cases"] = tuple(c.id for c in cases.values() if not c.sampling.greedy and c.sampling.top_k is not None)
    return out


def jitter_engines(run_dir: Path, seed: int, scale: float = CLEAN_NOISE) -> int:
    """Every engine's logprobs (generate completion and prompt, score phase) plus independent
    deterministic noise; the reference, the exact truth, is left as it is. Returns values moved."""
    files = inject.load(run_dir)
    n = 0
    for name, rows in files.items():
        backend = name.split(".")[0]
        if backend == REFERENCE:
            continue
        for r in rows:
            if r["kind"] not in ("generation", "score"):
                continue
            k = r["key"]
            tag = f"clean{seed}/{name}/{r.get('source_backend')}/{k['case_id']}/{k['prompt_index']}/" \
                  f"{k['sample_index']}/{k['variant']}"
            if r["kind"] == "generation":
                r["completion_logprobs"] = inject._jitter(r["completion_logprobs"], tag, scale)
                r["prompt_logprobs"] = inject._jitter(r.get("prompt_logprobs"), tag + "/prompt", scale)
                n += len(r["completion_logprobs"] or []) + len(r.get("prompt_logprobs") or [])
            else:
                r["logprobs"] = inject._jitter(r["logprobs"], tag, scale)
                n += len(r["logprobs"])
    inject.save(run_dir, files)
    return n


# ---------------------------------------------------------------- running it


def _compare(run_dir: Path, suite: str):
    from harness.compare import compare_run

    return compare_run(run_dir, suite)


def detection_headroom(v) -> float | None:
    """How far past its threshold a failing verdict is: value/threshold, or threshold/value for a
    p-value (fails below); None for a count over a threshold of 0 (any count fails)."""
    if v.value is None or v.threshold is None:
        return None
    if _is_p_value(v.metric):
        return v.threshold / v.value if v.value > 0 else math.inf
    if v.threshold > 0:
        return v.value / v.threshold
    return None


def profile_of(run_dir: Path) -> str:
    from harness.checks.data import RunData

    return RunData.load(run_dir).profile.dtype


def _is_p_value(metric: str) -> bool:
    return metric.endswith("p_value") or metric.endswith("_p")


def _headroom(verdicts) -> tuple[float, str]:
    """The smallest distance to the threshold over passing verdicts with a positive numeric threshold:
    threshold/value, or value/threshold for a p-value (it passes above alpha)."""
    best, where = math.inf, ""
    for v in verdicts:
        if v.verdict != "pass" or v.value is None or not v.threshold or v.value <= 0:
            continue
        h = v.value / v.threshold if _is_p_value(v.metric) else v.threshold / v.value
        if h < best:
            best, where = h, f"{v.test_id} {v.metric} {v.value:.3g} vs {v.threshold:g}"
    return best, where


def run_selftest(source: Path, targets: list[str] | None = None, defects: list[str] | None = None,
                 repeats: int = CLEAN_REPEATS, noise: float = CLEAN_NOISE, workdir: Path | None = None,
                 log=print, derive_missing: bool = True) -> dict:
    """The whole self-test; returns the selftest.json payload (`passed` says whether it passed)."""
    t_start = time.monotonic()
    tmp_owner = None
    if workdir is None:
        tmp_owner = tempfile.TemporaryDirectory(prefix="parity-selftest-")
        workdir = Path(tmp_owner.name)
    workdir = Path(workdir)
    try:
        base = workdir / "base"
        info = prepare_base(Path(source), base)
        suite, derived = info["suite"], info["derived"]
        if not derived and derive_missing:  # a run directory: the model-derived values by the reference's python
            from harness.golden import GoldenError, derive

            try:
                derive(base, workdir / "derived.json")
                derived = json.loads((workdir / "derived.json").read_text())
                log(f"[selftest] computed the model-derived values for {source} with the reference's interpreter")
            except GoldenError as e:
                log(f"[selftest] no derived.json in {source} and none computed: {str(e).splitlines()[0]}")
        engines = engines_of(base)
        targets = targets or engines
        unknown = [t for t in targets if t not in engines]
        if unknown:
            raise SelftestError(f"--targets {unknown}: not an engine of {source} (engines: {engines})")
        if not targets:
            raise SelftestError(f"{source} has no engine records (only the reference?): nothing to inject into")
        chosen = [d for d in DEFECTS if defects is None or d.name in defects]
        if defects is not None and len(chosen) != len(set(defects)):
            raise SelftestError(f"unknown defect in {defects}; known: {[d.name for d in DEFECTS]}")
        inexpressible = []
        if not has_rollout_records(base):
            inexpressible = [d.name for d in chosen if d.needs_rollout]
            chosen = [d for d in chosen if not d.needs_rollout]
            if inexpressible:
                log(f"[selftest] not run: {', '.join(inexpressible)} (the base run was recorded without the rollout "
                    "surface's records: re-record it, e.g. `parity golden update`)")

        # ---- clean
        clean = []
        for rep in range(repeats + 1):
            d = workdir / f"clean-{rep}"
            shutil.copytree(base, d)
            moved = jitter_engines(d, rep, noise) if rep else 0
            vs = _compare(d, suite)
            alarms = [v for v in vs if v.verdict in ALARM]
            h, hw = _headroom(vs)
            clean.append({"repetition": rep, "noise_sd": noise if rep else 0.0, "noise_seed": rep if rep else None,
                          "values_moved": moved, "verdicts": len(vs),
                          "counts": {o: sum(v.verdict == o for v in vs) for o in OUTCOMES},
                          "alarms": [{"test_id": v.test_id, "verdict": v.verdict, "detail": v.detail[:300]}
                                     for v in alarms],
                          "min_headroom": h if math.isfinite(h) else None, "min_headroom_at": hw})
            log(f"[selftest] clean {'as recorded' if not rep else f'+ noise sd {noise:g} seed {rep}'}: "
                f"{len(vs)} verdicts, {len(alarms)} alarms" + (f"; smallest headroom {h:.3g}x ({hw})" if hw else ""))
            for a in alarms[:8]:
                log(f"    ALARM {a.test_id}: {a.verdict}: {a.detail[:200]}")
            if rep:
                shutil.rmtree(d)
            else:
                base_verdicts = vs
        def vkey(v) -> tuple:
            return v.check, v.case, tuple(v.backends), v.metric

        base_alarms = {vkey(v) for v in base_verdicts if v.verdict in ALARM}
        checks_seen = []
        for v in base_verdicts:
            if v.check not in checks_seen:
                checks_seen.append(v.check)

        # ---- defects
        faults = []
        for defect in chosen:
            for target in targets:
                d = workdir / f"{defect.name}@{target}"
                shutil.copytree(base, d)
                expected = defect.expected(declared_modes(d, target))
                row = {"name": f"{defect.name}@{target}", "defect": defect.name, "target": target,
                       "description": defect.description, "core": defect.core, "expected": expected,
                       "detected": [], "errored": [], "injected": None, "not_injectable": None, "evidence": []}
                try:
                    row["injected"] = defect.inject(d, target, derived)
                except LookupError as e:
                    row["not_injectable"] = str(e)
                    row["caught"] = False
                    faults.append(row)
                    log(f"[selftest] {row['name']}: NOT INJECTABLE: {e}")
                    shutil.rmtree(d)
                    continue
                vs = _compare(d, suite)
                # what the defect changed: alarms naming the target that the clean run did not raise
                mine = [v for v in vs if target in v.backends and vkey(v) not in base_alarms]
                for v in mine:
                    if v.verdict == "fail" and v.check not in row["detected"]:
                        row["detected"].append(v.check)
                    if v.verdict == "error" and v.check not in row["errored"]:
                        row["errored"].append(v.check)
                for c in row["detected"] + row["errored"]:
                    if c not in checks_seen:
                        checks_seen.append(c)
                for c in expected:
                    hit = next((v for v in mine if v.check == c and v.verdict == "fail"), None)
                    # a check the dtype's profile measures without gating for this engine cannot catch it here
                    shown = next((v for v in vs if v.check == c and target in v.backends and v.verdict == "measured"),
                                 None) if hit is None else None
                    row["evidence"].append({"check": c, "caught": hit is not None, "gated": shown is None,
                                            "metric": hit.metric if hit else None,
                                            "verdict": (hit or shown).test_id if (hit or shown) else None,
                                            "detail": (hit.detail[:300] if hit else shown.detail[:300] if shown else
                                                       f"no failing {c} verdict naming {target}"),
                                            "value": hit.value if hit else None,
                                            "threshold": hit.threshold if hit else None,
                                            "headroom": detection_headroom(hit) if hit else None})
                gated = [e for e in row["evidence"] if e["gated"]]
                # every gated expected check caught it; None: no expected check is gated for this engine
                row["caught"] = all(e["caught"] for e in gated) if gated else None
                heads = [e["headroom"] for e in gated if e["headroom"] is not None]
                row["headroom"] = min(heads) if heads else None
                faults.append(row)
                missed = [e["check"] for e in gated if not e["caught"]]
                state = ("caught" + (f" (headroom {row['headroom']:.3g}x)" if row["headroom"] else "")
                         if row["caught"] else "NOT GATED at this dtype" if row["caught"] is None
                         else "MISSED by " + ", ".join(missed))
                log(f"[selftest] {row['name']}: {state} "
                    f"({row['injected']}); failing: {', '.join(row['detected']) or 'none'}"
                    + (f"; errors: {', '.join(row['errored'])}" if row["errored"] else ""))
                shutil.rmtree(d)
        from harness.checks.catalog import CATALOG

        order = ["backend_ran", *CATALOG]
        checks = sorted(checks_seen, key=lambda c: (order.index(c) if c in order else len(order), c))
        for f in faults:
            for c in f["expected"]:
                if c not in checks:
                    checks.append(c)
        clean_alarms = sum(len(c["alarms"]) for c in clean)
        # a defect class must be caught wherever a check is gated for it, and somewhere
        classes = {f["defect"] for f in faults}
        uncaught = sorted(c for c in classes if not any(f["caught"] for f in faults if f["defect"] == c))
        passed = clean_alarms == 0 and all(f["caught"] is not False for f in faults) and not uncaught
        heads = [(f["headroom"], f["name"]) for f in faults if f.get("headroom")]
        detect = min(heads) if heads else None
        heads = [c["min_headroom"] for c in clean if c["min_headroom"] is not None]
        note = (f"Defects injected into copies of {info['manifest'].get('run_id') or Path(source).name} "
                f"(real engines: {', '.join(engines)}), one engine at a time. Clean run: compared as recorded and "
                f"{repeats}x with engine logprobs + Gaussian noise sd {noise:g} (seeds 1..{repeats}): "
                f"{clean_alarms} alarms" + (f", smallest headroom {min(heads):.3g}x" if heads else "") + "."
                + (f" Not run (the base run has no rollout-surface records): {', '.join(inexpressible)}."
                   if inexpressible else ""))
        return {"schema_version": SELFTEST_SCHEMA_VERSION, "passed": passed, "checks": checks, "faults": faults,
                "profile": profile_of(base), "uncaught_classes": uncaught,
                "min_detection_headroom": list(detect) if detect else None,
                "note": note, "base": str(source), "suite": suite, "engines": engines, "targets": targets,
                "clean": {"repetitions": clean, "alarms": clean_alarms, "noise_sd": noise},
                "wall_s": round(time.monotonic() - t_start, 1),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    finally:
        if tmp_owner is not None:
            tmp_owner.cleanup()


def format_matrix(result: dict) -> str:
    checks = result["checks"]
    cols = {c: i + 1 for i, c in enumerate(checks)}
    width = max([len(f["name"]) for f in result["faults"]] + [10])
    head = " " * (width + 2) + "".join(f"{cols[c]:>4}" for c in checks) + "  result"
    lines = ["detection matrix: rows = defect @ engine it was injected into; columns = checks",
             "  C caught (expected, failed)   M MISSED (expected, did not fail)   + also failed   "
             "E errored   N measured, not gated at this dtype   . not involved; caught Nx: detection headroom "
             "(value/threshold)", head]
    for f in result["faults"]:
        cells = []
        for c in checks:
            exp, det, err = c in f["expected"], c in f["detected"], c in f["errored"]
            cells.append("C" if exp and det else "M" if exp else "+" if det else "E" if err else ".")
        ng = {e["check"] for e in f.get("evidence", []) if not e.get("gated", True)}
        cells = ["N" if c in ng else x for c, x in zip(checks, cells)]
        res = ("caught" + (f" {f['headroom']:.3g}x" if f.get("headroom") else "") if f["caught"]
               else "NOT GATED" if f["caught"] is None else "NOT INJECTABLE" if f.get("not_injectable") else "MISSED")
        lines.append(f"{f['name']:<{width}}  " + "".join(f"{x:>4}" for x in cells) + f"  {res}")
    lines.append("columns: " + ", ".join(f"{i} {c}" for c, i in cols.items()))
    bad = [f for f in result["faults"] if f["caught"] is False]
    for f in bad:
        why = f.get("not_injectable") or "; ".join(f"{e['check']}: {e['detail']}" for e in f["evidence"]
                                                     if not e["caught"])
        lines.append(f"  {f['name']}: {why}")
    c = result["clean"]
    lines.append(f"clean run: {len(c['repetitions'])} comparisons (as recorded + {len(c['repetitions']) - 1} with "
                 f"noise sd {c['noise_sd']:g}): {c['alarms']} alarms")
    n_ok = sum(bool(f["caught"]) for f in result["faults"])
    if result.get("min_detection_headroom"):
        h, where = result["min_detection_headroom"]
        lines.append(f"smallest detection headroom {h:.3g}x ({where}); tolerance profile {result.get('profile')}")
    if result.get("uncaught_classes"):
        lines.append(f"defect classes caught on no engine: {', '.join(result['uncaught_classes'])}")
    lines.append(f"selftest {'PASSED' if result['passed'] else 'FAILED'}: {n_ok}/{len(result['faults'])} defects "
                 f"caught, {c['alarms']} clean alarms ({result['wall_s']}s)")
    return "\n".join(lines)


def write_result(out_dir: Path, result: dict) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "selftest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- model-derived values (reference venv)


def _model_for(session: dict, ws: str):
    from harness.model import ModelRef, resolve

    m = (session.get("models") or {}).get(ws) or (session.get("model") if ws == "A" else None)
    if m and m.get("path") and Path(m["path"]).is_dir():
        return ModelRef(Path(m["path"]), m["content_hash"], m["name"])
    ref = resolve(None, ws)  # the embedded model, rebuilt bit-identically on any machine
    if m and m.get("content_hash") and m["content_hash"] != ref.content_hash:
        raise SelftestError(f"weight set {ws} ({m.get('name')}, {m['content_hash'][:12]}) is not on this machine "
                            f"and is not the embedded model ({ref.content_hash[:12]})")
    return ref


def derive_values(run_dir: Path) -> dict:
    """For every engine of the run: its sampled main completions' logprobs at T^2 (temperature
    applied twice), and its top-k completions re-drawn without top-k. Needs torch/transformers."""
    import numpy as np

    from harness.backends.reference import ReferenceRunner
    from harness.processing import apply_penalties, log_softmax, mode_logprobs
    from harness.rundir import read_run

    run_dir = Path(run_dir)
    suite = inject._suite(run_dir)
    cases = {c.id: c for c in suite.cases}
    recs = read_run(run_dir)
    session = next(r for r in recs if r.kind == "session" and r.backend == REFERENCE).model_dump(mode="json")
    engines = sorted({r.backend for r in recs if r.kind == "generation" and r.backend != REFERENCE})
    out: dict = {"schema_version": 1, "temperature_twice": {e: {} for e in engines},
                 "topk_ignored": {e: {} for e in engines}, "model": session.get("model", {}).get("content_hash")}
    runner = ReferenceRunner(_model_for(session, "A"))
    with runner:
        eos = set(runner._eos)

        def top5(dist: np.ndarray) -> dict[str, float]:
            best = np.argsort(-dist, kind="stable")[:5]
            return {str(int(t)): float(dist[t]) for t in best}

        for r in recs:
            c = cases.get(getattr(getattr(r, "key", None), "case_id", None))
            if r.kind != "generation" or r.backend == REFERENCE or r.key.variant != "main" or c is None \
                    or c.sampling.greedy or c.weights != "A" or r.key.case_hash != c.content_hash():
                continue
            key = f"{r.key.case_id}/{r.key.prompt_index}/{r.key.sample_index}"
            sp = c.sampling
            spec2 = sp.model_copy(update={"temperature": sp.temperature ** 2})
            s = runner.score([r.prompt_ids], [r.completion_ids], spec2)[0]
            out["temperature_twice"][r.backend][key] = {m: s.by_mode[m] for m in ("raw", "temperature", "processed")}
            if sp.top_k is None:
                continue
            # ---- top-k ignored: the defective sampler is the same spec without top_k
            loose = sp.model_copy(update={"top_k": None})
            prompt, comp = list(r.prompt_ids), list(r.completion_ids)
            logits = runner.logits(prompt + comp)
            pos, tok = None, None
            for i in range(len(comp)):
                row = logits[len(prompt) + i - 1]
                pen = apply_penalties(row, sp, prompt, comp[:i])
                good = mode_logprobs(row, sp, pen)["processed"]
                bad = mode_logprobs(row, loose, apply_penalties(row, loose, prompt, comp[:i]))["processed"]
                admitted = np.where(np.isfinite(bad) & ~np.isfinite(good))[0]
                if len(admitted):
                    pos, tok = i, int(admitted[np.argmax(bad[admitted])])
                    break
            if pos is None:
                continue
            rng = np.random.default_rng([sp.seed or 0, r.key.prompt_index, r.key.sample_index, 7])
            stops = set(sp.stop_token_ids) | (set() if sp.ignore_eos else eos)
            new = comp[:pos] + [tok]
            finish, stop_reason = ("stop", tok if tok in sp.stop_token_ids else None) if tok in stops else ("length", None)
            while finish == "length" and len(new) < sp.max_tokens:
                row = runner.logits(prompt + new)[-1]
                p = np.exp(mode_logprobs(row, loose, apply_penalties(row, loose, prompt, new))["processed"])
                t = int(rng.choice(len(p), p=p / p.sum()))
                new.append(t)
                if t in stops:
                    finish, stop_reason = "stop", (t if t in sp.stop_token_ids else None)
            full = runner.logits(prompt + new)
            ref = {"raw": [], "temperature": [], "processed": []}
            eng = {"raw": [], "temperature": [], "processed": []}
            eng_top = {"raw": [], "temperature": [], "processed": []}
            top_raw = []
            for i, t in enumerate(new):
                row = full[len(prompt) + i - 1]
                good = mode_logprobs(row, sp, apply_penalties(row, sp, prompt, new[:i]))
                bad = mode_logprobs(row, loose, apply_penalties(row, loose, prompt, new[:i]))
                for m in ref:
                    ref[m].append(float(good[m][t]))
                    eng[m].append(float(bad[m][t]))
                    eng_top[m].append(top5(bad[m]))
                top_raw.append(top5(log_softmax(row)))
            out["topk_ignored"][r.backend][key] = {
                "position": pos, "token": tok, "original_ids": comp, "completion_ids": new,
                "finish_reason": finish, "stop_reason": stop_reason,
                "text": runner._tok.decode(new, skip_special_tokens=False),
                "engine": eng, "engine_top": eng_top, REFERENCE: ref, "top_raw": top_raw}
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "derive":
        print("usage: python -m harness.selftest derive RUN_DIR OUT.json   (in the reference's interpreter)",
              file=sys.stderr)
        return 2
    run_dir, out = Path(argv[1]), Path(argv[2])
    with tempfile.TemporaryDirectory(prefix="parity-derive-") as tmp:
        base = Path(tmp) / "run"
        prepare_base(run_dir, base)  # run.json's suite resolved on this machine
        values = derive_values(base)
    out.write_text(json.dumps(values, separators=(",", ":")) + "\n")
    n_t2 = sum(len(v) for v in values["temperature_twice"].values())
    n_tk = sum(len(v) for v in values["topk_ignored"].values())
    print(f"derived: {n_t2} completions at T^2, {n_tk} top-k-ignored completions -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
