"""Resume and repair logic (pure): what a new `parity record` drops, re-runs and skips, and output errors.

The real kills (worker, supervisor, driver, Ctrl-C) are in tests/e2e/test_faults.py; here a stub runner
stands in for an engine, so that the bookkeeping is tested on its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.backends.base import Runner, Sample, Scored
from harness.model import ModelRef
from harness.recorder import Recorder, pending
from harness.records import ErrorRecord, RecordWriter, prune_records, read_records, records_path
from harness.suite import SuiteError, load_suite
from harness.supervise import repair

ROOT = Path(__file__).parent.parent
SUITE = ROOT / "tests" / "e2e" / "data" / "tiny.yaml"
MODEL = ModelRef(path=Path("/nonexistent"), content_hash="h", name="stub")


class StubRunner(Runner):
    name = "reference"

    def __init__(self, fail_on: set[int] = frozenset()):
        super().__init__(MODEL)
        self.fail_on = fail_on
        self.calls = 0

    def versions(self):
        return {}

    def device(self):
        return "cpu"

    def dtype(self):
        return "float64"

    def native_params(self, spec):
        return {}

    def generate(self, prompts, spec):
        self.calls += 1
        if prompts[0][0] in self.fail_on:
            raise RuntimeError("engine fell over")
        return [[Sample(completion_ids=[1, 2], completion_logprobs=[-0.5, -0.25], finish_reason="length")]
                for _ in prompts]

    def score(self, prompts, completions, spec):
        return [Scored(logprobs=[-0.5] * len(c)) for c in completions]

    def set_weights(self, model):
        pass


def recorder(run_dir: Path, runner: Runner) -> Recorder:
    suite = load_suite(SUITE)
    ids = {c.id: [list(p.ids) for p in c.prompts] for c in suite.cases}
    return Recorder(runner, suite, run_dir, "r", {"A": MODEL, "B": None}, ids, quiet=True)


def kinds(run_dir: Path, phase: str) -> list[tuple[str, str]]:
    return [(r.kind, r.key.case_id if getattr(r, "key", None) else "-")
            for r in read_records(records_path(run_dir, "reference", phase)) if r.kind != "session"]


def test_a_failed_case_is_recorded_then_repaired_by_the_next_attempt(tmp_path):
    suite = load_suite(SUITE)
    assert recorder(tmp_path, StubRunner(fail_on={40})).run_generate() == 1  # case two's first prompt is 40
    assert ("error", "two") in kinds(tmp_path, "generate")
    assert pending(tmp_path, "reference", suite, ["generate"]) is False  # within an attempt: done, not retried
    repair(tmp_path, "reference", ["generate"])
    assert kinds(tmp_path, "generate") == [("generation", "one")] * 2  # the error is gone, case one kept
    assert pending(tmp_path, "reference", suite, ["generate"]) is True
    runner = StubRunner()
    assert recorder(tmp_path, runner).run_generate() == 0
    assert runner.calls == 1  # only case two ran again
    assert sorted(kinds(tmp_path, "generate")) == [("generation", "one")] * 2 + [("generation", "two")] * 2
    assert pending(tmp_path, "reference", suite, ["generate", "score"]) is True
    recorder(tmp_path, StubRunner()).run_score()
    assert pending(tmp_path, "reference", suite, ["generate", "score"]) is False


def test_the_case_left_in_flight_is_dropped_and_driver_errors_replaced(tmp_path):
    recorder(tmp_path, StubRunner()).run_generate()
    path = records_path(tmp_path, "reference", "generate")
    with RecordWriter(path) as w:  # what the driver writes when the phase process failed
        w.write(ErrorRecord(run_id="r", backend="reference", phase="generate", reason="exited with code 1",
                            error_type="BackendProcessFailed"))
    two = load_suite(SUITE).case("two")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "reference.json").write_text(json.dumps(  # killed while case two was in flight
        {"pid": 1, "phase": "generate", "case_id": "two", "case_hash": two.content_hash(), "weights": "A",
         "source_backend": "", "started_at": 0}))
    with path.open("ab") as fh:  # and its write cut short
        fh.write(b'{"schema_version": 1, "kind": "generation", "run_')
    repair(tmp_path, "reference", ["generate"])
    assert kinds(tmp_path, "generate") == [("generation", "one")] * 2
    assert not (tmp_path / "state" / "reference.json").exists()
    assert path.read_bytes().endswith(b"\n")


def test_a_broken_stderr_after_a_complete_write_is_not_an_error(tmp_path, monkeypatch):
    class Broken:
        def write(self, *_):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    rec = recorder(tmp_path, StubRunner())
    rec.quiet = False
    monkeypatch.setattr(sys, "stderr", Broken())
    assert rec.run_generate() == 0
    monkeypatch.undo()
    assert all(k == "generation" for k, _ in kinds(tmp_path, "generate"))


def test_prune_keeps_unparsable_lines_for_the_reader(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"kind": "error"}\n{not json\n{"kind": "session"}\n')
    assert prune_records(p, lambda d: d["kind"] == "error") == 1
    assert p.read_text() == '{not json\n{"kind": "session"}\n'


def test_compare_refuses_records_of_another_suite(tmp_path):
    from harness.compare import compare_run
    from harness.golden import golden_dirs

    run = tmp_path / "run"
    shutil.copytree(golden_dirs()[0] / "records", run / "records")  # no run.json: the suite must be given
    with pytest.raises(SuiteError, match=r"its records are of suite default, not 'tiny'"):
        compare_run(run, str(SUITE))


def test_compare_on_a_missing_run_directory_names_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "compare", "--run", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert f"--run {tmp_path / 'nope'}: not a run directory" in proc.stderr and ".tmp" not in proc.stderr
