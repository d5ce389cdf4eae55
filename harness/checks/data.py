"""A run directory, indexed for the checks: manifest, suite, records by backend, case and variant.

Every accessor that a check uses to get data either returns it or raises
`Unavailable(outcome, reason)`, whose outcome is "error" (the data should be
there and is not: a failed phase, an ErrorRecord, records of another version
of the case) or "skipped" (an ErrorRecord of type "Skipped", or a backend the
run did not request). The driver turns it into a verdict, so a check never
passes, and is never silently missing, for lack of data.

Only records whose `key.case_hash` equals the current suite's
`case.content_hash()` are compared; the others are counted, and named when
they are all a backend has for a case.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Literal

from harness.records import ErrorRecord, GenerationRecord, ScoreRecord, SessionRecord
from harness.rundir import REFERENCE, RunManifest, RunRecords
from harness.suite import Case, Suite, load_suite

PHASES = ("generate", "score")
DEFAULT_SUITE = "cases/default.yaml"
#: the variant recorded through the tunix surface: a trainer's rows (no prompt logprobs, no finish reason),
#: judged by tunix_surface and rollout_contract_*, not by the checks of the rich API's records
TUNIX = "tunix"

Key = tuple[int, int]  # (prompt_index, sample_index)


class Unavailable(Exception):
    """The data a check needs is not there; `outcome` is the verdict it becomes."""

    def __init__(self, outcome: Literal["error", "skipped"], reason: str, data: dict | None = None):
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.data = data or {}


def _score_source_of_error(err: ErrorRecord) -> str | None:
    """Whose completions a score-phase error was scoring: the record's source_backend, or the
    detail harness.recorder writes ("scoring <src>'s completions\\n...")."""
    if getattr(err, "source_backend", None):
        return err.source_backend
    first = err.detail.split("\n", 1)[0]
    if first.startswith("scoring ") and first.endswith("'s completions"):
        return first[len("scoring "):-len("'s completions")]
    return None


class RunData:
    """Everything compare needs from one run directory."""

    def __init__(self, run_dir: Path, suite: Suite, manifest: RunManifest | dict | None, records: Iterable):
        self.run_dir = Path(run_dir)
        self.suite = suite
        self.source_suite = suite  # as loaded, before the tolerance profile (the report shows this one)
        self.manifest = manifest if isinstance(manifest, RunManifest) else RunManifest.model_validate(manifest or {})
        self.has_manifest = bool(self.manifest.as_dict())
        self.suite_path: str | None = None
        self.hashes = {c.id: c.content_hash() for c in suite.cases}
        self.sessions: dict[tuple[str, str], list[SessionRecord]] = defaultdict(list)
        self.backend_errors: dict[tuple[str, str], list[ErrorRecord]] = defaultdict(list)
        self.case_errors: dict[tuple[str, str, str], list[ErrorRecord]] = defaultdict(list)
        # (backend, case_id) -> variant -> (prompt, sample) -> record
        self.gens: dict[tuple[str, str], dict[str, dict[Key, GenerationRecord]]] = \
            defaultdict(lambda: defaultdict(dict))
        self.gen_order: dict[tuple[str, str], list[GenerationRecord]] = defaultdict(list)
        # (scorer, case_id, source) -> (prompt, sample) -> record
        self.scores: dict[tuple[str, str, str], dict[Key, ScoreRecord]] = defaultdict(dict)
        # (scorer, case_id, source, variant) -> (prompt, sample) -> record, for variants other than main
        self.variant_scores: dict[tuple[str, str, str, str], dict[Key, ScoreRecord]] = defaultdict(dict)
        # (backend, phase, case_id) -> case hashes seen that are not the suite's
        self.stale: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.seen_backends: list[str] = []
        self._eos: tuple[set[int], str] | None = None
        for r in records:
            if r.backend not in self.seen_backends:
                self.seen_backends.append(r.backend)
            if isinstance(r, SessionRecord):
                self.sessions[(r.backend, r.phase)].append(r)
                continue
            key = getattr(r, "key", None)
            if isinstance(r, ErrorRecord) and key is None:
                self.backend_errors[(r.backend, r.phase)].append(r)
                continue
            if key.case_id not in self.hashes:
                continue  # a case this suite does not have
            if key.case_hash != self.hashes[key.case_id]:
                self.stale[(r.backend, r.phase, key.case_id)].add(key.case_hash)
                continue
            if isinstance(r, ErrorRecord):
                self.case_errors[(r.backend, r.phase, key.case_id)].append(r)
            elif isinstance(r, GenerationRecord):
                self.gens[(r.backend, key.case_id)][key.variant][(key.prompt_index, key.sample_index)] = r
                self.gen_order[(r.backend, key.case_id)].append(r)
            elif isinstance(r, ScoreRecord):
                if key.variant == "main":
                    self.scores[(r.backend, key.case_id, r.source_backend)][(key.prompt_index, key.sample_index)] = r
                else:  # the reference's scores of another variant's rows (tunix)
                    self.variant_scores[(r.backend, key.case_id, r.source_backend, key.variant)][
                        (key.prompt_index, key.sample_index)] = r
        requested = self.manifest.backends
        if not requested:
            requested = sorted(self.seen_backends, key=lambda b: (b != REFERENCE, self.seen_backends.index(b)))
        self.backends: list[str] = list(requested)
        # the tolerance profile of the dtype the engines ran in (harness/checks/profiles.py); a PARITY_PROFILE
        # environment variable forces one (the calibration study compares bf16 runs under float32's, say)
        from harness.checks.profiles import profile, run_dtype

        self.profile_dtype, self.engine_dtypes = run_dtype(self)
        self.profile = profile(os.environ.get("PARITY_PROFILE") or self.profile_dtype)
        self.suite = suite.with_profile(self.profile.dtype)

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, run_dir: Path, suite_path: str | None = None, records: RunRecords | None = None) -> "RunData":
        """`records`: the run's records when the caller read them already (compare hands them to the report)."""
        run_dir = Path(run_dir)
        manifest = RunManifest.read(run_dir)
        path = suite_path or (manifest.suite if manifest else None) or DEFAULT_SUITE
        if suite_path is None and not Path(path).exists():
            # a run directory from another machine: the same suite file in this checkout (case hashes
            # still decide which records are compared)
            local = Path(__file__).resolve().parents[2] / "cases" / Path(path).name
            path = str(local) if local.exists() else path
        suite = load_suite(path)
        records = records if records is not None else RunRecords.load(run_dir)
        names = {r.key.suite for r in records if getattr(r, "key", None) is not None}
        if names and suite.suite not in names:  # e.g. no run.json, and the default suite is not the run's
            from harness.suite import SuiteError

            raise SuiteError(f"{run_dir}: its records are of suite {', '.join(sorted(names))}, not "
                             f"{suite.suite!r} ({path}): pass --suite with the suite they were recorded from")
        _check_prompts_against_model(suite, manifest)
        ctx = cls(run_dir, suite, manifest, records)
        ctx.suite_path = str(path)
        return ctx

    # ------------------------------------------------------------ who is here
    @property
    def has_reference(self) -> bool:
        return REFERENCE in self.backends

    @property
    def engines(self) -> list[str]:
        return [b for b in self.backends if b != REFERENCE]

    def phase_status(self, backend: str, phase: str):
        return self.manifest.phase_status(backend, phase)

    def phase_problem(self, backend: str, phase: str) -> str | None:
        """Why a backend's phase did not complete, or None if it did."""
        problems = []
        status = self.phase_status(backend, phase)
        if status is not None and "exit_code" in status.model_fields_set and status.exit_code != 0:
            how = "timed out" if status.timed_out else f"exited with code {status.exit_code}"
            problems.append(f"{backend} {phase} {how} (log {status.log if 'log' in status.model_fields_set else '?'})")
        elif status is None and backend in self.manifest.backend_status \
                and not self.sessions.get((backend, phase)):
            problems.append(f"{backend} {phase} was never run (run.json has no status for it)")
        for err in self.backend_errors.get((backend, phase), []):
            problems.append(f"{err.error_type}: {err.reason}")
        if not self.sessions.get((backend, phase)) and not problems:
            problems.append(f"{backend} {phase} never started (no session record in records/{backend}.{phase}.jsonl)")
        return "; ".join(dict.fromkeys(problems)) or None

    @property
    def dtype(self) -> str | None:
        """The dtype the run's engines computed in: run.json's `dtype`, else the engines' session records'
        (None when they name none or disagree), for tolerances chosen by dtype."""
        if self.manifest.dtype:
            return self.manifest.dtype
        found = {s.dtype for (b, _), ss in self.sessions.items() if b != REFERENCE for s in ss if s.dtype}
        return found.pop() if len(found) == 1 else None

    def session(self, backend: str, phase: str = "generate") -> SessionRecord | None:
        s = self.sessions.get((backend, phase))
        return s[-1] if s else None

    def lacks(self, backend: str, capability: str) -> str | None:
        """Why `backend` cannot deliver `capability` (a rollout backend's session record lists what its
        rollout does not declare, harness/backends/rollout_runner.py), or None: a check that needs it is
        then skipped with this reason, never passed and never failed for it."""
        s = self.session(backend, "generate")
        return ((s.config or {}).get("capabilities_missing") or {}).get(capability) if s is not None else None

    # ------------------------------------------------------------ data access (raise Unavailable)
    def _require_backend(self, backend: str) -> None:
        if backend not in self.backends:
            raise Unavailable("skipped", f"needs backend {backend!r}, which this run did not request "
                                         f"(requested: {', '.join(self.backends) or 'none'})")

    def _case_error(self, backend: str, phase: str, case: Case, source: str | None = None) -> None:
        errs = self.case_errors.get((backend, phase, case.id), [])
        if source is not None:
            errs = [e for e in errs if _score_source_of_error(e) in (None, source)]
        if not errs:
            return
        err = errs[-1]
        first = err.reason.strip().split("\n", 1)[0]  # the full reason and traceback go to the verdict's data
        data = {"error_type": err.error_type, "reason": err.reason, "error_detail": err.detail[-4000:]}
        if err.error_type == "Skipped":
            raise Unavailable("skipped", f"{backend} {phase} skipped case {case.id}: {first}", data)
        raise Unavailable("error", f"{backend} {phase} failed on case {case.id}: {first}", data)

    def _missing(self, backend: str, phase: str, case: Case, what: str) -> Unavailable:
        problem = self.phase_problem(backend, phase)
        if problem:
            return Unavailable("error", f"no {what}: {problem}")
        stale = self.stale.get((backend, phase, case.id))
        if stale:
            return Unavailable("error", f"no {what}: {backend}'s {phase} records of case {case.id} are from another "
                                        f"version of the case (hash {', '.join(sorted(stale))}; the suite's is "
                                        f"{self.hashes[case.id]}): re-record")
        return Unavailable("error", f"no {what}, and no error recorded for it")

    def gens_of(self, backend: str, case: Case, variant: str = "main") -> dict[Key, GenerationRecord]:
        """(prompt, sample) -> generation record of one variant; raises Unavailable."""
        self._require_backend(backend)
        self._case_error(backend, "generate", case)
        got = self.gens.get((backend, case.id), {}).get(variant)
        if not got:
            if variant != "main" and self.gens.get((backend, case.id), {}).get("main"):
                raise Unavailable("error", f"{backend} recorded case {case.id} but not its variant {variant!r}")
            raise self._missing(backend, "generate", case, f"generation records from {backend} for case {case.id}")
        return got

    def variants_of(self, backend: str, case: Case) -> dict[str, dict[Key, GenerationRecord]]:
        self.gens_of(backend, case)
        return self.gens[(backend, case.id)]

    def scores_of(self, scorer: str, case: Case, source: str) -> dict[Key, ScoreRecord]:
        """(prompt, sample) -> `scorer`'s teacher-forced score of `source`'s main completions."""
        self._require_backend(scorer)
        self._case_error(scorer, "score", case, source)
        got = self.scores.get((scorer, case.id, source))
        if not got:
            what = f"{scorer}'s score of {source}'s completions of case {case.id}"
            problem = self.phase_problem(scorer, "score")
            if not problem and not self.stale.get((scorer, "score", case.id)):
                raise Unavailable("error", f"no {what} (the score phase runs after every backend's generate phase: "
                                           f"`record --backend {scorer} --phase score` again)")
            raise self._missing(scorer, "score", case, what)
        return got

    def order_of(self, backend: str, case: Case) -> list[GenerationRecord]:
        return self.gen_order.get((backend, case.id), [])

    # ------------------------------------------------------------ model facts
    def eos_ids(self) -> tuple[set[int], str]:
        """The model's EOS ids and where they came from: the model directory named by a session
        record (generation_config.json / config.json), else the reference's EOS-stopped completions.
        Worked out once per run (every case's eos_policy asks); a copy each time."""
        if self._eos is None:
            self._eos = self._find_eos_ids()
        return set(self._eos[0]), self._eos[1]

    def _find_eos_ids(self) -> tuple[set[int], str]:
        ids: set[int] = set()
        for (_, _), sessions in sorted(self.sessions.items()):
            for s in sessions:
                for m in [s.model, *s.models.values()]:
                    path = m.get("path")
                    for name in ("generation_config.json", "config.json"):
                        f = Path(path) / name if path else None
                        if f is not None and f.is_file():
                            try:
                                eos = json.loads(f.read_text()).get("eos_token_id")
                            except (OSError, ValueError):
                                continue
                            if eos is not None:
                                ids |= set(eos if isinstance(eos, list) else [eos])
        if ids:
            return ids, "model config"
        for (backend, _), variants in self.gens.items():
            if backend != REFERENCE:
                continue
            for recs in variants.values():
                for r in recs.values():
                    if r.finish_reason == "stop" and r.stop_reason is None and r.completion_ids:
                        ids.add(r.completion_ids[-1])
        return ids, "inferred from the reference's EOS-stopped completions" if ids else "unknown"


def _check_prompts_against_model(suite, manifest: RunManifest | None) -> None:
    """A suite given to compare is held to the run's model as `parity run` holds it (token ids against the
    vocabulary and context; SuiteError naming file, case and field), when the model directory is still
    here: an id the model cannot have is a configuration error (exit 2), not a case without records."""
    model = (manifest.model or {}) if manifest else {}
    config_path = Path(model.get("path") or "") / "config.json"
    if not model.get("path") or not config_path.is_file():
        return
    from harness.inputs import check_prompts

    check_prompts(suite, json.loads(config_path.read_text()))

