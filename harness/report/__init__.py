"""Reports of a compared run: summary.json (machines), junit.xml (CI), index.html (reviewers).

    from harness.report import write_reports
    summary = write_reports(run_dir)     # after compare_run(run_dir) wrote run_dir/checks.json
    summary = write_reports(run_dir, compare(run_dir))   # in one process: nothing read twice
    summary["verdict"]                   # "pass" | "fail" | "error"  -> exit 0 | 1 | 2

Every input is read by harness.report.data.load_run, which turns a broken
run (no checks.json, an unreadable record file, a crashed backend) into
problems the report shows instead of an exception. docs/report.md explains
how to read the HTML; docs/summary-schema.md documents summary.json.
"""

from __future__ import annotations

from pathlib import Path

from harness.report.data import RunData, load_run
from harness.report.summary import SUMMARY_SCHEMA_VERSION, build_summary, summary_json, validate
from harness.rundir import Compared

__all__ = ["write_reports", "load_run", "build_summary", "SUMMARY_SCHEMA_VERSION", "RunData"]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_reports(run_dir: Path, compared: Compared | None = None) -> dict:
    """Write run_dir/summary.json, junit.xml and index.html; return the summary. `compared`: what
    harness.compare.compare of this process returned (its records, verdicts and suite are used as they are).

    summary.json is validated against its schema (a mismatch is a harness bug and raises) and written before
    the page, or alongside it by a forked process that is waited for in any case, so CI always has the
    machine-readable verdict even if rendering the HTML fails."""
    from harness.records import gc_paused
    from harness.report.html import render_html
    from harness.report.junit import write_junit

    run_dir = Path(run_dir)
    with gc_paused():  # (harness/records.py: a large run is millions of long-lived objects)
        data = load_run(run_dir, compared)
        summary = build_summary(data)
        validate(summary)

        def files() -> None:
            _atomic_write(run_dir / "summary.json", summary_json(summary))
            write_junit(run_dir / "junit.xml", data.verdicts, summary)

        written = _Forked(files, fork=len(data.verdicts) >= FORK_FILES_VERDICTS)
        try:
            _atomic_write(run_dir / "index.html", render_html(data, summary))
        finally:
            written.join()  # summary.json is there even when the page failed
    return summary


# summary.json and junit.xml of a run with this many verdicts are written by a forked process while this one
# renders the page (each part takes seconds on a large run); below it, before the page
FORK_FILES_VERDICTS = 10000


class _Forked:
    """fn() in a forked process (it inherits everything loaded), or here and now without `fork`; join()
    raises when it failed, so a half-written report never passes for a whole one."""

    def __init__(self, fn, fork: bool):
        import multiprocessing

        self.proc = None
        if not fork or "fork" not in multiprocessing.get_all_start_methods():
            fn()
            return
        self.proc = multiprocessing.get_context("fork").Process(target=fn, daemon=True)
        self.proc.start()

    def join(self) -> None:
        if self.proc is None:
            return
        self.proc.join()
        if self.proc.exitcode != 0:
            raise RuntimeError(f"writing the report in a forked process failed (exit code {self.proc.exitcode}; "
                               "its traceback is above)")
