"""Every check a suite may name: the declarations of the check modules, gathered by name.

A check is declared once, where it is implemented (`@check(...)`, harness/checks/base.py): its name,
summary, default tolerances, units, what it needs recorded, its suite prerequisite and its row of
docs/check-reference.md. This module collects those declarations without importing anything heavy
itself: the suite loader (which runs in every backend's venv) imports it, and the check modules,
which import the suite, are imported the first time the catalog is read (every module of this
package but the framework's own, so a new check is one new module).

Defaults are float32's profile (on CPU, engines agree with the float64 reference to ~5e-6:
measured, vLLM and sglang-jax, max |dlogp| 4.8e-6, k3 ~1e-12); other dtypes take their calibrated
profile (harness/checks/profiles.py). A suite overrides any of these in `tolerances:` at suite or
case level, for every check (`name: value`) or for one (`check: {name: value}`); docs/checks.md
justifies each default.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from harness.checks.base import Check

# the |dlogp| gate (harness/checks/logprobs.py: Gate): float32 gates the max (quantile 1, no separate cap)
GATE = {"logprob_quantile": 1.0, "logprob_max_atol": math.inf}

# What a check may need the recorder to produce besides every backend's generate and score phases
# (Check.needs; harness/recorder.py asks `needs(case.checks)` and never a check's name). Each reference-computed
# need names the ScoreRecord field that carries it (harness/records.py):
OTHER_WEIGHTS = "other_weights"  # the reference also scores the case under the other weight set;
#                                  a backend that cannot swap weights skips the case
SEED_RULE_VARIANTS = "seed_rule_variants"  # generate: each seeded draw again alone, with its documented seed
DISTRIBUTION = "distribution"  # the reference's exact first-step distribution (harness/sampling/expect.py)
EFFECTS = "effects"  # the reference's greedy expectations (harness/sampling/expect.py)
SEQUENCE = "sequence"  # the reference's PIT inputs at every sampled position (harness/sampling/expect.py)
NEEDS = frozenset({OTHER_WEIGHTS, SEED_RULE_VARIANTS, DISTRIBUTION, EFFECTS, SEQUENCE})

# The sections of the reference table and of the self-test's detection matrix, in their order (presentation
# only). A check names its section in its declaration (`@check(..., section=...)`) and sits in it in the order
# the modules declare them (modules by name, then top to bottom); a check naming none follows them all.
SECTIONS = ("prompt", "logprobs", "tokens", "trainer", "determinism", "eos", "weights", "tunix", "rollout",
            "sampling")

# modules of this package that declare no check (imported by the checks, never scanned for declarations)
FRAMEWORK = frozenset({"base", "catalog", "compare_fns", "data", "inject", "profiles", "pytest_plugin", "registry"})

_DECLARED: dict[str, "Check"] = {}


def declare(check: "Check") -> None:
    """Called by @check (harness/checks/base.py) as a check module is imported."""
    other = _DECLARED.get(check.name)
    if other is not None and other.module != check.module:
        raise ValueError(f"check {check.name!r} declared twice: in {other.module} and in {check.module}")
    _DECLARED[check.name] = check


def _place(c: "Check") -> tuple:
    """Where a check sits in the catalog's order (SECTIONS): its section, its module, its line there."""
    rank = SECTIONS.index(c.section) if c.section in SECTIONS else len(SECTIONS)
    return rank, c.module, c.fn.__code__.co_firstlineno


class _Catalog(Mapping):
    """name -> Check, in the order of SECTIONS; the check modules are imported on first use."""

    def __init__(self) -> None:
        self._ordered: dict[str, "Check"] | None = None

    def _load(self) -> dict[str, "Check"]:
        if self._ordered is None:
            import harness.checks as pkg

            for m in pkgutil.iter_modules(pkg.__path__):
                if m.name not in FRAMEWORK and not m.ispkg:
                    importlib.import_module(f"harness.checks.{m.name}")
            self._ordered = {c.name: c for c in sorted(_DECLARED.values(), key=_place)}
        return self._ordered

    def __getitem__(self, name: str) -> "Check":
        return (self._ordered or self._load())[name]

    def get(self, name, default=None):  # Mapping's goes through __getitem__ and a KeyError: the hot path of tolerances
        return (self._ordered or self._load()).get(name, default)

    def __contains__(self, name) -> bool:
        return name in (self._ordered or self._load())

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


