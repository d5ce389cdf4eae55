"""Everything the reports read from a run directory, loaded once and never trusted blindly.

A report must still come out when the run is broken (that is when it is read
most): a missing `run.json`, a missing `checks.json`, an unreadable record
file or an unloadable suite each become a *problem* (the run's verdict is then
`error`) and the rest of the run is still reported.

    run_dir/run.json            manifest (harness/run.py); absent for a bare `parity record`
    run_dir/checks.json         {"schema_version": 1, "verdicts": [Verdict, ...]} (harness/compare.py)
    run_dir/records/*.jsonl     records (harness/records.py)
    (each read through harness/rundir.py)
    run_dir/logs/*.log          backend process output
    run_dir/sampling_table.json, rl/*.json, selftest.json, bench.json: optional, see docs/report.md

A directory the RL driver wrote (`python -m harness.rl`: rl/, no run.json, no records/*.jsonl) is loaded
as an RL run (kind "rl"; harness/report/rl.py): backends are its engine labels, not a bare record directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.records import ErrorRecord, GenerationRecord, ScoreRecord, SessionRecord
from harness.report import rl as rl_run
from harness.rundir import REFERENCE, Compared, RunDirError, RunManifest, RunRecords, read_checks
from harness.verdict import Verdict


@dataclass
class RunData:
    run_dir: Path
    run_id: str
    manifest: RunManifest
    has_manifest: bool
    verdicts: list[Verdict]
    has_checks: bool
    sessions: list[SessionRecord]
    generations: list[GenerationRecord]
    scores: list[ScoreRecord]
    errors: list[ErrorRecord]
    backends: list[str]  # requested (manifest order), or those seen in records when there is no manifest
    suite: Any = None  # harness.suite.Suite or None
    problems: list[str] = field(default_factory=list)  # harness-level: each makes the run's verdict "error"
    warnings: list[str] = field(default_factory=list)  # shown, verdict unchanged
    extras: dict[str, Any] = field(default_factory=dict)  # optional inputs (sampling_table, rl, selftest, bench)
    kind: str = "parity"  # "rl": a run directory of `python -m harness.rl` (harness/report/rl.py)


def _load_json(path: Path, problems: list[str], what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"{what} {path.name} is unreadable: {type(e).__name__}: {e}")
        return None


def _load_suite(manifest: RunManifest, warnings: list[str], compared: Compared | None):
    path = manifest.suite
    if not path:
        return None
    if compared is not None and compared.suite is not None and compared.suite_path == path:
        return compared.suite  # the suite compare checked against, not parsed again
    try:
        from harness.suite import load_suite

        return load_suite(path)
    except Exception as e:  # the suite may have moved or changed since the run: records are enough
        warnings.append(f"suite {path} could not be loaded ({type(e).__name__}: {e}); prompts are shown as "
                        "token ids and case descriptions are missing")
        return None


def _load_extras(run_dir: Path, problems: list[str], warnings: list[str]) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    for name in ("sampling_table", "selftest", "bench"):
        p = run_dir / f"{name}.json"
        if p.exists():
            doc = _load_json(p, problems, "optional input")
            if doc is not None:
                extras[name] = doc
    rl_dir = run_dir / "rl"
    if rl_dir.is_dir():
        extras.update(rl_run.load_rl_dir(rl_dir, problems, warnings, _load_json))
    return extras


def load_run(run_dir: Path, compared: Compared | None = None) -> RunData:
    """`compared`: what compare_run's `compare` of this process read and concluded (records, verdicts,
    suite), used instead of reading them again."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    problems: list[str] = []
    warnings: list[str] = []
    is_rl = rl_run.is_rl_run(run_dir)
    try:
        manifest = RunManifest.read(run_dir)
    except RunDirError as e:
        problems.append(f"manifest run.json is unreadable: {e}")
        manifest = RunManifest()
    if manifest is None:
        manifest = RunManifest()
        if not is_rl:  # an RL run has no run.json by design: its plan is rl/plan.json
            warnings.append("no run.json: a bare `parity record` directory; backend exit codes and wall times "
                            "are unknown, backends are those found in the records")
    if compared is not None:
        verdicts, has_checks = compared.verdicts, True
        records = compared.records
    else:
        got = read_checks(run_dir, problems, rl_run.COMPARE_HINT if is_rl else "parity compare --run {run_dir}")
        verdicts, has_checks = got or [], got is not None
        records = RunRecords.load(run_dir, tolerant=True)
        problems += records.problems
    sessions, gens, scores, errors = records.sessions, records.generations, records.scores, records.errors

    seen = list(dict.fromkeys(r.backend for r in [*sessions, *gens, *scores, *errors]))
    requested = list(manifest.backends)
    if requested:
        backends = requested
        ignored = [b for b in seen if b not in requested]
        if ignored:
            warnings.append(f"records of backends not requested in this run are ignored: {ignored}")
        keep = set(requested)
        sessions = [r for r in sessions if r.backend in keep]
        gens = [r for r in gens if r.backend in keep]
        scores = [r for r in scores if r.backend in keep and r.source_backend in keep]
        errors = [r for r in errors if r.backend in keep]
    else:
        backends = sorted(seen, key=lambda b: (b != REFERENCE, seen.index(b)))

    run_id = manifest.run_id or next((r.run_id for r in [*sessions, *gens]), None) or run_dir.name
    data = RunData(run_dir=run_dir, run_id=run_id, manifest=manifest, has_manifest=bool(manifest.as_dict()),
                   verdicts=verdicts, has_checks=has_checks, sessions=list(sessions), generations=list(gens),
                   scores=list(scores), errors=list(errors), backends=backends, problems=problems,
                   warnings=warnings)
    data.suite = _load_suite(manifest, warnings, compared)
    data.extras = _load_extras(run_dir, problems, warnings)
    if is_rl:
        data.kind = "rl"
        data.backends = rl_run.engine_order(data.extras.get("rl_curves", []))
        data.manifest = RunManifest.model_validate(rl_run.pseudo_manifest(data.extras))  # provenance only:
        # has_manifest stays False
    return data


def finite_or_str(x: float | None) -> float | str | None:
    """JSON-safe number: non-finite floats become "Infinity", "-Infinity" or "NaN" (strict JSON has none)."""
    if x is None or isinstance(x, bool):
        return x
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def load_vocab(model_dir: str | Path | None) -> dict[int, str]:
    """id -> token string from a local tokenizer.json (WordLevel, BPE, WordPiece or Unigram); {} if none.
    The driver venv has no tokenizer library, and the report needs only the vocabulary."""
    if not model_dir:
        return {}
    path = Path(model_dir) / "tokenizer.json"
    try:
        tok = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out: dict[int, str] = {}
    vocab = (tok.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        out.update({int(i): s for s, i in vocab.items()})
    elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        out.update({i: (p[0] if isinstance(p, list) else str(p)) for i, p in enumerate(vocab)})
    for t in tok.get("added_tokens") or []:
        out[int(t["id"])] = t["content"]
    return out


def token_text(vocab: dict[int, str], tid: int) -> str:
    s = vocab.get(tid)
    if s is None:
        return "" if not vocab else "\N{REPLACEMENT CHARACTER}"
    # byte-level BPE markers (GPT-2/Qwen) and SentencePiece: show spaces and newlines visibly
    return s.replace("\u0120", "\u2423").replace("\u010a", "\u21b5").replace("\u2581", "\u2423")
