"""Synthetic engines and known defects, built from a real recorded run, to prove the checks catch them.

Nothing here is hand-typed: every value comes from a real run's records.

- `add_clones(run_dir, {"clone_processed": "processed", ...})` adds engines that behave
  exactly like a correct engine declaring that logprob mode: their tokens are the
  reference's, their completion logprobs the reference's exact values in that mode (plus
  optional deterministic float32-sized noise), their score phase the reference's raw score,
  and the reference's score of their tokens is the reference's own (same tokens). A clean
  run with clones must pass every check.
- `inject_<defect>(run_dir, backend, ...)` rewrites that backend's records in place (use a
  copy) the way a real engine with that defect would have produced them. Where the defect
  changes tokens (EOS dropped, truncation), every score record of those tokens is cut to
  match: teacher-forced logprobs of a prefix are the prefix of the logprobs.

Used by tests/test_checks.py and by `parity selftest`. The one value that needs the model
(logprobs with the temperature applied twice) comes from `python -m harness.checks.inject
t2 RUN_DIR OUT.json` run with the reference's interpreter.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from harness import rundir
from harness.records import reference_fields, upgrade
from harness.rundir import REFERENCE
from harness.suite import load_suite

# ---------------------------------------------------------------- raw record files


def _files(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / "records").glob("*.jsonl"))


def load(run_dir: Path) -> dict[str, list[dict]]:
    """file name -> records as dicts (the files' order kept), in the current record format (a version-1 file's
    records upgraded: harness.records.upgrade); `save` writes them so."""
    return {p.name: [upgrade(json.loads(line)) for line in p.read_text().splitlines() if line.strip()]
            for p in _files(run_dir)}


def save(run_dir: Path, files: dict[str, list[dict]]) -> None:
    d = Path(run_dir) / "records"
    d.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _k(r: dict) -> tuple:
    k = r["key"]
    return k["case_id"], k["prompt_index"], k["sample_index"]


def _gens(files, backend: str):
    return [r for r in files.get(f"{backend}.generate.jsonl", []) if r["kind"] == "generation"]


def _scores(files, scorer: str | None = None, source: str | None = None):
    out = []
    for name, rows in files.items():
        if not name.endswith(".score.jsonl"):
            continue
        out += [r for r in rows if r["kind"] == "score" and (scorer is None or r["backend"] == scorer)
                and (source is None or r["source_backend"] == source)]
    return out


def _ref_scores(files, source: str) -> dict[tuple, dict]:
    return {_k(r): r for r in _scores(files, REFERENCE, source)}


def write_manifest(run_dir: Path, backends: list[str], suite: str, failed: dict[tuple[str, str], int] | None = None):
    """A run.json like harness.run writes, every phase exit code 0 unless `failed` says otherwise."""
    failed = failed or {}
    m = rundir.read_manifest_dict(run_dir) | {"run_id": Path(run_dir).name, "suite": str(Path(suite).resolve()),
                                              "backends": backends}
    m["backend_status"] = {b: {"phases": {ph: {"exit_code": failed.get((b, ph), 0), "wall_s": 0.0,
                                               "log": f"logs/{b}.{ph}.log", "timed_out": False}
                                          for ph in ("generate", "score")}} for b in backends}
    rundir.write_manifest(run_dir, m)


def _noise(tag: str, n: int, scale: float) -> np.ndarray:
    if scale == 0.0 or n == 0:
        return np.zeros(n)
    seed = int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(0.0, scale, n)


def _jitter(values: list, tag: str, scale: float) -> list:
    if values is None:
        return None
    x = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    y = x + _noise(tag, len(x), scale)
    y[~np.isfinite(x)] = x[~np.isfinite(x)]
    return [None if v is None else float(w) for v, w in zip(values, y)]


# ---------------------------------------------------------------- clones


def add_clones(run_dir: Path, clones: dict[str, str], noise: float = 0.0, suite: str | None = None) -> None:
    """Add correct synthetic engines (name -> declared logprob mode) to a run with reference
    generate and score records; then every backend's score phase covers every backend's tokens."""
    files = load(run_dir)
    ref_gens = _gens(files, REFERENCE)
    ref_own = _ref_scores(files, REFERENCE)
    sessions = {ph: next(r for r in files[f"{REFERENCE}.{ph}.jsonl"] if r["kind"] == "session")
                for ph in ("generate", "score")}
    for name, mode in clones.items():
        gens = []
        for g in ref_gens:
            c = copy.deepcopy(g)
            c["backend"] = name
            c["logprob_mode"] = mode
            s = ref_own[_k(g)]
            assert s["completion_ids"] == g["completion_ids"], "reference variants differ: not deterministic?"
            tag = f"{name}/{'/'.join(map(str, _k(g)))}"
            c["completion_logprobs"] = _jitter(s["by_mode"][mode], tag, noise)
            c["prompt_logprobs"] = _jitter(g["prompt_logprobs"], tag + "/prompt", noise)
            c["native_params"] = {"clone_of": REFERENCE, "mode": mode}
            gens.append(c)
        # not the reference's float64: a clone reports no dtype of its own (its config still says what it copies)
        clone = {"backend": name, "logprob_mode": mode, "device": "synthetic clone", "versions": {"clone": "1"},
                 "dtype": None}
        files[f"{name}.generate.jsonl"] = [sessions["generate"] | clone] + gens
        files[f"{name}.score.jsonl"] = [sessions["score"] | clone]
    backends = [REFERENCE] + [b for b in rundir.read_manifest_dict(run_dir).get("backends", []) if b != REFERENCE]
    backends += [n for n in clones if n not in backends]
    # the reference scores every clone's tokens (identical to its own), every clone scores every backend's
    ref_file = files[f"{REFERENCE}.score.jsonl"]
    for name in clones:
        ref_file += [copy.deepcopy(r) | {"source_backend": name} for r in ref_own.values()]
    for scorer in clones:
        for source in backends:
            for r in (ref_own if source in clones else _ref_scores(files, source)).values():
                tag = f"{scorer}<-{source}/{'/'.join(map(str, _k(r)))}"
                files[f"{scorer}.score.jsonl"].append(
                    copy.deepcopy(r) | reference_fields() | {
                        "backend": scorer, "source_backend": source, "top": None,
                        "logprobs": _jitter(r["by_mode"]["raw"], tag, noise), "logprob_mode": "raw"})
    save(run_dir, files)
    write_manifest(run_dir, backends, suite or rundir.read_manifest_dict(run_dir).get("suite") or "cases/default.yaml")


# ---------------------------------------------------------------- defects
# Each returns a short description of what it changed (for messages), and raises
# LookupError when the run has nothing it could be injected into.


def _suite(run_dir: Path):
    return load_suite(rundir.read_manifest_dict(run_dir).get("suite") or "cases/default.yaml")


def _edit_gens(run_dir: Path, backend: str, fn, where=lambda case, rec: True) -> int:
    """Apply fn(case, rec) to the backend's generation records for which where(case, rec)."""
    files = load(run_dir)
    cases = {c.id: c for c in _suite(run_dir).cases}
    n = 0
    for r in files[f"{backend}.generate.jsonl"]:
        if r["kind"] == "generation" and r["key"]["case_id"] in cases and where(cases[r["key"]["case_id"]], r):
            fn(cases[r["key"]["case_id"]], r)
            n += 1
    if n == 0:
        raise LookupError(f"no generation record of {backend} to inject into")
    save(run_dir, files)
    return n


