"""What every check module shares: building verdicts, guarding against missing data, choosing units.

A check is `fn(ctx: RunData, case: Case) -> list[Verdict]`. It picks its units
(one backend, or a pair), and evaluates each inside `guard`, which turns an
`Unavailable` (missing data, failed phase, skipped case) into an "error" or
"skipped" verdict and an unexpected exception into an "error" verdict naming
the check, so one broken unit never hides the others.
"""

from __future__ import annotations

import itertools
import math
import traceback
from typing import Callable, Iterable

from harness.checks.data import REFERENCE, RunData, Unavailable
from harness.suite import Case
from harness.verdict import Verdict

CheckFn = Callable[[RunData, Case], list[Verdict]]


_PLAIN = frozenset({str, int, float, bool, type(None)})  # returned as they are (none has an .item())


def clean(x):
    """numpy scalars and tuples -> JSON-able Python values, recursively."""
    t = type(x)
    if t in _PLAIN:
        return x
    if t is list and all(type(v) in _PLAIN for v in x):  # a list of plain numbers: the common case, copied
        return list(x)
    if isinstance(x, dict):
        return {k if type(k) is str else str(k): v if type(v) in _PLAIN else clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [clean(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    return x


def verdict(check: str, case: str, backends: Iterable[str], *, metric: str, value: float | None,
            threshold: float | None, passed: bool, detail: str, data: dict | None = None) -> Verdict:
    if value is not None and isinstance(value, float) and math.isnan(value):
        value = math.inf
    return Verdict(check=check, backends=list(backends), case=case, metric=metric,
                   value=None if value is None else float(value),
                   threshold=None if threshold is None else float(threshold),
                   verdict="pass" if passed else "fail", detail=detail, data=clean(data or {}))


def not_applicable(check: str, case: str, backends: Iterable[str], metric: str, reason: str,
                   outcome: str = "skipped") -> Verdict:
    return Verdict(check=check, backends=list(backends), case=case, metric=metric, value=None, threshold=None,
                   verdict=outcome, detail=reason)


def guard(check: str, case: Case, backends: Iterable[str], metric: str,
          fn: Callable[[], Verdict | list[Verdict]]) -> list[Verdict]:
    backends = list(backends)
    try:
        out = fn()
    except Unavailable as u:
        v = not_applicable(check, case.id, backends, metric, u.reason, u.outcome)
        v.data = clean(u.data)
        return [v]
    except Exception as e:  # a bug in a check must show as an error verdict, never as a pass or a crash
        v = not_applicable(check, case.id, backends, metric,
                           f"internal error in check {check}: {type(e).__name__}: {e}", "error")
        v.data = {"traceback": traceback.format_exc(limit=6)}
        return [v]
    return out if isinstance(out, list) else [out]


def pairs_vs_reference(ctx: RunData) -> list[tuple[str, str]]:
    return [(e, REFERENCE) for e in ctx.engines] if ctx.has_reference else []


def engine_pairs(ctx: RunData) -> list[tuple[str, str]]:
    return list(itertools.combinations(ctx.engines, 2))


def no_units(check: str, case: Case, metric: str, what: str, ctx: RunData) -> list[Verdict]:
    return [not_applicable(check, case.id, [], metric,
                           f"{check} needs {what}; this run's backends: {', '.join(ctx.backends) or 'none'}")]


def fmt_keys(key: tuple[int, int]) -> str:
    return f"prompt {key[0]} sample {key[1]}"
