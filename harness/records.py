"""The record format: the contract between backends (which write it) and checks (which read it).

One JSON object per line in `<run>/records/<backend>.<phase>.jsonl`. Every
line carries `schema_version` and `kind`:

- `generation`: one per (case, prompt, sample, variant): what `generate` returned.
- `score`: one per scored completion: teacher-forced logprobs of given tokens
  (`get_per_token_logps`), the reference adding its exact per-mode values and what the
  checks ask of it (other weight set, first-step distribution, greedy effects, sequence PIT).
- `error`: a case (or a whole backend) that failed; `reason` says why.
- `session`: one per backend process start: versions, device, model.

See docs/records.md for the field-by-field schema (generated from these
classes by `parity schema`). Lines are appended with a single write each and
fsync'd, so an interrupted run loses at most the line being written, which
the reader reports with file and line number (a resumed writer drops it).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from pathlib import Path
from typing import Annotated, Iterator, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from harness.spec import LogprobMode

SCHEMA_VERSION = 2
Phase = Literal["generate", "score"]


class _Base(BaseModel):
    # -inf is a real value here (a token masked by top-k/top-p has processed logprob -inf).
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")
    schema_version: int = Field(SCHEMA_VERSION, description="bumped on any incompatible change")
    run_id: str = Field(description="the run directory's name")
    backend: str = Field(description="reference, vllm, sglang_jax, ...")
    phase: Phase = Field(description="generate, or score (teacher-forced scoring of recorded completions)")


class CaseKey(BaseModel):
    """Where a record belongs: case, prompt, sample, variant."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    suite: str = Field(description="suite name")
    case_id: str = Field(description="case id, unique in its suite")
    case_hash: str = Field(description="content hash of the case: records compare only when equal")
    weights: Literal["A", "B"] = Field("A", description="weight set live when recorded")
    prompt_index: int = Field(description="index into the case's prompts; -1 for a whole-case error")
    sample_index: int = Field(0, description="0..n-1 for n samples per prompt, in the engine's order")
    variant: str = Field("main", description="'main', 'repeat-K' (same seed again), 'alone-I' (prompt I alone), "
                                             "'tunix' (through tunix's generate), 'rule-main' / 'rule-tunix' (each "
                                             "draw again alone, with the seed its documented rule gives)")


#: variants recorded through the tunix rollout surface and its seed-rule reproductions (harness/checks/tunix.py
#: checks them); the per-engine comparisons of the rich API read the other variants
SURFACE_VARIANTS = ("tunix", "rule-main", "rule-tunix")


class SessionRecord(_Base):
    """One per backend process and phase: what produced the records that follow."""

    kind: Literal["session"] = "session"
    versions: dict[str, str] = Field(description="package versions that decide the numbers")
    device: str = Field(description="where it ran, in words")
    dtype: str | None = Field(None, description="the dtype it computed in, as the engine reports it (float32, "
                                                "bfloat16, float16; float64 for the reference)")
    model: dict[str, str] = Field(description="weight set A: path, content_hash, name")
    models: dict[str, dict[str, str]] = Field({}, description="every weight set available: A, B")
    logprob_mode: LogprobMode | None = Field(None, description="what this backend's generate logprobs mean")
    config: dict = Field({}, description="engine options (and compat workarounds that were on)")
    started_at: float = Field(description="unix time")


class GenerationRecord(_Base):
    """One completion: what `generate` returned for one (case, prompt, sample, variant)."""

    kind: Literal["generation"] = "generation"
    key: CaseKey
    model_hash: str = Field(description="content hash of the live weight set")
    prompt_ids: list[int] = Field(description="the prompt exactly as sent")
    completion_ids: list[int] = Field(description="generated ids, unpadded; a stop/EOS token that ended it included")
    completion_logprobs: list[float] | None = Field(
        description="logprob of each completion token given everything before it, in logprob_mode")
    logprob_mode: LogprobMode = Field(description="raw | temperature | processed (harness/processing.py)")
    prompt_logprobs: list[float | None] | None = Field(
        None, description="one per prompt token, the first None (nothing precedes it); raw")
    completion_top: list[dict[str, float]] | None = Field(
        None, description="per completion position: top-k token id (as string) -> logprob, in the record's mode")
    finish_reason: Literal["stop", "length", "abort"] | None = Field(description="stop: EOS/stop token; length")
    stop_reason: int | str | None = Field(None, description="the stop token id when a stop_token_ids entry ended it")
    text: str = Field("", description="decoded completion")
    native_params: dict = Field({}, description="the engine's own sampling parameters, exactly as sent")
    native_params_source: Literal["sent", "derived"] = Field(
        "derived", description="sent: captured where the rollout calls the engine; derived: recomputed from the "
                               "spec by the runner (a backend that cannot capture them)")
    tunix: dict | None = Field(
        None, description="variant 'tunix' only: this row as a trainer receives it from generate(prompts, "
                          "RolloutConfig): row, pad_id, eos_id, left_padded_prompt, tokens (padded), logprobs, "
                          "per_token_logps (get_per_token_logps of the padded arrays, this row) and score (the "
                          "same rollout's rich teacher-forced score of the row's unpadded tokens)")
    timings: dict[str, float] = Field({}, description="seconds: batch_generate_s, ...")