def inject_shifted_logprobs(run_dir: Path, backend: str) -> str:
    """Logprobs one position late: position i carries the logprob of token i-1 (the last prompt
    token's at i=0), the off-by-one of picking row r with the previous token (golden/worked_example.json)."""
    def fn(case, r):
        lp = r["completion_logprobs"]
        if lp:
            first = r["prompt_logprobs"][-1] if r.get("prompt_logprobs") and r["prompt_logprobs"][-1] is not None \
                else lp[0]
            r["completion_logprobs"] = [first] + lp[:-1]
    n = _edit_gens(run_dir, backend, fn, lambda c, r: len(r["completion_ids"]) > 1)
    return f"{n} completions of {backend} shifted by one position"


def inject_relabelled(run_dir: Path, backend: str, actual: str = "processed", declared: str = "raw") -> str:
    """Logprobs in mode `actual` while the records (and session) declare `declared`."""
    files = load(run_dir)
    ref = _ref_scores(files, backend)

    def fn(case, r):
        r["completion_logprobs"] = list(ref[_k(r)]["by_mode"][actual])
        r["logprob_mode"] = declared
    n = _edit_gens(run_dir, backend, fn,
                   lambda c, r: _k(r) in ref and ref[_k(r)]["completion_ids"] == r["completion_ids"])
    files = load(run_dir)
    for r in files[f"{backend}.generate.jsonl"]:
        if r["kind"] == "session":
            r["logprob_mode"] = declared
    save(run_dir, files)
    return f"{n} completions of {backend}: {actual} logprobs labelled {declared}"


