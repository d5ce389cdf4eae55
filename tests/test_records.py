"""The record format: append-only, nothing lost, a bad line named by file and line."""

import json

import pytest

from harness.records import (
    CaseKey, ErrorRecord, GenerationRecord, RecordFileError, RecordWriter, read_records, json_schema,
)


def gen(i: int) -> GenerationRecord:
    return GenerationRecord(
        run_id="r", backend="b", phase="generate",
        key=CaseKey(suite="s", case_id="c", case_hash="h", prompt_index=i),
        model_hash="m", prompt_ids=[1, 2], completion_ids=[3, 1], completion_logprobs=[-0.5, float("-inf")],
        logprob_mode="processed", prompt_logprobs=[None, -1.0], finish_reason="stop",
    )


def test_roundtrip_keeps_minus_infinity(tmp_path):
    p = tmp_path / "x.jsonl"
    with RecordWriter(p) as w:
        w.write_many([gen(0), gen(1)])
        w.write(ErrorRecord(run_id="r", backend="b", phase="generate", reason="boom", error_type="RuntimeError"))
    recs = read_records(p)
    assert [r.kind for r in recs] == ["generation", "generation", "error"]
    assert recs[0].completion_logprobs[1] == float("-inf") and recs[1].key.prompt_index == 1


def test_torn_tail_is_dropped_and_resume_appends_cleanly(tmp_path):
    p = tmp_path / "x.jsonl"
    with RecordWriter(p) as w:
        w.write(gen(0))
    with p.open("ab") as fh:  # a writer killed mid-line
        fh.write(gen(1).model_dump_json().encode()[:40])
    with pytest.raises(RecordFileError, match=r"x\.jsonl:2: last line cut off"):
        read_records(p)  # never read as a backend that returned less
    assert len(read_records(p, tolerate_torn_tail=True)) == 1
    with RecordWriter(p) as w:
        w.write(gen(2))
    assert [r.key.prompt_index for r in read_records(p)] == [0, 2]


def test_corrupt_line_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    with RecordWriter(p) as w:
        w.write(gen(0))
    with p.open("a") as fh:
        fh.write("{not json\n")
        fh.write(gen(1).model_dump_json() + "\n")
    with pytest.raises(RecordFileError, match=r"x\.jsonl:2: not JSON"):
        read_records(p)


def test_invalid_record_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(gen(0).model_dump_json().replace('"processed"', '"cooked"') + "\n")
    with pytest.raises(RecordFileError, match=r"x\.jsonl:1: not a valid generation record: field 'logprob_mode'"):
        read_records(p)


def test_missing_field_is_named(tmp_path):
    p = tmp_path / "x.jsonl"
    doc = json.loads(gen(0).model_dump_json())
    del doc["key"]["case_hash"]
    p.write_text(gen(1).model_dump_json() + "\n" + json.dumps(doc) + "\n")
    with pytest.raises(RecordFileError, match=r"x\.jsonl:2: not a valid generation record: field 'key.case_hash'"):
        read_records(p)


def test_schema_lists_every_kind():
    text = str(json_schema())
    for kind in ("generation", "score", "error", "session"):
        assert kind in text


def test_docs_records_md_is_current():
    from pathlib import Path

    from harness.records import schema_markdown

    doc = Path(__file__).parent.parent / "docs" / "records.md"
    assert doc.read_text() == schema_markdown() + "\n", "regenerate: python -m harness schema --markdown > docs/records.md"


def test_fast_reader_gives_what_json_loads_and_validation_give(tmp_path):
    """read_records validates each line with pydantic's JSON parser; the result must be what json.loads +
    validate_python made before (NaN/Infinity, ints for floats, escapes, extra whitespace, CRLF)."""
    import json
    import math

    from harness.records import _ADAPTER

    lines = [gen(0).model_dump_json(),
             gen(1).model_dump_json().replace('"completion_logprobs":[-0.5,-Infinity]',
                                              '"completion_logprobs":[-1, NaN]').replace('"text":""',
                                                                                         '"text":"\\u00e9\\n\\"x\\""'),
             "  " + gen(2).model_dump_json().replace(",", ", ") + " \r"]
    p = tmp_path / "x.jsonl"
    p.write_text("\n".join(lines) + "\n")
    got = read_records(p)
    want = [_ADAPTER.validate_python(json.loads(line)) for line in lines]
    assert len(got) == 3 and [g.model_dump_json() for g in got] == [w.model_dump_json() for w in want]
    assert got[1].completion_logprobs[0] == -1.0 and math.isnan(got[1].completion_logprobs[1])
    assert got[1].text == 'é\n"x"'
    p.write_text("\r".join(lines[:2]) + "\r\n", newline="")  # old Mac line ends, as text mode reads them
    assert [g.key.prompt_index for g in read_records(p)] == [0, 1]