CATALOG: Mapping[str, "Check"] = _Catalog()


def default_tolerances(names: Iterable[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in names:
        out.update(CATALOG[n].tolerances)
    return out


def known_tolerances() -> set[str]:
    return {t for c in CATALOG.values() for t in c.tolerances}


def needs(names: Iterable[str]) -> frozenset[str]:
    """What the recorder must produce for a case naming these checks (the NEEDS above)."""
    return frozenset(n for c in names if c in CATALOG for n in CATALOG[c].needs)


def scored_by_engines(names: Iterable[str]) -> bool:
    """Whether the engines' score phase scores a case naming these checks: yes unless every one of them
    reads the reference's scores alone (a distribution case's 1280 one-token completions per backend are
    most of a run's time), and yes for a case naming none."""
    names = list(names)
    return not names or any(CATALOG[c].scored_by_engines for c in names if c in CATALOG)


def _value(x: float) -> str:
    return "inf" if x == math.inf else f"{x:g}"


def reference_markdown() -> str:
    """docs/check-reference.md, generated from the declarations so the table cannot drift from the code."""
    out = ["# Check reference", "",
           "Generated by `python -m harness schema --checks` from the check declarations (`@check` in "
           "`harness/checks/*.py`); a test keeps it in sync. [checks.md](checks.md) explains outcomes, units, "
           "tolerance profiles and why the defaults are what they are.", "",
           "A suite names checks in a case's `checks:` and may override any default tolerance in `tolerances:` "
           "(suite defaults or per case) for every check (`name: value`) or for one check (`check: {name: value}`, "
           "only a tolerance that check declares). Count checks (no tolerance of their own) pass at 0.", "",
           "| check | unit | value vs threshold | default tolerances | what fails it |", "|---|---|---|---|---|"]
    for name, c in CATALOG.items():
        tol = ", ".join(f"`{t}` {_value(v)}" for t, v in c.tolerances.items()) or "0 (a count)"
        unit = c.unit_doc or (c.units.doc if c.units is not None else "")
        out.append(f"| `{name}` | {unit} | {c.measures} | {tol} | {c.fails} |")
    out += ["", "## Summaries", ""]
    for name, c in CATALOG.items():
        extra = []
        if c.prerequisite is not None:
            extra.append(f"Suite prerequisite: {c.prerequisite[1]}.")
        if c.needs:
            extra.append("The recorder also records: " + ", ".join(f"`{n}` ({NEEDS_DOC[n]})" for n in sorted(c.needs))
                         + ".")
        if not c.scored_by_engines:
            extra.append("Reads the reference's scores alone: a case naming only such checks is not scored by the "
                         "engines.")
        out += [f"- **`{name}`** (`{c.module}`): {c.summary}." + "".join(f" {e}" for e in extra)]
    return "\n".join(out)


NEEDS_DOC = {
    OTHER_WEIGHTS: "the reference scores the case under the other weight set too, `ScoreRecord.other_weights`; a "
                   "backend that cannot swap weights skips the case",
    SEED_RULE_VARIANTS: "each seeded draw generated again alone with its documented seed, variants `rule-main` / "
                        "`rule-tunix`",
    DISTRIBUTION: "the reference's exact first-step distribution, `ScoreRecord.distribution`",
    EFFECTS: "the reference's greedy expectations, `ScoreRecord.effects`",
    SEQUENCE: "where each sampled token sits in the exact processed distribution at its position, "
              "`ScoreRecord.sequence`",
}