def inject_temperature_twice(run_dir: Path, backend: str, t2: dict[str, dict[str, list[float]]]) -> str:
    """Sampled cases' logprobs computed at T^2 (logits divided by T twice), in the backend's own
    mode; `t2` is what `python -m harness.checks.inject t2` computed from the model."""
    def fn(case, r):
        k = "/".join(map(str, _k(r)))
        r["completion_logprobs"] = list(t2[k][r["logprob_mode"]])
    n = _edit_gens(run_dir, backend, fn, lambda c, r: "/".join(map(str, _k(r))) in t2 and not c.sampling.greedy)
    return f"{n} sampled completions of {backend} with the temperature applied twice"


def _cut_scores(files, source: str, key: tuple, n_keep: int) -> None:
    """Every score of `source`'s completion `key`, cut to its first n_keep tokens: every per-position value
    (the first-step distribution and the EOS ids are not per position: they stay)."""
    for s in _scores(files, source=source):
        if _k(s) == key:
            s["completion_ids"] = s["completion_ids"][:n_keep]
            s["logprobs"] = s["logprobs"][:n_keep]
            s["by_mode"] = {m: v[:n_keep] for m, v in s["by_mode"].items()}
            s["other_weights"] = {w: {m: v[:n_keep] for m, v in modes.items()}
                                  for w, modes in s.get("other_weights", {}).items()}
            if s.get("effects"):
                fx = s["effects"]
                fx["argmax"], fx["margin"] = fx["argmax"][:n_keep], fx["margin"][:n_keep]
                fx["without"] = {f: v[:n_keep] for f, v in fx.get("without", {}).items()}
            if s.get("sequence"):
                s["sequence"] = {f: v[:n_keep] for f, v in s["sequence"].items()}
            if s.get("top") is not None:
                s["top"] = s["top"][:n_keep]


def _cut(run_dir: Path, backend: str, select, n_drop: int) -> list[tuple]:
    files = load(run_dir)
    cut = []
    for r in files[f"{backend}.generate.jsonl"]:
        if r["kind"] != "generation" or not select(r):
            continue
        n_keep = len(r["completion_ids"]) - n_drop
        r["completion_ids"] = r["completion_ids"][:n_keep]
        if r["completion_logprobs"] is not None:
            r["completion_logprobs"] = r["completion_logprobs"][:n_keep]
        if r.get("completion_top") is not None:
            r["completion_top"] = r["completion_top"][:n_keep]
        if r["key"]["variant"] == "main":
            _cut_scores(files, backend, _k(r), n_keep)
        cut.append(_k(r))
    if not cut:
        raise LookupError(f"{backend} has no completion to cut")
    save(run_dir, files)
    return cut


def _scored_tokens(sc: dict) -> dict:
    """A copy of what a score record says about its tokens (everything but where it belongs)."""
    fields = {"completion_ids": [], "logprobs": [], "top": None, **reference_fields()}
    return {f: copy.deepcopy(sc.get(f, empty)) for f, empty in fields.items()}