class FirstStepDistribution(BaseModel):
    """The reference's exact first-step distribution over the vocabulary, for `sampling_distribution`.

    Computed by harness/sampling/expect.py from the float64 logits after the prompt."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")
    raw: list[float] = Field(description="log-probabilities of the raw logits")
    temperature: list[float] = Field(description="log-probabilities at the case's temperature")
    processed: list[float] = Field(description="log-probabilities of the canonical sampling distribution "
                                               "(temperature, then top-k, top-p, min-p in vLLM's order)")
    processed_by_engine: dict[str, list[float]] = Field(
        {}, description="engine -> the processed distribution under that engine's own order of the filters, for "
                        "each engine whose sampling dialect declares one (SamplingDialect.processed)")
    processed_without: dict[str, list[float]] = Field(
        {}, description="field -> the processed distribution with that one set field (top_k, top_p, min_p, "
                        "temperature) at its neutral value: the diagnosis's alternatives")
    borderline: list[int] = Field([], description="token ids whose membership of the support float32 may decide "
                                                  "either way (thresholds within a relative 1e-3, top-k ties)")


class GreedyEffects(BaseModel):
    """The reference's greedy expectation at each completion position, for `sampling_effects`.

    Position i is teacher-forced on the completion's first i tokens (harness/sampling/expect.py)."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")
    argmax: list[int] = Field(description="the greedy token under the spec (penalties, logit_bias, min_tokens)")
    margin: list[float] = Field(description="processed logit of that argmax minus that of the completion's token "
                                            "(inf where the completion's token is impossible)")
    without: dict[str, list[int]] = Field(
        {}, description="effect field the spec sets -> the argmax with that field at its neutral value")
    eos: list[int] = Field([], description="the model's EOS token ids")


class SequencePIT(BaseModel):
    """Where each sampled token sits in the exact processed distribution at its position, for `sampling_sequence`.

    The two inputs of its randomised probability integral transform, teacher-forced on the sampled prefix
    (harness/sampling/expect.py, harness.sampling.stats.pit_values)."""

    model_config = ConfigDict(extra="forbid")
    above: list[float] = Field(description="processed probability mass of the tokens ranked above the sampled one "
                                           "(descending probability, ties by token id)")
    p: list[float] = Field(description="the sampled token's processed probability (0 outside the support)")


class ScoreRecord(_Base):
    """Teacher-forced logprobs of one recorded completion (`get_per_token_logps`)."""

    kind: Literal["score"] = "score"
    key: CaseKey
    model_hash: str
    source_backend: str = Field(description="whose completion was scored")
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float] = Field(description="teacher-forced logprob of each completion token (backend's own mode)")
    logprob_mode: LogprobMode
    by_mode: dict[LogprobMode, list[float]] = Field(
        default_factory=dict, description="reference only: exact logprobs per mode (raw, temperature, processed)")
    other_weights: dict[Literal["A", "B"], dict[LogprobMode, list[float]]] = Field(
        default_factory=dict, description="reference only, cases checking weight_update: weight set -> by_mode of "
                                          "the same tokens under the weight set that is not live")
    distribution: FirstStepDistribution | None = Field(
        None, description="reference only, sample 0 of each prompt of cases checking sampling_distribution")
    effects: GreedyEffects | None = Field(None, description="reference only, cases checking sampling_effects")
    sequence: SequencePIT | None = Field(None, description="reference only, cases checking sampling_sequence")
    top: list[dict[str, float]] | None = Field(None, description="raw top-k per completion position")
    timings: dict[str, float] = {}


def reference_fields() -> dict:
    """A score record's reference-only fields, empty (as on an engine's score record): what a copy of a
    reference score record drops to stand for an engine's."""
    return {"by_mode": {}, "other_weights": {}, "distribution": None, "effects": None, "sequence": None}