def test_every_read_sees_any_change(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(gen(0).model_dump_json() + "\n")
    first = read_records(p)
    # same size, same second: only the content differs
    p.write_text(gen(0).model_dump_json().replace('"case_id":"c"', '"case_id":"d"') + "\n")
    assert read_records(p)[0].key.case_id == "d" and first[0].key.case_id == "c"
    assert read_records(p)[0] is not read_records(p)[0]  # no cache: parsed every time


def _v1_score(by_mode: dict) -> dict:
    """A score record line as version 1 wrote it: the reference's extras as string keys of by_mode."""
    return {"schema_version": 1, "run_id": "r", "backend": "reference", "phase": "score", "kind": "score",
            "key": {"suite": "s", "case_id": "c", "case_hash": "h", "weights": "A", "prompt_index": 0,
                    "sample_index": 0, "variant": "main"},
            "model_hash": "m", "source_backend": "vllm", "prompt_ids": [1, 2], "completion_ids": [3, 4],
            "logprobs": [-0.5, -0.25], "logprob_mode": "raw", "by_mode": by_mode, "top": None, "timings": {}}


def test_version_1_string_keys_become_the_typed_extras(tmp_path):
    from harness.records import SCHEMA_VERSION, ScoreRecord

    modes = {"raw": [-0.5, -0.25], "temperature": [-0.6, -0.2], "processed": [-0.7, float("-inf")]}
    v1 = _v1_score({**modes, "raw@B": [-1.5, -1.25], "processed@B": [-2.0, -3.0],
                    "dist:raw": [-1.0, -2.0], "dist:temperature": [-1.1, -2.1], "dist:processed": [-0.1, float("-inf")],
                    "dist:processed:sglang_jax": [-0.2, -3.0], "dist:processed:without:top_k": [-0.3, -2.5],
                    "dist:borderline": [7.0], "fx:argmax": [3.0, 9.0], "fx:margin": [0.0, float("inf")],
                    "fx:eos": [2.0], "fx:without:logit_bias": [3.0, 4.0], "seq:above": [0.25, 0.0],
                    "seq:p": [0.5, 0.75]})
    plain = _v1_score(dict(modes))
    p = tmp_path / "reference.score.jsonl"
    p.write_text(json.dumps(v1) + "\n" + json.dumps(plain) + "\n")
    rec, rec_plain = read_records(p)
    assert isinstance(rec, ScoreRecord) and rec.by_mode == modes and rec_plain.by_mode == modes
    assert rec.schema_version == SCHEMA_VERSION == 2
    assert rec.other_weights == {"B": {"raw": [-1.5, -1.25], "processed": [-2.0, -3.0]}}
    d = rec.distribution
    assert (d.raw, d.temperature, d.processed) == ([-1.0, -2.0], [-1.1, -2.1], [-0.1, float("-inf")])
    assert d.processed_by_engine == {"sglang_jax": [-0.2, -3.0]} and d.processed_without == {"top_k": [-0.3, -2.5]}
    assert d.borderline == [7] and type(d.borderline[0]) is int
    fx = rec.effects
    assert fx.argmax == [3, 9] and all(type(t) is int for t in fx.argmax + fx.eos + fx.without["logit_bias"])
    assert fx.margin == [0.0, float("inf")] and fx.eos == [2] and fx.without == {"logit_bias": [3, 4]}
    assert (rec.sequence.above, rec.sequence.p) == ([0.25, 0.0], [0.5, 0.75])
    assert (rec_plain.other_weights, rec_plain.distribution, rec_plain.effects, rec_plain.sequence) == \
        ({}, None, None, None)
    # written again it is a version-2 line that reads back the same, through the fast path
    q = tmp_path / "again.jsonl"
    with RecordWriter(q) as w:
        w.write(rec)
    assert '"dist:' not in q.read_text() and read_records(q) == [rec]


def test_version_2_score_carries_no_string_keys(tmp_path):
    """The string keys are read from version-1 lines only: in a version-2 record they are an error naming the
    field."""
    doc = _v1_score({"raw": [-0.5, -0.25], "dist:processed": [-0.1, -2.0]})
    doc["schema_version"] = 2
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps(doc) + "\n")
    with pytest.raises(RecordFileError, match=r"x\.jsonl:1: not a valid score record: field 'by_mode\.dist:processed"):
        read_records(p)


def test_committed_golden_run_reads_its_weight_update_scores_typed():
    """The committed golden run (version 1 or later) reads with the other weight set's scores typed."""
    from pathlib import Path

    from harness.rundir import RunRecords

    golden = sorted((Path(__file__).resolve().parent.parent / "golden").glob("*/records"))
    assert golden
    scores = RunRecords.load(golden[0].parent).scores
    other = [s for s in scores if s.other_weights]
    assert other and all(set(s.by_mode) <= {"raw", "temperature", "processed"} for s in scores)
    assert all(set(s.other_weights) == {"B" if s.key.weights == "A" else "A"} for s in other)


def test_every_record_of_a_version_1_file_reads_as_version_2(tmp_path):
    doc = json.loads(gen(0).model_dump_json()) | {"schema_version": 1}
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps(doc) + "\n")
    assert [r.schema_version for r in read_records(p)] == [2]