def inject_dropped_eos(run_dir: Path, backend: str) -> str:
    """The EOS/stop token that ended a completion removed from its ids and logprobs (finish
    reason still 'stop'), as sglang-jax's skip_special_tokens does."""
    cut = _cut(run_dir, backend, lambda r: r["finish_reason"] == "stop" and r["completion_ids"], 1)
    return f"EOS dropped from {len(cut)} stop completions of {backend}"


def inject_truncated(run_dir: Path, backend: str, n_drop: int = 2) -> str:
    """'length' completions cut short by n_drop tokens (finish reason kept)."""
    cut = _cut(run_dir, backend, lambda r: r["finish_reason"] == "length" and len(r["completion_ids"]) > n_drop,
               n_drop)
    return f"{len(cut)} length completions of {backend} truncated by {n_drop}"


def inject_stale_weights(run_dir: Path, backend: str) -> str:
    """In cases that check weight_update, logprobs computed with the other weight set (the update
    did not take effect): the reference's other_weights[<other>][<mode>] of the same tokens."""
    files = load(run_dir)
    ref = _ref_scores(files, backend)

    def fn(case, r):
        other = "B" if case.weights == "A" else "A"
        r["completion_logprobs"] = list(ref[_k(r)]["other_weights"][other][r["logprob_mode"]])
    n = _edit_gens(run_dir, backend, fn, lambda c, r: "weight_update" in c.checks and _k(r) in ref
                   and bool(ref[_k(r)].get("other_weights")))
    return f"{n} completions of {backend} with stale weights"


def inject_missing_leading_none(run_dir: Path, backend: str) -> str:
    """Prompt logprobs without the leading None (one entry short, every value one position early)."""
    def fn(case, r):
        r["prompt_logprobs"] = r["prompt_logprobs"][1:]
    n = _edit_gens(run_dir, backend, fn, lambda c, r: bool(r.get("prompt_logprobs")))
    return f"{n} prompt logprob lists of {backend} lost their leading None"


def inject_duplicate_samples(run_dir: Path, backend: str) -> str:
    """n > 1: every sample a copy of sample 0 (one seed shared by the n samples, as sglang-jax's n=2)."""
    files = load(run_dir)
    gens = {(_k(r), r["key"]["variant"]): r for r in _gens(files, backend)}
    n = 0
    for (k, variant), r in gens.items():
        if k[2] >= 1 and ((k[0], k[1], 0), variant) in gens:
            src = gens[((k[0], k[1], 0), variant)]
            for f in ("completion_ids", "completion_logprobs", "completion_top", "finish_reason", "text"):
                r[f] = copy.deepcopy(src[f])
            if variant == "main":
                for s in _scores(files, source=backend):
                    if _k(s) == k:
                        s0 = next(t for t in _scores(files, s["backend"], backend) if _k(t) == (k[0], k[1], 0))
                        s.update(_scored_tokens(s0))
            n += 1
    if not n:
        raise LookupError(f"{backend} has no n > 1 case")
    save(run_dir, files)
    return f"{n} samples of {backend} duplicated"


def inject_seed_ignored(run_dir: Path, backend: str) -> str:
    """Repeat variants of seeded cases draw other samples: their completions rotated among prompts."""
    files = load(run_dir)
    by_case = defaultdict(list)
    for r in _gens(files, backend):
        if r["key"]["variant"].startswith("repeat-"):
            by_case[(r["key"]["case_id"], r["key"]["variant"])].append(r)
    n = 0
    for recs in by_case.values():
        if len(recs) < 2:
            continue
        payload = [{f: copy.deepcopy(r[f]) for f in ("completion_ids", "completion_logprobs", "completion_top",
                                                      "finish_reason", "text")} for r in recs]
        for r, p in zip(recs, payload[1:] + payload[:1]):
            r.update(p)
            n += 1
    if not n:
        raise LookupError(f"{backend} has no repeated case with two prompts")
    save(run_dir, files)
    return f"{n} repeat completions of {backend} drawn without the seed"


