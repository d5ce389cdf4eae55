"""Run a suite through one backend and append records: the only code that touches a runner.

Phase `generate` runs every case's prompts through `generate` (plus repeat
and alone variants). Phase `score` reads every backend's generation records
of the run and scores each completion with this backend's teacher-forced
`score` (get_per_token_logps): the reference gives the truth, an engine gives
forced-token replay. What else a case's records must hold the recorder asks of the
checks it names (harness/checks/catalog.py: `needs`, `scored_by_engines`), never
their names: cases that name only checks reading the reference's scores
(the sampling checks) are scored by the reference alone, which also adds their
exact distributions / greedy expectations (harness/sampling/expect.py).
A case's records are written together, so `--resume` skips whole cases and never
duplicates one; a case that failed is recorded as an error, which a new
`parity record` on the run drops and runs again (harness/supervise.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path

from harness.backends import registry
from harness.backends.base import Runner, Unsupported
from harness.model import ModelRef
from harness.records import (
    CaseKey,
    ErrorRecord,
    GenerationRecord,
    RecordWriter,
    ScoreRecord,
    SessionRecord,
    read_records,
    records_path,
)
from harness.rundir import read_run
from harness.checks.catalog import OTHER_WEIGHTS, SEED_RULE_VARIANTS, needs, scored_by_engines
from harness.sampling.expect import score_extras
from harness.suite import Case, Suite


class Progress:
    """One line per case on stderr, with elapsed time and an estimate; silent when quiet."""

    def __init__(self, label: str, total: int, quiet: bool = False):
        self.label, self.total, self.quiet = label, total, quiet
        self.start = time.monotonic()
        self.done = 0

    def step(self, what: str, status: str = "ok") -> None:
        self.done += 1
        if self.quiet:
            return
        el = time.monotonic() - self.start
        eta = el / self.done * (self.total - self.done)
        try:
            print(f"[{self.label}] {self.done}/{self.total} {what}: {status}  "
                  f"elapsed {el:5.1f}s  eta {eta:5.1f}s", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # a closed or broken stderr must never turn a recorded case into an error
            pass


def _variants(case: Case) -> list[tuple[str, list[int] | None]]:
    """(variant name, prompt indices or None for the whole batch)."""
    out: list[tuple[str, list[int] | None]] = [("main", None)]
    out += [(f"repeat-{r}", None) for r in range(1, case.repeats)]
    if case.alone:
        out += [(f"alone-{i}", [i]) for i in range(len(case.prompts))]
    return out


def _done_keys(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    return {(r.key.case_hash, getattr(r, "source_backend", None) or "") for r in read_records(path, tolerate_torn_tail=True)
            if getattr(r, "key", None) is not None}


def generate_todo(run_dir: Path, backend: str, suite: Suite) -> list[Case]:
    done = _done_keys(records_path(run_dir, backend, "generate"))
    return [c for c in suite.cases if (c.content_hash(), "") not in done]


def score_todo(run_dir: Path, backend: str, suite: Suite) -> tuple[list[tuple[str, str]], dict]:
    """(case id, source backend) pairs this backend has yet to score, and every backend's main generations
    by (case id, source)."""
    done = _done_keys(records_path(run_dir, backend, "score"))
    # the reference also scores the tunix rows (the contract reads their semantics off its exact modes)
    variants = ("main", "tunix") if backend == registry.reference() else ("main",)
    gens = [r for r in read_run(run_dir) if r.kind == "generation" and r.key.variant in variants]
    groups: dict[tuple[str, str], list[GenerationRecord]] = defaultdict(list)
    for g in gens:
        groups[(g.key.case_id, g.backend)].append(g)
    cases = {c.id: c for c in suite.cases}
    todo = [(cid, src) for (cid, src) in sorted(groups)
            if cid in cases and (cases[cid].content_hash(), src) not in done
            # recorded from another version of the case: never compared, so never scored
            and all(g.key.case_hash == cases[cid].content_hash() for g in groups[(cid, src)])
            and (backend == registry.reference() or scored_by_engines(cases[cid].checks))]
    return todo, groups


def pending(run_dir: Path, backend: str, suite: Suite, phases: list[str]) -> bool:
    """Whether a `parity record` of these phases has anything to do (a resumed phase that is complete
    need not start its engine)."""
    if "generate" in phases and generate_todo(run_dir, backend, suite):
        return True
    return "score" in phases and bool(score_todo(run_dir, backend, suite)[0])


def _pause_point(phase: str, case_id: str) -> None:
    """Fault-injection hook for the kill tests: PARITY_PAUSE_IN_CASE=PHASE:CASE:SECONDS holds the worker that long
    with that case marked in flight, so a signal lands inside the case however fast the engine is. Never set in
    normal use; a restarted worker pauses again, then goes on."""
    spec = os.environ.get("PARITY_PAUSE_IN_CASE", "")
    if spec:
        want_phase, want_case, seconds = spec.rsplit(":", 2)
        if (want_phase, want_case) == (phase, case_id):
            time.sleep(float(seconds))


class Recorder:
    def __init__(self, runner: Runner, suite: Suite, run_dir: Path, run_id: str,
                 models: dict[str, ModelRef | None], prompt_ids: dict[str, list[list[int]]], quiet: bool = False):
        self.runner, self.suite, self.run_dir, self.run_id = runner, suite, Path(run_dir), run_id
        self.models = models
        self.prompt_ids = prompt_ids  # case id -> tokenized prompts
        self.quiet = quiet
        self.live: str | None = "A"
        self.probed_in = ""  # the tunix case whose first row carries this session's update_params probe
        self.no_swap = ""  # why this backend cannot swap weights, once it said so
        self.state_path: Path | None = None

    def _mark(self, phase: str, case: Case, source: str = "") -> None:
        """Tell the supervisor which case is in flight (it records the error if this process dies)."""
        if self.state_path is not None:
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "phase": phase, "case_id": case.id,
                                       "case_hash": case.content_hash(), "weights": case.weights,
                                       "source_backend": source, "started_at": time.time()}))
            tmp.replace(self.state_path)
            _pause_point(phase, case.id)

    def hold_for_score(self, generate_errors: int, backend: str) -> None:
        """Between the phases of a holding worker (`record --hold`): no case in flight, the engine kept, until the
        supervisor has reported the generate phase and the driver lets this backend score."""
        from harness.supervise import generated_path, score_gate, wait_for

        if self.state_path is not None:
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "phase": "score", "waiting": True,
                                       "generate_errors": generate_errors, "started_at": time.time()}))
            tmp.replace(self.state_path)
        if not self.quiet:
            print(f"[{self.runner.name}] generate phase over; engine kept, waiting for the score phase",
                  file=sys.stderr, flush=True)
        wait_for(generated_path(self.run_dir, backend))  # the supervisor's name for it (--backend)
        wait_for(score_gate(self.run_dir, backend))

    def _base(self, phase: str) -> dict:
        return {"run_id": self.run_id, "backend": self.runner.name, "phase": phase}

    def _key(self, case: Case, prompt_index: int, sample_index: int = 0, variant: str = "main") -> CaseKey:
        return CaseKey(suite=self.suite.suite, case_id=case.id, case_hash=case.content_hash(), weights=case.weights,
                       prompt_index=prompt_index, sample_index=sample_index, variant=variant)

    def session(self, phase: str) -> SessionRecord:
        return SessionRecord(
            **self._base(phase), versions=self.runner.versions(), device=self.runner.device(), dtype=self.runner.dtype(),
            model=self.models["A"].as_dict() if self.models["A"] else {},
            models={k: m.as_dict() for k, m in self.models.items() if m is not None},
            logprob_mode=self.runner.logprob_mode, started_at=time.time(),
            # the typed options it was built with (harness/backends/options.py) go with its own configuration;
            # engine_kind: whose documented seed rule and parameter spelling the checks hold it to (none: no rollout)
            config={**self.runner.config(), "options": dict(self.runner.backend_options),
                    "engine_kind": self.runner.seed_engine},
        )

    def _ensure_weights(self, case: Case) -> None:
        if self.no_swap and OTHER_WEIGHTS in needs(case.checks):
            raise Unsupported(self.no_swap)  # its verdict needs a swap this backend cannot make
        if case.weights != self.live:
            # Unknown until the swap succeeds: a swap that fails half-way must be retried by the
            # next case, never assumed to have left the old set live.
            before, self.live = self.live, None
            try:
                self.runner.set_weights(self.models[case.weights])
            except Unsupported as e:  # refused before touching anything: the old set is still live
                self.live, self.no_swap = before, str(e)
                raise
            self.live = case.weights

    def _skipped(self, phase: str, case: Case, exc: Unsupported) -> ErrorRecord:
        return ErrorRecord(**self._base(phase), key=self._key(case, -1), error_type="Skipped", reason=str(exc))

    def _error(self, phase: str, case: Case, exc: BaseException) -> ErrorRecord:
        return ErrorRecord(**self._base(phase), key=self._key(case, -1), reason=f"{type(exc).__name__}: {exc}",
                           error_type=type(exc).__name__, detail=traceback.format_exc(limit=8))

    # ------------------------------------------------------------ generate
    def _gen_record(self, case: Case, i: int, j: int, variant: str, prompt_ids: list[int], s, dt: float,
                    native: dict, n: int, **extra) -> GenerationRecord:
        sent = getattr(s, "sent", None)
        return GenerationRecord(
            **self._base("generate"), key=self._key(case, i, j, variant),
            model_hash=self.models[case.weights].content_hash, prompt_ids=prompt_ids,
            completion_ids=s.completion_ids, completion_logprobs=s.completion_logprobs,
            logprob_mode=self.runner.logprob_mode, prompt_logprobs=s.prompt_logprobs,
            completion_top=s.completion_top, finish_reason=s.finish_reason, stop_reason=s.stop_reason,
            text=s.text, native_params=sent if sent is not None else _per_sample(native, j, n),
            native_params_source="sent" if sent is not None else "derived",
            timings={"batch_generate_s": dt}, **extra,
        )

    def generate_case(self, case: Case) -> list:
        out = []
        prompts = self.prompt_ids[case.id]
        native = self.runner.native_params(case.sampling)
        for variant, subset in _variants(case):
            idx = subset if subset is not None else list(range(len(prompts)))
            t0 = time.perf_counter()
            results = self.runner.generate([prompts[i] for i in idx], case.sampling)
            dt = time.perf_counter() - t0
            if len(results) != len(idx):
                raise RuntimeError(f"backend returned {len(results)} prompt results for {len(idx)} prompts")
            for i, samples in zip(idx, results):
                for j, s in enumerate(samples):
                    out.append(self._gen_record(case, i, j, variant, prompts[i], s, dt, native, len(samples)))
        if case.tunix and self.runner.rollout is not None:
            out += self.tunix_case(case, prompts)
        if SEED_RULE_VARIANTS in needs(case.checks) and self.runner.seed_engine and case.sampling.seed is not None:
            out += self.seed_rule_case(case, prompts)
        return out

    def tunix_case(self, case: Case, prompts: list[list[int]]) -> list[GenerationRecord]:
        """The case's batch through the rollout's tunix surface, called the way tunix's RLCluster and GRPO
        learner call it: generate(prompts, RolloutConfig) with the text prompts (token ids where the case
        gives ids), tokens right-padded with pad_id() to max_tokens_to_generate, then
        get_per_token_logps(left_padded_prompt_tokens, padded tokens) as arrays (jax when importable). One
        record per row, with the rollout's rich teacher-forced score of the same unpadded tokens."""
        import numpy as np

        rollout, spec = self.runner.rollout, case.sampling
        cfg = self.runner.tunix_config(spec)
        given = [p.text if p.text is not None else list(ids) for p, ids in zip(case.prompts, prompts)]
        t0 = time.perf_counter()
        res = rollout.generate(given, cfg)
        dt = time.perf_counter() - t0
        sent = self.runner.last_sent()
        pad, eos = int(rollout.pad_id()), int(rollout.eos_id())
        width = int(cfg.max_tokens_to_generate)
        toks = [[int(t) for t in np.asarray(row).reshape(-1)] for row in res.tokens]
        padded = np.asarray([t[:width] + [pad] * (width - len(t[:width])) for t in toks], dtype=np.int32)
        left = np.asarray(res.left_padded_prompt_tokens, dtype=np.int32)
        if len(toks) != len(prompts) or left.shape[0] != len(prompts):
            raise RuntimeError(f"tunix generate returned {len(toks)} token rows and {left.shape[0]} prompt rows "
                               f"for {len(prompts)} prompts")
        try:
            import jax.numpy as jnp

            arrays = (jnp.asarray(left), jnp.asarray(padded))
        except ImportError:  # a venv without jax: the numpy arrays RLCluster would have converted
            arrays = (left, padded)
        logps = np.asarray(rollout.get_per_token_logps(*arrays), dtype=np.float64)
        rows = []
        for r in range(len(prompts)):
            prow = [int(t) for t in left[r]]
            start = next((k for k, t in enumerate(prow) if t != pad), len(prow))
            crow = [int(t) for t in padded[r]]
            end = len(crow)
            while end > 0 and crow[end - 1] == pad:  # the GRPO learner's completion_mask: tokens != pad_id
                end -= 1
            rows.append((prow[start:], crow[:end]))
        scored = self.runner.score([p for p, _ in rows], [c for _, c in rows], spec)
        out = []
        for r, ((p_ids, c_ids), sc) in enumerate(zip(rows, scored)):
            lps = None if res.logprobs is None else [float(x) for x in np.asarray(res.logprobs[r]).reshape(-1)]
            from harness.backends.base import Sample

            s = Sample(completion_ids=c_ids, completion_logprobs=lps, finish_reason=None,
                       text=str(res.text[r]), sent=sent[r] if sent is not None and r < len(sent) else None)
            out.append(self._gen_record(
                case, r, 0, "tunix", p_ids, s, dt, {}, 1,
                tunix={"row": r, "pad_id": pad, "eos_id": eos, "left_padded_prompt": [int(t) for t in left[r]],
                       "tokens": [int(t) for t in padded[r]], "per_token_logps": [float(x) for x in logps[r]],
                       "score": [float(x) for x in sc.logprobs],
                       "rollout_config": {"max_tokens_to_generate": width, "temperature": cfg.temperature,
                                          "top_p": cfg.top_p, "top_k": cfg.top_k, "seed": cfg.seed,
                                          "eos_tokens": cfg.eos_tokens}}))
        if out and self.runner.update_forms_probe:
            # a property of the rollout, not of the case: probed once per session (each form costs two swaps)
            out[0].tunix["update_params"] = {"skipped": f"probed once per session, in case {self.probed_in}"} \
                if self.probed_in else self.update_params_probe(rows, spec)
            self.probed_in = self.probed_in or case.id
        return out

    def update_params_probe(self, rows: list[tuple[list[int], list[int]]], spec) -> dict:
        """What the rollout's update_params does with each form in which tunix hands it weights
        (harness/backends/update_forms.py): the other weight set in each form, a teacher-forced score of
        the first tunix row after it, the live set put back with the harness's own swap. Recorded on the
        first tunix row of the session's first tunix case for rollout_contract_update_params."""
        from harness.backends.update_forms import build_forms, probe

        live = self.live
        other = {"A": "B", "B": "A"}.get(live or "")
        if other is None or self.models.get(other) is None:
            return {"skipped": f"no weight set {other or '?'} to update to (--model-b)"}
        p_ids, c_ids = next(((p, c) for p, c in rows if c), ([], []))
        if not c_ids:
            return {"skipped": "no completion tokens to score after an update"}

        def swap(which: str) -> None:
            self.live = None  # unknown until the swap succeeds (as _ensure_weights)
            self.runner.set_weights(self.models[which])
            self.live = which

        got = probe(update=self.runner.rollout.update_params,
                    score=lambda: [float(x) for x in self.runner.score([p_ids], [c_ids], spec)[0].logprobs],
                    swap_new=lambda: swap(other), swap_old=lambda: swap(live), forms=build_forms(self.models[other].path))
        return {"from": live, "to": other, **got}

    def seed_rule_case(self, case: Case, prompts: list[list[int]]) -> list[GenerationRecord]:
        """Every seeded draw again, alone as an n = 1 request with the seed its documented rule gives
        (harness/backends/seeds.py): variant rule-main for sample j of n (n > 1), rule-tunix for tunix row i."""
        from harness.backends.seeds import documented_seed

        spec, eng, b = case.sampling, self.runner.seed_engine, len(prompts)
        draws: dict[int, list[tuple[str, int, int]]] = defaultdict(list)  # seed -> (variant, prompt, sample)
        if spec.n > 1:
            for i in range(b):
                for j in range(spec.n):
                    draws[documented_seed(eng, "rich", spec.seed, i, j, spec.n, b)].append(("rule-main", i, j))
        if case.tunix and self.runner.rollout is not None:
            for i in range(b):
                draws[documented_seed(eng, "tunix", spec.seed, i, 0, 1, b)].append(("rule-tunix", i, 0))
        out = []
        one = spec.model_copy(update={"n": 1})
        for seed, items in draws.items():
            s1 = one.model_copy(update={"seed": seed})
            native = self.runner.native_params(s1)
            t0 = time.perf_counter()
            got = self.runner.generate([prompts[i] for _, i, _ in items], s1)
            dt = time.perf_counter() - t0
            for (variant, i, j), samples in zip(items, got):
                out.append(self._gen_record(case, i, j, variant, prompts[i], samples[0], dt, native, 1))
        return out

    def run_generate(self) -> int:
        path = records_path(self.run_dir, self.runner.name, "generate")
        errors = 0
        todo = generate_todo(self.run_dir, self.runner.name, self.suite)
        with RecordWriter(path) as w:
            w.write(self.session("generate"))
            progress = Progress(f"{self.runner.name} generate", len(todo), self.quiet)
            for case in todo:
                if self.models.get(case.weights) is None:
                    w.write(ErrorRecord(**self._base("generate"), key=self._key(case, -1), error_type="Skipped",
                                        reason=f"case needs weight set {case.weights}: pass --model-b DIR"))
                    progress.step(case.id, "skipped")
                    continue
                try:
                    self._mark("generate", case)
                    self._ensure_weights(case)
                    records = self.generate_case(case)
                except Unsupported as e:
                    w.write(self._skipped("generate", case, e))
                    progress.step(case.id, f"skipped: {e}")
                    continue
                except Exception as e:  # one case's failure must not lose the others
                    errors += 1
                    w.write(self._error("generate", case, e))
                    progress.step(case.id, f"ERROR {type(e).__name__}: {e}")
                    continue
                w.write_many(records)  # outside the try: a failed write is the process's failure, not the case's
                progress.step(case.id)
        return errors

    # ------------------------------------------------------------ score
    def run_score(self) -> int:
        path = records_path(self.run_dir, self.runner.name, "score")
        todo, groups = score_todo(self.run_dir, self.runner.name, self.suite)
        cases = {c.id: c for c in self.suite.cases}
        errors = 0
        with RecordWriter(path) as w:
            w.write(self.session("score"))
            progress = Progress(f"{self.runner.name} score", len(todo), self.quiet)
            for cid, src in todo:
                case = cases[cid]
                batch = groups[(cid, src)]
                try:
                    self._mark("score", case, src)
                    self._ensure_weights(case)
                    t0 = time.perf_counter()
                    scored = self.runner.score([g.prompt_ids for g in batch], [g.completion_ids for g in batch],
                                               case.sampling)
                    dt = time.perf_counter() - t0
                    # weight_update (harness/checks/weights.py) must show that a backend's logprobs are NOT
                    # those of the other weight set (stale weights after update_params). Only the reference
                    # can say what the other set gives: it scores the same tokens under it too, stored as
                    # other_weights[<set>][<mode>] next to the live set's by_mode[<mode>].
                    other = "B" if case.weights == "A" else "A"
                    if self.runner.name == registry.reference() and OTHER_WEIGHTS in needs(case.checks) \
                            and self.models.get(other) is not None:
                        self.runner.set_weights(self.models[other])
                        self.live = other
                        stale = self.runner.score([g.prompt_ids for g in batch], [g.completion_ids for g in batch],
                                                  case.sampling)
                        for s, o in zip(scored, stale):
                            s.other_weights[other] = o.by_mode
                    if self.runner.name == registry.reference():  # exact distributions / greedy expectations for
                        score_extras(self.runner, case, batch, scored)  # what the checks need (harness/sampling/expect.py)
                    records = [
                        ScoreRecord(**self._base("score"), key=g.key, model_hash=self.models[case.weights].content_hash,
                                    source_backend=src, prompt_ids=g.prompt_ids, completion_ids=g.completion_ids,
                                    logprobs=s.logprobs, logprob_mode="raw", by_mode=s.by_mode, top=s.top,
                                    other_weights=s.other_weights, distribution=s.distribution,
                                    effects=s.effects, sequence=s.sequence, timings={"batch_score_s": dt})
                        for g, s in zip(batch, scored)
                    ]
                except Unsupported as e:
                    err = self._skipped("score", case, e)
                    err.source_backend = src
                    w.write(err)
                    progress.step(f"{cid} <- {src}", f"skipped: {e}")
                    continue
                except Exception as e:
                    errors += 1
                    err = self._error("score", case, e)
                    err.source_backend = src
                    err.detail = f"scoring {src}'s completions\n" + err.detail
                    w.write(err)
                    progress.step(f"{cid} <- {src}", f"ERROR {type(e).__name__}: {e}")
                    continue
                w.write_many(records)
                progress.step(f"{cid} <- {src}")
        return errors


