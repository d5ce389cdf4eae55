"""A run directory, read in one place: its manifest (run.json), its records and its verdicts (checks.json).

    run_dir/run.json            RunManifest: written by `parity run` (harness/run.py); absent for a bare
                                `parity record` directory
    run_dir/records/*.jsonl     RunRecords: what every backend returned (harness/records.py)
    run_dir/checks.json         {"schema_version": 1, "verdicts": [Verdict, ...]}: written by `parity compare`

Checks (harness/checks/data.py), the report (harness/report/data.py), the golden compare, the self-test and
the defect injectors all read a run through these. Compare and report of one `parity run` share what was
read in memory (`Compared`), so a large run is parsed once and its checks.json never read back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pydantic_core
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from harness.backends import registry
from harness.records import ErrorRecord, GenerationRecord, RecordFileError, ScoreRecord, SessionRecord, read_records
from harness.verdict import Verdict

REFERENCE = registry.reference()  # the float64 backend every engine is compared against
CHECKS_SCHEMA_VERSION = 1


class RunDirError(ValueError):
    """run.json or checks.json that cannot be read; names the file and the field."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------- run.json
class PhaseStatus(BaseModel):
    """How one backend phase's process ended (harness/run.py run_backend_phase)."""

    model_config = ConfigDict(extra="allow")
    # in the order run.json (sorted keys) has them: as_dict() gives them back as written
    exit_code: int | None = None
    log: str | None = None
    timed_out: bool = False
    wall_s: float | None = None

    def as_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True)


class BackendStatus(BaseModel):
    model_config = ConfigDict(extra="allow")
    phases: dict[str, PhaseStatus] = {}


class RunManifest(BaseModel):
    """run.json. Every field is optional: tools and tests write partial manifests, and a field the run did
    not know of (an older or newer harness) is kept as it is."""

    model_config = ConfigDict(extra="allow")
    run_id: str | None = None
    suite: str | None = None  # the suite file's path when recorded
    suite_name: str | None = None
    backends: list[str] = []  # requested, in order
    model: dict | None = None  # weight set A: path, content_hash, name
    model_b: dict | None = None  # weight set B, None when the run had none
    dtype: str | None = None
    dtype_requested: str | None = None
    checkpoint_dtype: str | None = None
    git_revision: str | None = None
    platform_machine: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    argv: list[str] | None = None
    backend_status: dict[str, BackendStatus] = {}
    backend_options: dict[str, dict] = {}  # per backend: its resolved typed options (harness/backends/options.py)
    interrupted: dict | None = None
    interruptions: list[dict] = []

    @classmethod
    def read(cls, run_dir: Path) -> "RunManifest | None":
        """run_dir/run.json, or None where there is none; raises RunDirError naming the file and field."""
        got = _read_manifest(Path(run_dir))
        return got[0] if got else None

    def has(self, name: str) -> bool:
        """Whether run.json names `name` at all (model_b: null says 'no weight set B'; absent says nothing)."""
        return name in self.model_fields_set or name in (self.model_extra or {})

    def phase_status(self, backend: str, phase: str) -> PhaseStatus | None:
        st = self.backend_status.get(backend)
        return st.phases.get(phase) if st is not None else None

    def as_dict(self) -> dict:
        """The manifest as written (fields it did not name stay out)."""
        return self.model_dump(mode="json", exclude_unset=True)


def write_manifest(run_dir: Path, manifest: dict | RunManifest) -> Path:
    """run_dir/run.json, atomically; a dict is checked against RunManifest first (a harness bug raises)."""
    doc = manifest.as_dict() if isinstance(manifest, RunManifest) else manifest
    RunManifest.model_validate(doc)
    path = Path(run_dir) / "run.json"
    _atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return path


def read_manifest_dict(run_dir: Path) -> dict:
    """run.json exactly as written, checked against RunManifest; {} where there is none (for tools that copy
    or edit it)."""
    got = _read_manifest(Path(run_dir))
    return json.loads(got[1]) if got else {}


def _read_manifest(run_dir: Path) -> tuple[RunManifest, bytes] | None:
    path = run_dir / "run.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RunDirError(f"{path}: cannot read: {e}") from None
    try:
        return RunManifest.model_validate_json(raw), raw
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"].startswith("json"):
            raise RunDirError(f"{path}: not JSON: {err['msg']}") from None
        where = ".".join(str(x) for x in err["loc"])
        raise RunDirError(f"{path}: field '{where}': {err['msg']}") from None


# ---------------------------------------------------------------- records/*.jsonl
@dataclass
class RunRecords:
    """Every record of a run directory, in file order (files sorted by name), and by kind."""

    all: list = field(default_factory=list)
    files: dict[str, list] = field(default_factory=dict)  # file name (reference.generate.jsonl) -> its records
    sessions: list[SessionRecord] = field(default_factory=list)
    generations: list[GenerationRecord] = field(default_factory=list)
    scores: list[ScoreRecord] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # files that could not be read (tolerant loads only)

    @classmethod
    def load(cls, run_dir: Path, *, tolerant: bool = False) -> "RunRecords":
        """Parse and validate records/*.jsonl. A file that cannot be read raises RecordFileError naming file
        and line, unless `tolerant` (the report: a broken run is still reported), which notes it in
        `problems` and goes on with the other files."""
        out = cls()
        for p in sorted((Path(run_dir) / "records").glob("*.jsonl")):
            try:
                recs = read_records(p)
            except (RecordFileError, OSError, UnicodeDecodeError) as e:
                if not tolerant:
                    raise
                out.problems.append(f"record file unreadable: {e}")
                continue
            out.files[p.name] = recs
            out.all += recs
        by_kind = {"session": out.sessions, "generation": out.generations, "score": out.scores, "error": out.errors}
        for r in out.all:
            by_kind[r.kind].append(r)
        return out

    def generation_index(self) -> dict[GenKey, GenerationRecord]:
        return generation_index(self.generations)

    def score_index(self) -> dict[ScoreKey, ScoreRecord]:
        return score_index(self.scores)

    def __iter__(self) -> Iterator:
        return iter(self.all)

    def __len__(self) -> int:
        return len(self.all)


