"""`parity compare`: run every check each case names over a run directory's records -> checks.json.

    verdicts = compare_run(Path("reports/latest"))          # suite from run.json
    verdicts = compare_run(run_dir, "cases/default.yaml")   # or another version of it
    compared = compare(run_dir)                             # and what the report of this process needs

What is compared: the backends run.json requested (all backends with records
when there is no run.json), the records whose case hash equals the suite's
current case (others are from another version of the case and never
compared). What is never silent: a requested backend whose phase did not
complete gets an "error" verdict `backend_ran` per phase, and every case
check that lacks data because of it (or of an ErrorRecord) gets an "error"
verdict with the reason; a case the backend skipped on purpose (ErrorRecord
"Skipped") gets "skipped" verdicts with the reason.

checks.json (harness/rundir.py): {"schema_version": 1, "verdicts": [Verdict.model_dump(mode="json"), ...]}
in order: backend_ran first, then per case (suite order), per check (case
order), per backend or pair (requested order).
"""

from __future__ import annotations

from pathlib import Path

from harness.checks.data import RunData
from harness.checks.registry import backend_ran, run_case_check, tolerance_profile
from harness.checks.sampling import mapping_verdicts, write_sampling_table
from harness.records import gc_paused
from harness.rundir import Compared, RunRecords, write_checks
from harness.verdict import Verdict


def compare_data(ctx: RunData) -> list[Verdict]:
    verdicts = backend_ran(ctx) + tolerance_profile(ctx)
    for case in ctx.suite.cases:
        for name in case.checks:
            verdicts += run_case_check(ctx, case, name)
    return verdicts + mapping_verdicts(ctx)  # fields an engine would drop: explicit (harness/checks/sampling.py)


def compare(run_dir: Path, suite_path: str | None = None, records: RunRecords | None = None) -> Compared:
    """Check a run directory; writes run_dir/checks.json and sampling_table.json. Returns the verdicts with
    the records and suite they came from, for write_reports(run_dir, compared) in this process."""
    run_dir = Path(run_dir)
    # verdicts of earlier records must not outlive a compare that fails on these (a report would show them)
    (run_dir / "checks.json").unlink(missing_ok=True)
    with gc_paused():  # (harness/records.py: a large run is millions of long-lived objects)
        if records is None:
            records = RunRecords.load(run_dir)
        ctx = RunData.load(run_dir, suite_path, records)
        verdicts = compare_data(ctx)
        write_checks(run_dir, verdicts)
        write_sampling_table(run_dir, ctx)  # the report's sampling-parameter mapping section
    return Compared(run_dir, verdicts, records, ctx.suite_path, ctx.source_suite)


def compare_run(run_dir: Path, suite_path: str | None = None) -> list[Verdict]:
    """Check a run directory; writes run_dir/checks.json and returns the verdicts."""
    return compare(run_dir, suite_path).verdicts
