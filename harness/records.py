"""The record format: the contract between backends (which write it) and checks (which read it).

One JSON object per line in `<run>/records/<backend>.<phase>.jsonl`. Every
line carries `schema_version` and `kind`:

- `generation`: one per (case, prompt, sample, variant): what `generate` returned.
- `score`: one per scored completion: teacher-forced logprobs of given tokens
  (`get_per_token_logps`), the reference adding its exact per-mode values.
- `error`: a case (or a whole backend) that failed; `reason` says why.
- `session`: one per backend process start: versions, device, model.

See docs/records.md for the field-by-field schema (generated from these
classes by `parity schema`). Lines are appended with a single write each and
fsync'd, so an interrupted run loses at most the line being written, which
the reader reports with file and line number.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Iterable, Iterator, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from harness.spec import LogprobMode

SCHEMA_VERSION = 1
Phase = Literal["generate", "score"]


class _Base(BaseModel):
    # -inf is a real value here (a token masked by top-k/top-p has processed logprob -inf).
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")
    schema_version: int = SCHEMA_VERSION
    run_id: str
    backend: str
    phase: Phase


class CaseKey(BaseModel):
    """Where a record belongs: case, prompt, sample, variant."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    suite: str
    case_id: str
    case_hash: str
    weights: Literal["A", "B"] = "A"
    prompt_index: int
    sample_index: int = 0
    variant: str = "main"  # "main", "repeat-1", "alone"


class SessionRecord(_Base):
    kind: Literal["session"] = "session"
    versions: dict[str, str]
    device: str
    model: dict[str, str]
    models: dict[str, dict[str, str]] = {}
    logprob_mode: LogprobMode | None = None
    config: dict = {}
    started_at: float


class GenerationRecord(_Base):
    kind: Literal["generation"] = "generation"
    key: CaseKey
    model_hash: str
    prompt_ids: list[int]
    completion_ids: list[int]
    completion_logprobs: list[float] | None
    logprob_mode: LogprobMode
    prompt_logprobs: list[float | None] | None = None
    completion_top: list[dict[str, float]] | None = Field(
        None, description="per completion position: top-k token id (as string) -> logprob, in the record's mode")
    finish_reason: Literal["stop", "length", "abort"] | None
    stop_reason: int | str | None = None
    text: str = ""
    native_params: dict = {}
    timings: dict[str, float] = {}


class ScoreRecord(_Base):
    kind: Literal["score"] = "score"
    key: CaseKey
    model_hash: str
    source_backend: str = Field(description="whose completion was scored")
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float] = Field(description="teacher-forced logprob of each completion token (backend's own mode)")
    logprob_mode: LogprobMode
    by_mode: dict[str, list[float]] = Field(
        default_factory=dict, description="reference only: exact logprobs per mode (raw, temperature, processed)")
    top: list[dict[str, float]] | None = Field(None, description="raw top-k per completion position")
    timings: dict[str, float] = {}


class ErrorRecord(_Base):
    kind: Literal["error"] = "error"
    key: CaseKey | None = None
    source_backend: str | None = Field(None, description="score phase: whose completions were being scored")
    reason: str
    error_type: str
    detail: str = ""


Record = Annotated[Union[SessionRecord, GenerationRecord, ScoreRecord, ErrorRecord], Field(discriminator="kind")]
_ADAPTER: TypeAdapter = TypeAdapter(Record)


class RecordFileError(ValueError):
    """A record file that cannot be read; names file and line."""


def records_path(run_dir: Path, backend: str, phase: str) -> Path:
    return Path(run_dir) / "records" / f"{backend}.{phase}.jsonl"


class RecordWriter:
    """Append-only JSONL writer: one os.write per record, fsync'd, so nothing recorded is lost."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._drop_torn_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _drop_torn_tail(self) -> None:
        """A writer killed mid-line leaves a partial last line: it was never a record, drop it
        so that resumed appends start on a clean line."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    def write(self, record: BaseModel) -> None:
        self.write_many([record])

    def write_many(self, records: list[BaseModel]) -> None:
        """All lines in one write(2): a case's records land together or not at all."""
        if not records:
            return
        data = "".join(r.model_dump_json() + "\n" for r in records).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path, *, tolerate_torn_tail: bool = True) -> list:
    """Parse and validate every line. A torn last line (a killed writer) is dropped when
    `tolerate_torn_tail`; any other bad line raises RecordFileError naming file and line."""
    path = Path(path)
    out = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(_ADAPTER.validate_python(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as e:
            is_last = all(not rest.strip() for rest in lines[i:])
            if tolerate_torn_tail and is_last and isinstance(e, json.JSONDecodeError):
                continue
            what = "not JSON" if isinstance(e, json.JSONDecodeError) else "not a valid record"
            raise RecordFileError(f"{path}:{i}: {what}: {str(e).splitlines()[0]}") from None
    return out


def read_run(run_dir: Path) -> list:
    recs = []
    for p in sorted((Path(run_dir) / "records").glob("*.jsonl")):
        recs += read_records(p)
    return recs


def iter_kind(records: Iterable, kind: str) -> Iterator:
    return (r for r in records if r.kind == kind)


def json_schema() -> dict:
    return _ADAPTER.json_schema()