class ErrorRecord(_Base):
    """A case (key set) or a whole backend process (key None) that failed, or a skipped case."""

    kind: Literal["error"] = "error"
    key: CaseKey | None = None
    source_backend: str | None = Field(None, description="score phase: whose completions were being scored")
    reason: str = Field(description="one line: what failed and why")
    error_type: str = Field(description="exception class, or WorkerCrashed, CaseTimeout, BackendProcessFailed, "
                                        "Skipped (not an error: a deselected case)")
    detail: str = Field("", description="traceback or log tail")


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


def prune_records(path: Path, drop) -> int:
    """Rewrite a record file without the lines for which `drop(parsed JSON)` is true (and without a torn last
    line); returns how many records went. Only for a file no one else is writing (the owner, before it
    starts a writer). Lines that are not JSON stay, for the reader to report."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_bytes().split(b"\n")
    tail = lines.pop()  # b"" after a final newline, else a torn last line
    keep, dropped = [], 0
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            keep.append(line)
            continue
        if isinstance(doc, dict) and drop(doc):
            dropped += 1
        else:
            keep.append(line)
    if dropped or tail:
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("wb") as fh:
            fh.write(b"".join(line + b"\n" for line in keep))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return dropped


def _field_errors(e: ValidationError) -> str:
    """pydantic's errors as "field 'key.case_hash': Field required; ..." (the union tag, e.g. 'generation',
    leads the location: it names the kind, not a field)."""
    parts = []
    for err in e.errors()[:3]:
        loc = list(err["loc"])
        if loc and loc[0] in ("session", "generation", "score", "error"):
            loc = loc[1:]
        field = ".".join(str(x) for x in loc) or "(record)"
        parts.append(f"field '{field}': {err['msg']}")
    more = f" (and {len(e.errors()) - 3} more)" if len(e.errors()) > 3 else ""
    return "; ".join(parts) + more


#: version-1 by_mode keys besides the plain modes (harness/sampling/expect.py and the recorder wrote them)
_V1_DIST, _V1_FX, _V1_SEQ = "dist:", "fx:", "seq:"


def upgrade(doc: object) -> object:
    """A parsed record line as version 2, in place (any other version or shape is returned as it is, for the
    validation to judge). Version 1 stored the reference's extras as string keys of a score record's
    `by_mode`, token ids as floats: "<mode>@<set>" (under the other weight set), "dist:<mode>",
    "dist:processed:<engine>", "dist:processed:without:<field>", "dist:borderline", "fx:argmax", "fx:margin",
    "fx:without:<field>", "fx:eos", "seq:above", "seq:p". The one place that reads those keys: they become
    `other_weights`, `distribution`, `effects` and `sequence`. The other kinds did not change."""
    if not isinstance(doc, dict) or doc.get("schema_version") != 1:
        return doc
    doc["schema_version"] = SCHEMA_VERSION
    by_mode = doc.get("by_mode")
    if doc.get("kind") != "score" or not isinstance(by_mode, dict):
        return doc
    modes, other, dist, fx, seq = {}, {}, {}, {}, {}
    for k, v in by_mode.items():
        if k.startswith(_V1_DIST):
            name = k[len(_V1_DIST):]
            if name.startswith("processed:without:"):
                dist.setdefault("processed_without", {})[name[len("processed:without:"):]] = v
            elif name.startswith("processed:"):
                dist.setdefault("processed_by_engine", {})[name[len("processed:"):]] = v
            elif name == "borderline":
                dist[name] = [int(t) for t in v]
            else:
                dist[name] = v
        elif k.startswith(_V1_FX):
            name = k[len(_V1_FX):]
            if name.startswith("without:"):
                fx.setdefault("without", {})[name[len("without:"):]] = [int(t) for t in v]
            else:
                fx[name] = [int(t) for t in v] if name in ("argmax", "eos") else v
        elif k.startswith(_V1_SEQ):
            seq[k[len(_V1_SEQ):]] = v
        elif "@" in k:
            mode, _, wset = k.rpartition("@")
            other.setdefault(wset, {})[mode] = v
        else:
            modes[k] = v
    doc["by_mode"] = modes
    if other:
        doc["other_weights"] = other
    if dist:
        doc["distribution"] = dist
    if fx:
        doc["effects"] = fx
    if seq:
        doc["sequence"] = seq
    return doc


def _validate_line(path: Path, i: int, line: str, lines: list[str], tolerate_torn_tail: bool):
    """The reference path for one line: json.loads, the version-1 upgrade, then validation; raises
    RecordFileError (or returns None for a torn last line when tolerated). Only lines that the fast path
    (pydantic's own JSON parser) rejects come here: a version-1 score record whose by_mode carries more than
    the plain modes among them (its other lines read as they are: nothing else changed)."""
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as e:
        is_last = all(not rest.strip() for rest in lines[i:])
        if tolerate_torn_tail and is_last:
            return None
        what = "last line cut off (a writer killed mid-line?)" if is_last else "not JSON"
        raise RecordFileError(f"{path}:{i}: {what}: {e}") from None
    try:
        return _ADAPTER.validate_python(upgrade(doc))
    except ValidationError as e:
        kind = doc.get("kind") if isinstance(doc, dict) else None
        what = f"not a valid {kind} record" if kind in ("session", "generation", "score", "error") else \
            "not a valid record"
        raise RecordFileError(f"{path}:{i}: {what}: {_field_errors(e)}") from None


#: objects left over by a paused section above which they are frozen on its exit (gc_paused)
GC_FREEZE_OBJECTS = 1_000_000


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (reentrant). Loading a large run creates millions of container
    objects (records, their lists and top-k dicts) that all stay alive, and the collector would traverse
    them again and again as they pile up; records have no reference cycles, so nothing is lost by waiting.
    Collection resumes on exit. When the outermost section leaves over GC_FREEZE_OBJECTS new objects (a
    large run), they are frozen first (gc.freeze: the collector ignores them from then on; refcounting still
    frees them): otherwise the next collections traverse all of them two or three times as they age through
    the generations, 2.4 s of a 100k-record compare + report. Only reference cycles among them would outlive
    their use, and a run's records, verdicts and reports have none."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if gc.get_count()[0] > GC_FREEZE_OBJECTS:
                gc.freeze()
            gc.enable()


def read_records(path: Path, *, tolerate_torn_tail: bool = False) -> list:
    """Parse and validate every line; a bad line raises RecordFileError naming file, line and field. A torn
    last line (a killed writer) is an error too, unless `tolerate_torn_tail` (resume: the next RecordWriter
    on the file drops it), so that a cut file never reads as a backend that returned less.

    Each line is parsed and validated in one step by pydantic's JSON parser (several times faster than
    json.loads + validate_python on 100k-record runs); a line it rejects goes through json.loads +
    validate_python again, which decides and words the error as always. Version-1 lines read as version 2
    (`upgrade`). A whole run directory: harness.rundir.RunRecords."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RecordFileError(f"{path}: cannot read: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise RecordFileError(f"{path}:{line}: not UTF-8 text: {e.reason}") from None
    if "\r" in text:  # what reading in text mode did: universal newlines
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    lines = text.split("\n")
    validate = _ADAPTER.validate_json
    with gc_paused():
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(validate(line))
            except ValidationError:
                rec = _validate_line(path, i, line, lines, tolerate_torn_tail)
                if rec is not None:
                    out.append(rec)
    for rec in out:  # a version-1 line that needed no upgrade (all but a score record with extras) is version 2
        if rec.schema_version == 1:
            rec.schema_version = SCHEMA_VERSION
    return out


