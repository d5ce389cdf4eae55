"""Suites of cases: YAML in, validated cases out, every error naming file, case and field.

    suite: default
    description: ...
    dtype: bfloat16               # optional: the engines' dtype (auto | float32 | bfloat16 | float16);
                                  # `--dtype` overrides it; auto (the default) = the checkpoint's
    backends:                     # optional: typed options per backend (harness/backends/options.py);
      vllm: {logprobs_mode: raw}  # `--backend-opt vllm.logprobs_mode=raw` overrides; `profile: NAME` too
    defaults:                     # merged under every case
      sampling: {max_tokens: 8}
      checks: [prompt_logprobs]
      tolerances: {logprob_atol: 1.0e-4, replay: {logprob_atol: 3.0e-2}}   # per check: only replay's
    cases:
      - id: greedy-basic
        prompts: ["The robot", {ids: [5, 9, 383]}]
        sampling: {temperature: 0}
        checks: [greedy_tokens]
        weights: A                # which weight set must be live (update_params before)
        repeats: 1                # >1: run again (determinism variants)
        alone: false              # also run each prompt alone (batch invariance)
        tunix: false              # also run the batch through each rollout's tunix surface (variant tunix)
        accept: {}                # rollout_contract_<field>: reason -- a difference between rollouts accepted

A case's `content_hash` covers what changes its records (prompts, sampling,
weights, repeats, alone), so records from different machines are compared
only when it is equal; tolerances and checks may change without re-recording.

A tolerance is looked up (`Case.tolerance(name, check)`) in this order: the case's (suite defaults
merged in) `check.name`, its `name`, then the tolerance profile of the run's dtype
(harness/checks/profiles.py: `check.name`, `name`), then the catalog default. `tolerances:` takes
`name: value` for every check and `check: {name: value}` (stored as `check.name`) for one check.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictFloat, StrictInt, ValidationError,
                      field_validator, model_validator)

from harness.checks.catalog import CATALOG, default_tolerances, known_tolerances
from harness.checks.profiles import EXACT, profile_tolerance
from harness.dtypes import CHOICES as DTYPE_CHOICES
from harness.spec import SamplingSpec


class SuiteError(ValueError):
    """A configuration error in a suite file; the message names file, case and field."""


class Prompt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str | None = None
    ids: tuple[StrictInt, ...] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "Prompt":
        if (self.text is None) == (self.ids is None):
            raise ValueError("a prompt is either text or {ids: [...]}, exactly one of them")
        if self.text is not None and not self.text.strip():
            raise ValueError("empty prompt text")
        if self.ids is not None:
            if not self.ids:
                raise ValueError("empty prompt ids")
            if min(self.ids) < 0:
                raise ValueError("prompt ids must be >= 0")
        return self


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    prompts: tuple[Prompt, ...] = Field(min_length=1)
    sampling: SamplingSpec = SamplingSpec()
    checks: tuple[str, ...] = ()
    tolerances: dict[str, StrictFloat] = Field(default_factory=dict)
    weights: Literal["A", "B"] = "A"
    repeats: StrictInt = Field(1, ge=1, le=10)
    alone: StrictBool = False
    tunix: StrictBool = False
    # rollout_contract_<field> -> why the suite accepts that difference between the rollouts (never hashed:
    # accepting changes a verdict, not a record)
    accept: dict[str, str] = Field(default_factory=dict)
    # the tolerance profile (a dtype name) the run's compare selected: Suite.with_profile
    _profile: str = PrivateAttr("float32")

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompt_forms(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [{"text": p} if isinstance(p, str) else p for p in v]
        return v

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in v if c not in CATALOG]
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; known: {sorted(CATALOG)}")
        return v

    @field_validator("accept")
    @classmethod
    def _accept_keys(cls, v: dict[str, str]) -> dict[str, str]:
        from harness.checks.contract import FIELDS

        known = [f"rollout_contract_{f}" for f in FIELDS]
        bad = [k for k in v if k not in known]
        if bad:
            raise ValueError(f"accept: unknown contract field(s) {bad}; known: {known}")
        if any(not str(r).strip() for r in v.values()):
            raise ValueError("accept: every accepted difference needs its reason")
        return v

    @field_validator("tolerances", mode="before")
    @classmethod
    def _flat_tolerances(cls, v: Any) -> Any:
        return flatten_tolerances(v) if isinstance(v, dict) else v

    @field_validator("tolerances")
    @classmethod
    def _known_tolerances(cls, v: dict[str, float]) -> dict[str, float]:
        check_tolerance_keys(v)
        return v

    @model_validator(mode="after")
    def _check_prerequisites(self) -> "Case":
        """Refused here, before anything runs, rather than found at compare time after every backend ran."""
        problems = [why for check, (ok, why) in prerequisites().items()
                    if (check in self.checks or (check == "tunix" and self.tunix)) and not ok(self)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def content_hash(self) -> str:
        payload = {
            "prompts": [p.model_dump(mode="json") for p in self.prompts],
            "sampling": self.sampling.canonical(),
            "weights": self.weights,
            "repeats": self.repeats,
            "alone": self.alone,
        }
        if self.tunix:  # only when set: the hashes of cases without it stay what they were
            payload["tunix"] = True
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def tolerance(self, name: str, check: str | None = None) -> float:
        """The threshold `name` for `check` (module docstring: case, then profile, then catalog). Every unit
        of every check asks (75k verdicts of a 100k-record run): plain dict lookups only."""
        tol = self.tolerances
        if tol:
            got = tol.get(f"{check}.{name}") if check else None
            if got is None:
                got = tol.get(name)
            if got is not None:
                return got
        profile = self.__pydantic_private__["_profile"]  # self._profile goes through pydantic's __getattr__: 4 us
        if profile != EXACT:
            got = profile_tolerance(profile, name, check)
            if got is not None:
                return got
        declared = CATALOG.get(check)
        if declared is not None and name in declared.tolerances:
            return declared.tolerances[name]
        return default_tolerances(list(CATALOG))[name]

    @property
    def profile(self) -> str:
        return self._profile


def prerequisites() -> dict:
    """check (or "tunix") -> (does this case record what it needs, the error otherwise): each check's
    declared prerequisite (harness/checks/base.py: Check), and the tunix variant's own."""
    out = {name: c.prerequisite for name, c in CATALOG.items() if c.prerequisite is not None}
    out["tunix"] = (lambda c: not c.tunix or c.sampling.n == 1,
                    "tunix: true needs n == 1 (RLCluster repeats a prompt in the batch instead: list it n times)")
    return out


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    description: str = ""
    path: str = ""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None
    #: backend name -> typed options (harness.backends.options), validated at load
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cases: tuple[Case, ...]

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.id == case_id:
                return c
        raise KeyError(case_id)

    def with_profile(self, profile: str) -> "Suite":
        """A copy whose cases look tolerances up in `profile` (a dtype name) before the catalog."""
        cases = []
        for c in self.cases:
            c2 = c.model_copy()
            c2._profile = profile
            cases.append(c2)
        return self.model_copy(update={"cases": tuple(cases)})


