"""An RL run's verdicts into the outputs every run has: RUN/checks.json, summary.json, junit.xml, index.html.

    comparison = compare_run(run_dir)        # harness/rl/compare.py: rl/<algo>.json, rl/comparison.json
    summary = write_rl_reports(run_dir, comparison)   # checks.json (harness.compare's format), the reports
    exit_code = publish(run_dir, comparison)  # the same for `run` and `compare`: their exit code

Separate from compare_run on purpose: compare_run also runs in the engine venvs (tests/rl in `nox -s
rl_tests`), which need not carry the report's dependencies (jinja2, jsonschema, pandas).
"""

from __future__ import annotations

from pathlib import Path

from harness.verdict import Verdict


def write_rl_reports(run_dir: Path, comparison: dict, log=print) -> dict:
    """Write run_dir/checks.json from the comparison's verdicts and the reports; return the summary."""
    from harness.compare import write_checks
    from harness.report import write_reports

    run_dir = Path(run_dir)
    write_checks(run_dir, [Verdict.model_validate(v) for v in comparison["verdicts"]])
    summary = write_reports(run_dir)
    log(f"[rl] report: {run_dir / 'index.html'} (verdict {summary['verdict']}; summary.json, junit.xml, "
        f"checks.json beside it)")
    return summary


def publish(run_dir: Path, comparison: dict, log=print) -> int:
    """write_rl_reports, then the comparison's exit code; 2 (harness error) when the reports cannot be
    written (rl/<algo>.json and rl/comparison.json are on disk either way, and a traceback says why)."""
    try:
        write_rl_reports(run_dir, comparison, log)
    except Exception:
        import traceback

        log(f"[rl] error: the report of {run_dir} could not be written:\n{traceback.format_exc()}")
        return 2
    return comparison["exit_code"]
