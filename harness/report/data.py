"""Everything the reports read from a run directory, loaded once and never trusted blindly.

A report must still come out when the run is broken (that is when it is read
most): a missing `run.json`, a missing `checks.json`, an unreadable record
file or an unloadable suite each become a *problem* (the run's verdict is then
`error`) and the rest of the run is still reported.

    run_dir/run.json            manifest (harness/run.py); absent for a bare `parity record`
    run_dir/checks.json         {"schema_version": 1, "verdicts": [Verdict, ...]} (harness/compare.py)
    run_dir/records/*.jsonl     records (harness/records.py)
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

import pydantic_core
from pydantic import TypeAdapter, ValidationError

from harness.backends import registry
from harness.records import ErrorRecord, GenerationRecord, RecordFileError, ScoreRecord, SessionRecord, read_records
from harness.report import rl as rl_run
from harness.verdict import Verdict, recall_checks

CHECKS_SCHEMA_VERSION = 1
REFERENCE = registry.reference()


@dataclass
class RunData:
    run_dir: Path
    run_id: str
    manifest: dict
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


_VERDICTS = TypeAdapter(list[Verdict])


def _fast_json(raw: bytes) -> Any:
    """pydantic's JSON parser (several times faster than json.loads on a large checks.json, with the same
    result on valid JSON, Infinity and NaN included); None where it fails or the bytes are not UTF-8."""
    try:
        raw.decode("utf-8")
        return pydantic_core.from_json(raw, allow_inf_nan=True)
    except ValueError:
        return None


def _load_checks(run_dir: Path, problems: list[str], compare_cmd: str = "parity compare --run {run_dir}"
                 ) -> tuple[list[Verdict], bool]:
    path = run_dir / "checks.json"
    if not path.exists():
        problems.append(f"no checks.json in {run_dir}: the run was not compared "
                        f"(run `{compare_cmd.format(run_dir=run_dir)}`, then report again)")
        return [], False
    try:
        raw = path.read_bytes()
    except OSError:
        raw = None
    if raw is not None:
        written = recall_checks(path, raw)
        if written is not None:  # compare wrote exactly this file in this process: its verdicts, unparsed
            return written, True
    doc = _fast_json(raw) if raw is not None else None
    if doc is None:  # unreadable, or not JSON: json.loads reads it again and words the problem
        doc = _load_json(path, problems, "checks file")
    if doc is None:
        return [], False
    if not isinstance(doc, dict) or doc.get("schema_version") != CHECKS_SCHEMA_VERSION:
        got = doc.get("schema_version") if isinstance(doc, dict) else type(doc).__name__
        problems.append(f"checks.json schema_version {got!r}: this report reads version {CHECKS_SCHEMA_VERSION}")
        return [], False
    try:  # all at once; a file with an invalid verdict is gone through one by one below, for the messages
        return _VERDICTS.validate_python(doc.get("verdicts", [])), True
    except ValidationError:
        pass
    out = []
    for i, v in enumerate(doc.get("verdicts", [])):
        try:
            out.append(Verdict.model_validate(v))
        except ValidationError as e:
            problems.append(f"checks.json verdict #{i} is not a valid Verdict: {str(e).splitlines()[0]}")
    return out, True


def _load_suite(manifest: dict, warnings: list[str]):
    path = manifest.get("suite")
    if not path:
        return None
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


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    problems: list[str] = []
    warnings: list[str] = []
    manifest_path = run_dir / "run.json"
    manifest = {}
    is_rl = rl_run.is_rl_run(run_dir)
    if manifest_path.exists():
        manifest = _load_json(manifest_path, problems, "manifest") or {}
    elif not is_rl:  # an RL run has no run.json by design: its plan is rl/plan.json
        warnings.append("no run.json: a bare `parity record` directory; backend exit codes and wall times "
                        "are unknown, backends are those found in the records")
    verdicts, has_checks = _load_checks(run_dir, problems, rl_run.COMPARE_HINT if is_rl else
                                        "parity compare --run {run_dir}")

    sessions, gens, scores, errors = [], [], [], []
    for p in sorted((run_dir / "records").glob("*.jsonl")):
        try:
            recs = read_records(p, cache=True)  # the records compare just read, when unchanged
        except (RecordFileError, OSError, UnicodeDecodeError) as e:
            problems.append(f"record file unreadable: {e}")
            continue
        for r in recs:
            {"session": sessions, "generation": gens, "score": scores, "error": errors}[r.kind].append(r)

    seen = list(dict.fromkeys(r.backend for r in sessions + gens + scores + errors))
    requested = list(manifest.get("backends") or [])
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

    run_id = manifest.get("run_id") or next((r.run_id for r in sessions + gens), None) or run_dir.name
    data = RunData(run_dir=run_dir, run_id=run_id, manifest=manifest, has_manifest=bool(manifest),
                   verdicts=verdicts, has_checks=has_checks, sessions=sessions, generations=gens, scores=scores,
                   errors=errors, backends=backends, problems=problems, warnings=warnings)
    data.suite = _load_suite(manifest, warnings)
    data.extras = _load_extras(run_dir, problems, warnings)
    if is_rl:
        data.kind = "rl"
        data.backends = rl_run.engine_order(data.extras.get("rl_curves", []))
        data.manifest = rl_run.pseudo_manifest(data.extras)  # provenance only: has_manifest stays False
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