#: (backend, case_id, prompt_index, sample_index, variant)
GenKey = tuple[str, str, int, int, str]
#: (scorer, source_backend, case_id, prompt_index, sample_index, variant)
ScoreKey = tuple[str, str, str, int, int, str]


def generation_index(generations: Iterable[GenerationRecord]) -> dict[GenKey, GenerationRecord]:
    """Generations by where they belong, in record order (of two records of one key, the later wins)."""
    return {(g.backend, g.key.case_id, g.key.prompt_index, g.key.sample_index, g.key.variant): g for g in generations}


def score_index(scores: Iterable[ScoreRecord]) -> dict[ScoreKey, ScoreRecord]:
    """Scores by scorer, whose completion and where it belongs, in record order (the later of one key wins)."""
    return {(s.backend, s.source_backend, s.key.case_id, s.key.prompt_index, s.key.sample_index, s.key.variant): s
            for s in scores}


def read_run(run_dir: Path) -> list:
    """Every record of a run directory, in file order; raises RecordFileError on a bad file."""
    return RunRecords.load(run_dir).all


# ---------------------------------------------------------------- checks.json
class ChecksFile(BaseModel):
    """checks.json."""

    schema_version: int
    verdicts: list[Verdict]


_VERDICTS = TypeAdapter(list[Verdict])


def checks_json(verdicts: list[Verdict]) -> str:
    """checks.json's text: pydantic's own serializer, indented by 1, ASCII only. The same JSON as
    json.dumps(payload, indent=1) of the verdicts' model_dump(mode="json") (non-finite numbers as
    Infinity/NaN, as always), ten times faster on a large run; numbers may be spelt differently
    (1e-6, not 1e-06)."""
    doc = ChecksFile.model_construct(schema_version=CHECKS_SCHEMA_VERSION, verdicts=list(verdicts))
    try:
        return doc.model_dump_json(indent=1, ensure_ascii=True) + "\n"
    except TypeError:  # a pydantic without ensure_ascii (< 2.11)
        payload = {"schema_version": CHECKS_SCHEMA_VERSION, "verdicts": [v.model_dump(mode="json") for v in verdicts]}
        return json.dumps(payload, indent=1) + "\n"


def write_checks(run_dir: Path, verdicts: list[Verdict]) -> Path:
    path = Path(run_dir) / "checks.json"
    _atomic_write(path, checks_json(verdicts).encode("ascii"))
    return path


def read_checks(run_dir: Path, problems: list[str] | None = None,
                compare_cmd: str = "parity compare --run {run_dir}") -> list[Verdict] | None:
    """run_dir/checks.json's verdicts. Without `problems`, anything wrong raises RunDirError; with it (the
    report), each problem is appended there instead: None for a file that is missing, unreadable or of
    another schema version, and the valid verdicts of a file with invalid ones."""
    found: list[str] = []
    out = _read_checks(Path(run_dir), found, compare_cmd)
    if problems is None:
        if found:
            raise RunDirError("; ".join(found))
        return out
    problems += found
    return out


def _read_checks(run_dir: Path, problems: list[str], compare_cmd: str) -> list[Verdict] | None:
    path = run_dir / "checks.json"
    if not path.exists():
        problems.append(f"no checks.json in {run_dir}: the run was not compared "
                        f"(run `{compare_cmd.format(run_dir=run_dir)}`, then report again)")
        return None
    try:
        raw = path.read_bytes()
        raw.decode("utf-8")
        # pydantic's parser: several times faster than json.loads on a large checks.json, the same result on
        # valid JSON, Infinity and NaN included
        doc: Any = pydantic_core.from_json(raw, allow_inf_nan=True)
    except (OSError, ValueError):  # unreadable, or not JSON: json.loads reads it again and words the problem
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            problems.append(f"checks file {path.name} is unreadable: {type(e).__name__}: {e}")
            return None
    if not isinstance(doc, dict) or doc.get("schema_version") != CHECKS_SCHEMA_VERSION:
        got = doc.get("schema_version") if isinstance(doc, dict) else type(doc).__name__
        problems.append(f"checks.json schema_version {got!r}: this harness reads version {CHECKS_SCHEMA_VERSION}")
        return None
    try:  # all at once; a file with an invalid verdict is gone through one by one below, for the messages
        return _VERDICTS.validate_python(doc.get("verdicts", []))
    except ValidationError:
        pass
    out = []
    for i, v in enumerate(doc.get("verdicts", [])):
        try:
            out.append(Verdict.model_validate(v))
        except ValidationError as e:
            problems.append(f"checks.json verdict #{i} is not a valid Verdict: {str(e).splitlines()[0]}")
    return out


# ---------------------------------------------------------------- compare -> report, in memory
@dataclass
class Compared:
    """What `parity compare` read and concluded, handed to the report of the same process: the report then
    neither parses the records again nor reads checks.json back."""

    run_dir: Path
    verdicts: list[Verdict]
    records: RunRecords
    suite_path: str | None = None  # the suite file compare loaded, and the suite as loaded (before profiles)
    suite: Any = None
