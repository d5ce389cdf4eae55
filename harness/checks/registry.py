"""Check name -> its declaration (harness/checks/catalog.py gathers them), and the run-level checks:
backend_ran and tolerance_profile."""

from __future__ import annotations

from harness.checks.base import CheckFn, not_applicable
from harness.checks.catalog import CATALOG
from harness.checks.data import PHASES, RunData
from harness.suite import Case
from harness.verdict import Verdict

#: every declared check, callable as fn(ctx, case) -> [Verdict] (a test may swap one for a fake)
CHECKS: dict[str, CheckFn] = dict(CATALOG)

RUN_CASE = "run:{phase}"  # Verdict.case of backend_ran verdicts


def run_case_check(ctx: RunData, case: Case, name: str) -> list[Verdict]:
    fn = CHECKS.get(name)
    if fn is None:
        known = "in the catalog" if name in CATALOG else "unknown"
        return [not_applicable(name, case.id, [], "implemented", f"check {name!r} ({known}) has no implementation "
                               f"in harness.checks.registry: it cannot pass", "error")]
    return [measured_only(ctx, v) for v in fn(ctx, case)]


def measured_only(ctx: RunData, v: Verdict) -> Verdict:
    """A pass or fail of a check the run's profile measures without gating (for these backends)
    becomes 'measured': shown with its value, never counted as a pass or a failure."""
    if v.verdict not in ("pass", "fail") or ctx.profile.gated(v.check, v.backends):
        return v
    v.data = {**v.data, "would_have": v.verdict, "profile": ctx.profile.dtype}
    v.verdict = "measured"
    v.detail = (f"measured, not gated at {ctx.profile.dtype} (no calibrated threshold can be meaningful for "
                f"{', '.join(v.backends)} here; the profile says why): {v.detail}")
    return v


RUN_PROFILE = "run:profile"  # Verdict.case of the tolerance_profile verdict


def tolerance_profile(ctx: RunData) -> list[Verdict]:
    """A run whose engines ran in a dtype without a calibrated profile cannot be judged: an error
    verdict saying so (its checks use float32's thresholds, which that dtype's noise exceeds)."""
    p = ctx.profile
    if p.calibrated:
        return []
    return [Verdict(check="tolerance_profile", backends=sorted(ctx.engine_dtypes), case=RUN_PROFILE,
                    metric="calibrated", value=0.0, threshold=1.0, verdict="error",
                    detail=f"no calibrated tolerance profile for {p.dtype} (engines: {ctx.engine_dtypes}): the "
                           f"verdicts use float32's thresholds and are not meaningful at {p.dtype}; calibrate one "
                           f"(docs/checks.md, 'Tolerance profiles')",
                    data={"dtype": p.dtype, "engine_dtypes": ctx.engine_dtypes})]


def backend_ran(ctx: RunData) -> list[Verdict]:
    """One verdict per requested backend and phase: pass when the phase ran to completion
    (exit code 0 in run.json where recorded, a session record, no backend-level ErrorRecord)."""
    out = []
    for b in ctx.backends:
        for phase in PHASES:
            st = ctx.phase_status(b, phase)
            status = st.as_dict() if st is not None else {}
            problem = ctx.phase_problem(b, phase)
            code = status.get("exit_code")
            failed_cases = sorted({cid for (bb, ph, cid), errs in ctx.case_errors.items()
                                   if bb == b and ph == phase and any(e.error_type != "Skipped" for e in errs)})
            if problem and failed_cases:
                problem += f"; case errors recorded for {', '.join(failed_cases)}"
            done = f"{b} {phase} completed" + (
                f" in {status['wall_s']:.1f}s" if isinstance(status.get("wall_s"), (int, float)) else "")
            if not problem and failed_cases:
                done += f" (with case errors for {', '.join(failed_cases)}: see those cases)"
            v = Verdict(check="backend_ran", backends=[b], case=RUN_CASE.format(phase=phase), metric="exit_code",
                        value=None if code is None else float(code), threshold=0.0,
                        verdict="error" if problem else "pass", detail=problem or done,
                        data={"status": status, "sessions": len(ctx.sessions.get((b, phase), [])),
                              "case_errors": failed_cases})
            out.append(v)
    return out