def json_schema() -> dict:
    return _ADAPTER.json_schema()


def _type_name(ann: object) -> str:
    text = str(ann).replace("typing.", "").replace("harness.records.", "").replace("<class '", "").replace("'>", "")
    return text.replace("NoneType", "None")


def schema_markdown() -> str:
    """docs/records.md, generated from the classes so the document cannot drift from the code."""
    out = ["# The record format", "",
           "Generated by `python -m harness schema --markdown` from `harness/records.py`; a test keeps it in sync.",
           "", f"Schema version: **{SCHEMA_VERSION}**. One JSON object per line in "
           "`<run>/records/<backend>.<phase>.jsonl`; `kind` tells which table below applies. Floats may be "
           "`-Infinity` (a token masked out by top-k/top-p has processed logprob -inf).", "",
           "Version 1 files (older runs, golden baselines) are read as version 2 (`harness.records.upgrade`): "
           "version 1 kept the reference's extras as string keys of a score record's `by_mode` (`\"<mode>@<set>\"`, "
           "`\"dist:*\"`, `\"fx:*\"`, `\"seq:*\"`, token ids as floats); they become `other_weights`, "
           "`distribution`, `effects` and `sequence`. Nothing else changed.", ""]
    paras = (__doc__ or "").split("\n\n")
    out += paras[2].splitlines() + ["", " ".join(paras[3].split()).split(". ", 1)[1], ""]
    for cls in (CaseKey, SessionRecord, GenerationRecord, ScoreRecord, FirstStepDistribution, GreedyEffects,
                SequencePIT, ErrorRecord):
        out += [f"## {cls.__name__}", "", (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "", "",
                "| field | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, f in cls.model_fields.items():
            default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
            out.append(f"| `{name}` | `{_type_name(f.annotation)}` | {default} | {f.description or ''} |")
        out.append("")
    return "\n".join(out)