def inject_batch_dependent(run_dir: Path, backend: str, delta: float = 1e-3) -> str:
    """Alone variants whose logprobs differ from the batched run by `delta` (a batch-shape effect)."""
    def fn(case, r):
        r["completion_logprobs"] = [v - delta for v in r["completion_logprobs"]]
    n = _edit_gens(run_dir, backend, fn, lambda c, r: r["key"]["variant"].startswith("alone-")
                   and r["completion_logprobs"])
    return f"{n} alone completions of {backend} off by {delta:g}"


def inject_token_swap(run_dir: Path, backend: str, rank: int) -> str:
    """Greedy completions take the rank-th most likely token (by the record's own top-k; rank 1 =
    runner-up: tie noise under vLLM's rule when it is in both top-k) at the first position where
    the reference's top-k has one, instead of the argmax; everything after is left as it was."""
    files = load(run_dir)
    cases = {c.id: c for c in _suite(run_dir).cases}
    n = 0
    for r in _gens(files, backend):
        c = cases.get(r["key"]["case_id"])
        if c is None or not c.sampling.greedy or r["key"]["variant"] != "main" or not r.get("completion_top"):
            continue
        for i, top in enumerate(r["completion_top"]):
            ranked = sorted(top.items(), key=lambda kv: -kv[1])
            if len(ranked) > rank and int(ranked[0][0]) == r["completion_ids"][i]:
                if rank >= 0:
                    r["completion_ids"][i] = int(ranked[rank][0])
                else:  # a token outside the top-k
                    r["completion_ids"][i] = min(set(range(len(top) + 1)) - {int(t) for t in top})
                n += 1
                break
    if not n:
        raise LookupError(f"{backend} has no greedy completion with top-k to swap in")
    save(run_dir, files)
    return f"{n} greedy completions of {backend} diverge (rank {rank})"


def inject_prompt_ids(run_dir: Path, backend: str) -> str:
    """A different tokenization: the last prompt id of prompt 0 replaced by the first (all variants)."""
    def fn(case, r):
        r["prompt_ids"] = r["prompt_ids"][:-1] + [r["prompt_ids"][0] + 1]
    n = _edit_gens(run_dir, backend, fn, lambda c, r: r["key"]["prompt_index"] == 0)
    return f"{n} records of {backend} with other prompt ids"


def inject_replay_shift(run_dir: Path, backend: str) -> str:
    """The backend's score phase (get_per_token_logps) one position late."""
    files = load(run_dir)
    n = 0
    for s in _scores(files, scorer=backend):
        if len(s["logprobs"]) > 1:
            s["logprobs"] = [s["logprobs"][0]] + s["logprobs"][:-1]
            n += 1
    if not n:
        raise LookupError(f"{backend} has no score records")
    save(run_dir, files)
    return f"{n} score records of {backend} shifted"


def remove_backend_phase(run_dir: Path, backend: str, phase: str, exit_code: int | None = 137) -> str:
    """As if the backend's phase process died before writing anything (exit_code into run.json)."""
    p = Path(run_dir) / "records" / f"{backend}.{phase}.jsonl"
    if p.exists():
        p.unlink()
    m = rundir.read_manifest_dict(run_dir)
    if exit_code is not None and m:
        m["backend_status"][backend]["phases"][phase]["exit_code"] = exit_code
        rundir.write_manifest(run_dir, m)
    return f"{backend} {phase} removed (exit code {exit_code})"


# ---------------------------------------------------------------- T^2 from the model (reference venv)