def flatten_tolerances(v: dict) -> dict:
    """{check: {name: value}} entries -> {"check.name": value}; plain entries stay."""
    out: dict = {}
    for k, x in v.items():
        if isinstance(x, dict):
            out.update({f"{k}.{n}": y for n, y in x.items()})
        else:
            out[k] = x
    return out


def check_tolerance_keys(v: dict) -> None:
    """Raise ValueError naming every key that is neither a known tolerance nor `check.tolerance` of a
    tolerance that check declares."""
    bad = []
    for k in v:
        check, _, name = k.rpartition(".")
        if name not in known_tolerances() or (check and (check not in CATALOG or name not in CATALOG[check].tolerances)):
            bad.append(k)
    if bad:
        per_check = "; ".join(f"{c}: {', '.join(sorted(ch.tolerances))}" for c, ch in CATALOG.items() if ch.tolerances)
        raise ValueError(f"unknown tolerance(s) {sorted(bad)}; known: {sorted(known_tolerances())}, each also "
                         f"per check as `check: {{name: value}}` for the tolerances that check declares ({per_check})")


_TOP_KEYS = {"suite", "description", "dtype", "backends", "defaults", "cases"}
_DEFAULT_KEYS = {"sampling", "checks", "tolerances", "weights", "repeats", "alone"}


def _merge(defaults: dict, case: dict) -> dict:
    out = dict(defaults)
    for k, v in case.items():
        if k == "tolerances" and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**flatten_tolerances(out[k]), **flatten_tolerances(v)}
        elif k == "sampling" and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        elif k == "checks" and isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = list(dict.fromkeys(out[k] + v))
        else:
            out[k] = v
    return out


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if p not in ("function-after[_consistent(), SamplingSpec]",))


