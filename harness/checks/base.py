"""What every check module shares: declaring a check, building verdicts, guarding against missing data.

A check is declared once, on the function that judges one of its units:

    @check("completion_logprobs", section="logprobs", units=EACH_BACKEND_VS_REFERENCE, metric="max_abs_dlogp",
           tolerances={"logprob_atol": 1e-4}, summary="...", measures="...", fails="...")
    def completion_logprobs(ctx: RunData, case: Case, x: str) -> Verdict: ...

The declaration (a `Check`, callable as `check(ctx, case) -> list[Verdict]`) is what the suite loader,
the compare driver, the recorder and docs/check-reference.md read (harness/checks/catalog.py). Run on a
case, it checks the case-level `precondition` (a verdict naming no backend when the case cannot be
judged), picks its units (`Units`: one backend, or a pair), and evaluates each inside `guard`, which
turns an `Unavailable` (missing data, failed phase, skipped case) into an "error" or "skipped" verdict
and an unexpected exception into an "error" verdict naming the check, so one broken unit never hides
the others. A run without a unit gets one "skipped" verdict saying what the check `requires`.
"""

from __future__ import annotations

import itertools
import math
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterable

from harness.checks import catalog
from harness.checks.data import REFERENCE, RunData, Unavailable
from harness.suite import Case
from harness.verdict import Verdict

CheckFn = Callable[[RunData, Case], list[Verdict]]  # a Check, called on one case


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


def no_units(check: str, case: Case, metric: str, what: str, ctx: RunData) -> list[Verdict]:
    return [not_applicable(check, case.id, [], metric,
                           f"{check} needs {what}; this run's backends: {', '.join(ctx.backends) or 'none'}")]


def fmt_keys(key: tuple[int, int]) -> str:
    return f"prompt {key[0]} sample {key[1]}"


def subject(x: str) -> list[str]:
    """The backends a verdict comparing `x` with the reference names."""
    return [x] if x == REFERENCE else [x, REFERENCE]


# ============================================================================ declaring a check
@dataclass(frozen=True)
class Unit:
    """One guarded evaluation of a check: the arguments its function takes after (ctx, case), the
    backends the verdict names, and where they differ from the check's, its metric and verdict name
    (a family: rollout_contract_<field>) or a function that replaces it (a unit that does not apply)."""

    args: tuple
    backends: list[str]
    metric: str | None = None
    check: str | None = None
    instead: Callable[[str, str], Verdict | list[Verdict]] | None = None  # (check, metric) -> its verdict


@dataclass(frozen=True)
class Units:
    """How a check picks its units in a run: `pick(ctx, case) -> [Unit]`, `doc` for the reference
    table, `requires` for the verdict of a run with none (without it, such a run has no verdict: the
    per-backend units of a run with no backend)."""

    doc: str
    pick: Callable[[RunData, Case], list[Unit]]
    requires: str = ""

    def __call__(self, ctx: RunData, case: Case) -> list[Unit]:
        return self.pick(ctx, case)


def pairs_vs_reference(ctx: RunData) -> list[tuple[str, str]]:
    return [(e, REFERENCE) for e in ctx.engines] if ctx.has_reference else []


def engine_pairs(ctx: RunData) -> list[tuple[str, str]]:
    return list(itertools.combinations(ctx.engines, 2))


EACH_BACKEND = Units("backend", lambda ctx, case: [Unit((x,), [x]) for x in ctx.backends])
EACH_BACKEND_VS_REFERENCE = Units("backend vs reference",
                                  lambda ctx, case: [Unit((x,), subject(x)) for x in ctx.backends])
EACH_BACKEND_AND_REFERENCE = Units(
    "backend (vs reference where the run has one)",
    lambda ctx, case: [Unit((x,), [x] if x == REFERENCE or not ctx.has_reference else [x, REFERENCE])
                       for x in ctx.backends])
WITH_REFERENCE_EACH_BACKEND = Units(
    "backend vs reference", lambda ctx, case: [Unit((x,), [x]) for x in ctx.backends] if ctx.has_reference else [],
    "the reference")
ENGINE_VS_REFERENCE = Units("engine vs reference",
                            lambda ctx, case: [Unit((x,), [x, REFERENCE]) for x, _ in pairs_vs_reference(ctx)],
                            "an engine and the reference")