def temperature_squared(run_dir: Path) -> dict[str, dict[str, list[float]]]:
    """'case/prompt/sample' -> {'temperature', 'processed'} logprobs of the reference's sampled main
    completions recomputed with the temperature T^2 (T applied twice). Needs torch/transformers."""
    from harness.backends.reference import ReferenceRunner
    from harness.model import ModelRef
    from harness.rundir import read_run

    run_dir = Path(run_dir)
    suite = _suite(run_dir)
    cases = {c.id: c for c in suite.cases}
    recs = read_run(run_dir)
    session = next(r for r in recs if r.kind == "session" and r.backend == REFERENCE)
    m = session.models.get("A") or session.model
    out: dict[str, dict[str, list[float]]] = {}
    with ReferenceRunner(ModelRef(Path(m["path"]), m["content_hash"], m["name"])) as runner:
        for r in recs:
            c = cases.get(getattr(getattr(r, "key", None), "case_id", None))
            if r.kind != "generation" or r.backend != REFERENCE or r.key.variant != "main" or c is None \
                    or c.sampling.greedy or c.weights != "A" or r.key.case_hash != c.content_hash():
                continue
            spec = c.sampling.model_copy(update={"temperature": c.sampling.temperature ** 2})
            s = runner.score([r.prompt_ids], [r.completion_ids], spec)[0]
            out[f"{r.key.case_id}/{r.key.prompt_index}/{r.key.sample_index}"] = {
                "temperature": s.by_mode["temperature"], "processed": s.by_mode["processed"]}
    return out


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "t2":
        sys.exit("usage: python -m harness.checks.inject t2 RUN_DIR OUT.json")
    Path(sys.argv[3]).write_text(json.dumps(temperature_squared(Path(sys.argv[2]))))


# ---------------------------------------------------------------- the rollout surface and the params sent
# These need a run whose engines recorded through their tunix surface and captured what they sent (variants
# tunix / rule-*, native_params_source "sent"): LookupError otherwise.

def _seed_field(rec: dict) -> str:
    return "sampling_seed" if "sampling_seed" in rec["native_params"] or "max_new_tokens" in rec["native_params"] \
        else "seed"


def inject_row_seeds_shared(run_dir: Path, backend: str) -> str:
    """Every row of a seeded tunix batch sent RolloutConfig.seed itself: a prompt repeated in the batch (a GRPO
    group) gets the same draw, every row the draw of the batch seed instead of its row seed."""
    files = load(run_dir)
    cases = {c.id: c for c in _suite(run_dir).cases}
    rows = [r for r in _gens(files, backend) if r["key"]["variant"] == "tunix"
            and cases.get(r["key"]["case_id"]) is not None and cases[r["key"]["case_id"]].sampling.seed is not None
            and not cases[r["key"]["case_id"]].sampling.greedy and r.get("native_params_source") == "sent"]
    if not rows:
        raise LookupError(f"{backend} has no seeded tunix rows with captured parameters")
    first: dict[tuple, dict] = {}
    for r in sorted(rows, key=lambda r: r["key"]["prompt_index"]):
        case = cases[r["key"]["case_id"]]
        r["native_params"][_seed_field(r)] = case.sampling.seed
        prompt = (r["key"]["case_id"], tuple(r["prompt_ids"]))
        if prompt in first:  # the same prompt with the same seed: the same draw
            src = first[prompt]
            for f in ("completion_ids", "completion_logprobs", "completion_top", "text", "tunix"):
                r[f] = copy.deepcopy(src[f])
            r["tunix"]["row"] = r["key"]["prompt_index"]
        else:
            first[prompt] = r
    save(run_dir, files)
    return f"{len(rows)} tunix rows of {backend} sent the batch seed"