def _describe_error(err: dict) -> str:
    field = _field_path(err["loc"]) or "checks"  # the only case-level validator: check prerequisites
    msg = err["msg"].removeprefix("Value error, ")
    hint = ""
    if err["type"] == "extra_forbidden":
        allowed = sorted(SamplingSpec.model_fields) if err["loc"][0] == "sampling" else sorted(Case.model_fields)
        hint = f"; allowed: {allowed}"
    elif err["type"] in ("int_type", "float_type", "bool_type"):
        v = err["input"]
        hint = f" (got {v!r}, a {type(v).__name__}: types are not converted)"
        if isinstance(v, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", v.strip()):
            hint = f" (got the string {v!r}: YAML reads 1e-4 as a string, write 1.0e-4)"
        elif isinstance(v, str):
            hint = f" (got the string {v!r}: remove the quotes)"
    return f"field '{field}': {msg}{hint}"


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite file; raise SuiteError naming file, case and field."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(f"{where}: suite file not found (suites live in cases/, e.g. cases/default.yaml)") from None
    return _load_suite_text(where, text)


def _yaml_load(text: str) -> Any:
    """libyaml's parser where PyYAML has it (a synthetic 100k-record suite is 0.5 MB of YAML: seconds in
    pure Python); a document it rejects is parsed again by the pure-Python one, whose error is reported."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.load(text, Loader=fast)  # noqa: S506 (CSafeLoader is the safe loader)
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def _load_suite_text(where: str, text: str) -> "Suite":
    try:
        raw = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SuiteError(f"{where}:{at} not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite is a mapping with keys {sorted(_TOP_KEYS)}, got {type(raw).__name__}")
    extra = sorted(set(raw) - _TOP_KEYS)
    if extra:
        raise SuiteError(f"{where}: unknown top-level field(s) {extra}; allowed: {sorted(_TOP_KEYS)}")
    if "suite" not in raw or not isinstance(raw["suite"], str):
        raise SuiteError(f"{where}: field 'suite' (the suite's name, a string) is required")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - _DEFAULT_KEYS:
        bad = sorted(set(defaults) - _DEFAULT_KEYS) if isinstance(defaults, dict) else defaults
        raise SuiteError(f"{where}: defaults: unknown field(s) {bad}; allowed: {sorted(_DEFAULT_KEYS)}")
    dtype = raw.get("dtype")
    if dtype is not None and dtype not in DTYPE_CHOICES:
        raise SuiteError(f"{where}: field 'dtype': {dtype!r} is not one of {list(DTYPE_CHOICES)}")
    block = raw.get("backends")
    if block is not None:
        from harness.backends.options import OptionsError, check_block

        try:
            check_block(block, where)
        except OptionsError as e:
            raise SuiteError(str(e)) from None
    cases_raw = raw.get("cases")
    if not isinstance(cases_raw, list) or not cases_raw:
        raise SuiteError(f"{where}: field 'cases' must be a non-empty list of cases")
    cases, seen, problems = [], set(), []
    for i, c in enumerate(cases_raw):
        label = f"case #{i + 1}"
        if isinstance(c, dict) and isinstance(c.get("id"), str):
            label = f"case '{c['id']}'"
        if not isinstance(c, dict):
            problems.append(f"{where}: {label}: a case is a mapping, got {type(c).__name__}")
            continue
        try:
            case = Case.model_validate(_merge(defaults, c))
        except ValidationError as e:
            errs = e.errors()
            # a list whose items failed is then also "too short": that one says nothing new
            errs = [x for x in errs if not (x["type"] == "too_short" and any(
                len(y["loc"]) > len(x["loc"]) and y["loc"][:len(x["loc"])] == x["loc"] for y in errs))]
            problems += [f"{where}: {label}: {_describe_error(err)}" for err in errs]
            continue
        if case.id in seen:
            problems.append(f"{where}: {label}: field 'id': duplicate case id")
        seen.add(case.id)
        cases.append(case)
    if problems:  # every error at once: one round of fixing, not one per error
        head = f"{len(problems)} errors:\n  " if len(problems) > 1 else ""
        raise SuiteError(head + "\n  ".join(problems))
    return Suite(suite=raw["suite"], description=raw.get("description", ""), path=where, dtype=dtype,
                 backends=block or {}, cases=tuple(cases))
