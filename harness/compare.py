"""`parity compare`: run every check each case names over a run directory's records -> checks.json.

    verdicts = compare_run(Path("reports/latest"))          # suite from run.json
    verdicts = compare_run(run_dir, "cases/default.yaml")   # or another version of it

What is compared: the backends run.json requested (all backends with records
when there is no run.json), the records whose case hash equals the suite's
current case (others are from another version of the case and never
compared). What is never silent: a requested backend whose phase did not
complete gets an "error" verdict `backend_ran` per phase, and every case
check that lacks data because of it (or of an ErrorRecord) gets an "error"
verdict with the reason; a case the backend skipped on purpose (ErrorRecord
"Skipped") gets "skipped" verdicts with the reason.

checks.json: {"schema_version": 1, "verdicts": [Verdict.model_dump(mode="json"), ...]}
in order: backend_ran first, then per case (suite order), per check (case
order), per backend or pair (requested order).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.checks.data import RunData
from harness.checks.registry import backend_ran, run_case_check, tolerance_profile
from harness.checks.sampling import mapping_verdicts, write_sampling_table
from harness.records import gc_paused
from harness.verdict import ChecksFile, Verdict, remember_checks

CHECKS_SCHEMA_VERSION = 1


def compare_data(ctx: RunData) -> list[Verdict]:
    verdicts = backend_ran(ctx) + tolerance_profile(ctx)
    for case in ctx.suite.cases:
        for name in case.checks:
            verdicts += run_case_check(ctx, case, name)
    return verdicts + mapping_verdicts(ctx)  # fields an engine would drop: explicit (harness/checks/sampling.py)


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
    data = checks_json(verdicts).encode("ascii")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    remember_checks(path, data, verdicts)  # the report of this same process reuses them (harness/verdict.py)
    return path


def read_checks(run_dir: Path) -> list[Verdict]:
    payload = json.loads((Path(run_dir) / "checks.json").read_text())
    if payload.get("schema_version") != CHECKS_SCHEMA_VERSION:
        raise ValueError(f"{run_dir}/checks.json: schema_version {payload.get('schema_version')!r}, "
                         f"expected {CHECKS_SCHEMA_VERSION}")
    return [Verdict.model_validate(v) for v in payload["verdicts"]]


def compare_run(run_dir: Path, suite_path: str | None = None) -> list[Verdict]:
    """Check a run directory; writes run_dir/checks.json and returns the verdicts."""
    run_dir = Path(run_dir)
    # verdicts of earlier records must not outlive a compare that fails on these (a report would show them)
    (run_dir / "checks.json").unlink(missing_ok=True)
    with gc_paused():  # (harness/records.py: a large run is millions of long-lived objects)
        ctx = RunData.load(run_dir, suite_path)
        verdicts = compare_data(ctx)
        write_checks(run_dir, verdicts)
        write_sampling_table(run_dir, ctx)  # the report's sampling-parameter mapping section
    return verdicts