REFERENCE_PAIRS_ELSE_ENGINE_PAIRS = Units(
    "engine vs reference (engine vs engine without one)",
    lambda ctx, case: [Unit((a, b), [a, b]) for a, b in pairs_vs_reference(ctx) or engine_pairs(ctx)],
    "an engine and the reference, or two engines")
ALL_PAIRS = Units("engine vs reference, engine vs engine",
                  lambda ctx, case: [Unit((a, b), [a, b]) for a, b in pairs_vs_reference(ctx) + engine_pairs(ctx)],
                  "an engine and the reference, or two engines")
SCORER_SOURCE_PAIRS = Units(
    "scorer engine B vs source backend A",
    lambda ctx, case: [Unit((b, a), [b, a]) for b in ctx.engines for a in ctx.backends if a != b],
    "an engine and a second backend")


@dataclass(frozen=True)
class NotApplicable:
    """What a precondition returns for a case the check cannot judge: one verdict naming no backend."""

    reason: str
    outcome: str = "skipped"


@dataclass(frozen=True)
class Check:
    """A check, declared once (module docstring). `fn(ctx, case, *unit.args) -> Verdict | [Verdict]` judges
    one unit; `units=None` declares a check that runs its own units (`fn(ctx, case) -> [Verdict]`)."""

    name: str
    summary: str
    fn: Callable
    units: Units | None
    metric: str | Callable[[Case], str]
    tolerances: dict[str, float] = field(default_factory=dict)
    precondition: Callable[[Case], NotApplicable | None] | None = None
    requires: str = ""  # what the check needs in a run, said by the verdict of a run with no unit
    needs: frozenset[str] = frozenset()  # what the recorder must produce for it (catalog.NEEDS)
    scored_by_engines: bool = True  # False: it reads the reference's scores alone (catalog.scored_by_engines)
    prerequisite: tuple[Callable[[Case], bool], str] | None = None  # (does a case record what it needs, why not)
    measures: str = ""  # the reference table: what the verdict's value is, against which threshold
    fails: str = ""  # the reference table: what makes it fail
    unit_doc: str = ""  # the reference table's unit, where the Units' doc does not say it
    section: str | None = None  # its place in the reference table and the self-test matrix (catalog.SECTIONS)
    module: str = ""

    def metric_for(self, case: Case) -> str:
        return self.metric(case) if callable(self.metric) else self.metric

    def __call__(self, ctx: RunData, case: Case) -> list[Verdict]:
        if self.units is None:
            return self.fn(ctx, case)
        metric = self.metric_for(case)
        if self.precondition is not None and (na := self.precondition(case)) is not None:
            return [not_applicable(self.name, case.id, [], metric, na.reason, na.outcome)]
        units = self.units(ctx, case)
        requires = self.requires or self.units.requires
        if not units and requires:
            return no_units(self.name, case, metric, requires, ctx)
        out: list[Verdict] = []
        for u in units:
            name, m = u.check or self.name, u.metric or metric
            fn = (lambda u=u, name=name, m=m: u.instead(name, m)) if u.instead else (lambda u=u: self.fn(ctx, case, *u.args))
            out += guard(name, case, u.backends, m, fn)
        return out


def check(name: str, *, summary: str, units: Units | None, metric: str | Callable[[Case], str] = "",
          tolerances: dict[str, float] | None = None, precondition: Callable[[Case], NotApplicable | None] | None = None,
          requires: str = "", needs: Iterable[str] = (), scored_by_engines: bool = True,
          prerequisite: tuple[Callable[[Case], bool], str] | None = None, measures: str = "", fails: str = "",
          unit_doc: str = "", section: str | None = None) -> Callable[[Callable], Check]:
    """Declare the decorated function as check `name` (the `Check` fields say what each argument means)."""
    unknown = set(needs) - catalog.NEEDS
    if unknown:
        raise ValueError(f"check {name}: unknown needs {sorted(unknown)} (known: {sorted(catalog.NEEDS)})")
    if section is not None and section not in catalog.SECTIONS:
        raise ValueError(f"check {name}: unknown section {section!r} (known: {', '.join(catalog.SECTIONS)})")

    def declare(fn: Callable) -> Check:
        c = Check(name=name, summary=summary, fn=fn, units=units, metric=metric, tolerances=dict(tolerances or {}),
                  precondition=precondition, requires=requires, needs=frozenset(needs),
                  scored_by_engines=scored_by_engines, prerequisite=prerequisite, measures=measures, fails=fails,
                  unit_doc=unit_doc, section=section, module=fn.__module__)
        catalog.declare(c)
        return c

    return declare