def tokenize_suite(suite: Suite, model: ModelRef) -> dict[str, list[list[int]]]:
    """Text prompts -> ids with the model's own tokenizer (once, in the recording process)."""
    needs_tok = any(p.text is not None for c in suite.cases for p in c.prompts)
    tok = None
    if needs_tok:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model.path)
    out = {}
    for c in suite.cases:
        out[c.id] = [list(p.ids) if p.ids is not None else tok(p.text, add_special_tokens=False)["input_ids"]
                     for p in c.prompts]
    return out


def validate_prompts(suite: Suite, prompt_ids: dict[str, list[list[int] | None]], vocab_size: int,
                     context: int) -> None:
    """Token ids below the vocabulary and prompt + max_tokens within the context; a None entry (a text prompt
    not tokenized by the caller) is not checked."""
    from harness.suite import SuiteError

    for c in suite.cases:
        for i, ids in enumerate(prompt_ids[c.id]):
            where = f"{suite.path}: case '{c.id}': field 'prompts.{i}'"
            if ids is None:
                continue
            if not ids:
                raise SuiteError(f"{where}: the prompt tokenizes to nothing")
            if max(ids) >= vocab_size:
                raise SuiteError(f"{where}: token id {max(ids)} >= vocab_size {vocab_size}")
            if len(ids) + c.sampling.max_tokens > context:
                raise SuiteError(f"{where}: {len(ids)} prompt + {c.sampling.max_tokens} new tokens exceed "
                                 f"the model's context of {context}")


def _per_sample(native: dict, j: int, n: int) -> dict:
    """A per-sample list in the native parameters (sglang-jax's n seeds) becomes sample j's own value:
    every record carrying all n seeds made the file quadratic in n (148 MB at n = 1280)."""
    seeds = native.get("sampling_seed")
    if isinstance(seeds, list) and len(seeds) == n:
        return {**native, "sampling_seed": seeds[j]}
    return native