def inject_samples_reversed(run_dir: Path, backend: str) -> str:
    """n > 1: each prompt's samples returned in reverse order (sample j is sample n-1-j's draw)."""
    files = load(run_dir)
    groups: dict[tuple, list[dict]] = {}
    for r in _gens(files, backend):
        if r["key"]["variant"] == "main":
            groups.setdefault((r["key"]["case_id"], r["key"]["prompt_index"]), []).append(r)
    n = 0
    for recs in groups.values():
        if len(recs) < 2:
            continue
        recs.sort(key=lambda r: r["key"]["sample_index"])
        payload = [{f: copy.deepcopy(r[f]) for f in ("completion_ids", "completion_logprobs", "completion_top",
                                                      "finish_reason", "stop_reason", "text")} for r in recs]
        for r, p in zip(recs, reversed(payload)):
            r.update(p)
        n += len(recs)
        # every scorer scored the tokens as recorded: its score records follow the completions
        case_id, prompt = recs[0]["key"]["case_id"], recs[0]["key"]["prompt_index"]
        by_scorer: dict[str, list[dict]] = {}
        for sc in _scores(files, source=backend):
            if sc["key"]["case_id"] == case_id and sc["key"]["prompt_index"] == prompt \
                    and sc["key"]["variant"] == "main":
                by_scorer.setdefault(sc["backend"], []).append(sc)
        for scs in by_scorer.values():
            scs.sort(key=lambda sc: sc["key"]["sample_index"])
            moved = [_scored_tokens(sc) for sc in scs]
            for sc, m in zip(scs, reversed(moved)):
                sc.update(m)
    if not n:
        raise LookupError(f"{backend} has no n > 1 case")
    save(run_dir, files)
    return f"{n} samples of {backend} in reverse order"


def inject_noise_reused(run_dir: Path, backend: str) -> str:
    """A sampler that reuses one random number at every position of a sequence (a seeded sampler keyed by the
    seed alone, not by (seed, position)). In the inverse-CDF view each sampled token is the one whose interval
    of the processed distribution holds the sequence's single uniform u, so the reference's per-position PIT
    inputs of the backend's completions (ScoreRecord.sequence, harness/sampling/expect.py) are rewritten to
    hold u: above_t <= u < above_t + p_t, the token's probability p_t kept."""
    files = load(run_dir)
    n = seqs = 0
    for s in _scores(files, REFERENCE, backend):
        seq = s.get("sequence")
        if not seq or not seq["p"] or s["key"]["variant"] != "main":
            continue
        tag = f"noise-reused/{backend}/{'/'.join(map(str, _k(s)))}"
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "little"))
        u, p = rng.random(), np.asarray(seq["p"], dtype=np.float64)
        seq["above"] = np.clip(u - rng.random(p.size) * p, 0.0, np.maximum(1.0 - p, 0.0)).tolist()
        n, seqs = n + p.size, seqs + 1
    if not n:
        raise LookupError(f"the reference's scores of {backend}'s completions carry no per-position PIT inputs "
                          "(sequence): no sampled case checked by sampling_sequence")
    save(run_dir, files)
    return f"one uniform reused at every position of {seqs} sampled sequences of {backend} ({n} tokens)"


def inject_eos_id_is_pad(run_dir: Path, backend: str) -> str:
    """The rollout's eos_id() returns its pad id."""
    def fn(case, r):
        r["tunix"]["eos_id"] = r["tunix"]["pad_id"]
    n = _edit_gens(run_dir, backend, fn, lambda case, r: r["key"]["variant"] == "tunix" and r.get("tunix"))
    return f"eos_id() = pad_id() in {n} tunix rows of {backend}"


def inject_field_dropped(run_dir: Path, backend: str, field: str = "top_k") -> str:
    """A sampling field not sent to the engine (the engine's default applies): removed from the parameters
    captured at the engine call, in sampled cases that set it."""
    def fn(case, r):
        r["native_params"].pop(field, None)
    n = _edit_gens(run_dir, backend, fn, lambda case, r: r.get("native_params_source") == "sent"
                   and not case.sampling.greedy and field in r["native_params"]
                   and getattr(case.sampling, field, None) not in (None, 0.0, 1.0))
    return f"{field} dropped from {n} requests of {backend}"


def inject_default_seed(run_dir: Path, backend: str) -> str:
    """Every unseeded sampled request sent one default seed (42)."""
    def fn(case, r):
        r["native_params"][_seed_field(r)] = 42
    n = _edit_gens(run_dir, backend, fn, lambda case, r: r.get("native_params_source") == "sent"
                   and not case.sampling.greedy and case.sampling.seed is None)
    if n < 2:
        raise LookupError(f"{backend} has fewer than two unseeded sampled requests")
    return f"{n} unseeded requests of {backend} sent seed 42"
