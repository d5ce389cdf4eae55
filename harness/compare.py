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

import multiprocessing
import os
import traceback
from pathlib import Path

from harness.checks.data import RunData
from harness.checks.registry import backend_ran, run_case_check, tolerance_profile
from harness.checks.sampling import mapping_verdicts, write_sampling_table
from harness.records import gc_paused
from harness.rundir import Compared, RunRecords, write_checks
from harness.verdict import Verdict


def compare_data(ctx: RunData, workers: int | None = None) -> list[Verdict]:
    """Every verdict of the run, in checks.json's order. `workers`: processes for the case checks (default:
    PARITY_COMPARE_WORKERS, else AUTO: a run of AUTO_CASES cases or more gets one per usable core, at most
    AUTO_MAX_WORKERS; a smaller one none forked). The verdicts are the same for any number."""
    cases = list(ctx.suite.cases)
    verdicts = backend_ran(ctx) + tolerance_profile(ctx)
    n = _workers(workers, len(cases))
    if n > 1:
        verdicts += _case_verdicts_forked(ctx, cases, n)
    else:
        verdicts += _case_verdicts(ctx, cases)
    return verdicts + mapping_verdicts(ctx)  # fields an engine would drop: explicit (harness/checks/sampling.py)


# Measured on this project's 2-core machine over the 100k-record synthetic run (2916 cases; docs/report.md, Large
# runs): two workers took 14-15 s of the parent's CPU where one took 22-23 s, the forked one 9 s (its
# copy-on-write page faults and the verdicts' trip back cost about 1-2 s), and compare + report 39-52 s wall
# where one took 48-56 s, at load 3.5-5.4. A run of the default suite's size (tens of cases) gains nothing from a
# fork, and each worker holds its share of the run's pages again as it touches them, hence the floor and the cap.
AUTO_CASES = 500
AUTO_MAX_WORKERS = 4


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _workers(asked: int | None, n_cases: int) -> int:
    if asked is None:
        raw = os.environ.get("PARITY_COMPARE_WORKERS", "auto")
        if raw == "auto":
            asked = min(_cores(), AUTO_MAX_WORKERS) if n_cases >= AUTO_CASES else 1
        else:
            try:
                asked = int(raw)
            except ValueError:
                raise ValueError(f"PARITY_COMPARE_WORKERS={raw!r}: a number of processes (1: none forked), "
                                 "or auto") from None
    if asked > 1 and "fork" not in multiprocessing.get_all_start_methods():
        return 1  # the workers inherit the loaded run; without fork it would have to be pickled to each
    return max(1, min(asked, n_cases))


def _case_verdicts(ctx: RunData, cases: list) -> list[Verdict]:
    out: list[Verdict] = []
    for case in cases:
        for name in case.checks:
            out += run_case_check(ctx, case, name)
    return out


def _case_verdicts_forked(ctx: RunData, cases: list, n: int) -> list[Verdict]:
    """_case_verdicts with the cases cut into n contiguous slices: n - 1 forked processes (each inherits the
    loaded run, nothing is copied to it) check one slice each and send back their verdicts, this process
    checks the first; joined in case order, so the result is the sequential one."""
    bounds = [len(cases) * i // n for i in range(n + 1)]
    ctx_fork = multiprocessing.get_context("fork")
    children = []
    for i in range(1, n):
        recv, send = ctx_fork.Pipe(duplex=False)
        proc = ctx_fork.Process(target=_check_slice, args=(ctx, cases[bounds[i]:bounds[i + 1]], send), daemon=True)
        proc.start()
        send.close()
        children.append((proc, recv))
    try:
        out = _case_verdicts(ctx, cases[bounds[0]:bounds[1]])
        for proc, recv in children:
            try:
                status, payload = recv.recv()
            except EOFError:
                raise RuntimeError(f"a compare worker died (exit code {proc.join() or proc.exitcode})") from None
            if status != "ok":
                raise RuntimeError(f"a compare worker failed:\n{payload}")
            out += payload
        return out
    finally:
        for proc, recv in children:
            recv.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


def _check_slice(ctx: RunData, cases: list, send) -> None:
    try:
        send.send(("ok", _case_verdicts(ctx, cases)))
    except BaseException:  # the parent raises it with this traceback
        send.send(("error", traceback.format_exc()))
    finally:
        send.close()


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
