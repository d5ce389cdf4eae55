"""Canonical SamplingSpec -> each engine's own parameters, and back, generated from the table's rows.

Pure functions, no engine import (the driver, the reference and every engine venv import this).

    to_engine(spec, engine, **extra)     the engine's native sampling parameters (vLLM: SamplingParams kwargs;
                                         sglang-jax: one request's sampling dict; the rollout expands n)
    engine_request(spec, engine)         request-level arguments beside them (sglang-jax: logprobs)
    from_engine(d, engine, request=None) the way back (round-trip: from_engine(to_engine(s)) == s)
    to_tunix(spec, engine) / from_tunix  tunix RolloutConfig keyword arguments for a rollout on ENGINE
    issues(spec, engine, ...)            what an engine cannot do as the spec says: explicit, never silent

How it is generated: every row of `harness.sampling.table.ROWS` whose canonical name is a SamplingSpec
field says, per engine column, the native field(s) and default. A field the engine has is sent as the
canonical value; a `SamplingDialect` (declared by the engine's backend module and named by its registry
entry, `Backend.sampling`) adds a converter only where a convention differs (top_k's "off", sglang-jax's
string logit_bias keys, ...), the way back takes the native default of the row for an absent field, and the
dialect's `issues` names what the engine ignores. A new sampling field is therefore its SamplingSpec field,
its table row and the reference's semantics; an engine needs a converter only when it spells it differently.

Conventions (docs/sampling.md has the table with reasons; each dialect's module states its own):

- greedy: canonical temperature 0. The canonical spec rejects 0 < T < 0.01 and T > 2 (vLLM's range), so no
  engine reinterprets a temperature it is sent.
- top_k off: canonical None; each engine its own spelling; tunix: None means *unset*, so the
  generation_config default applies: the mapping sends the rollout engine's explicit off.
- max tokens: always sent (defaults differ per engine).
- logit_bias: canonical int keys, values in [-100, 100] (vLLM clamps to that in from_optional).
- generation_config.json: vLLM's LLM.generate and sglang-jax's Engine.generate apply it only when
  no sampling parameters are passed at all; tunix's samplers start from it and override only what
  RolloutConfig sets. Every mapping here sends every field, and `generation_config_issues` names
  what a tunix rollout would still take from it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable, Literal

from harness.sampling import table
from harness.spec import SamplingSpec

LOGIT_BIAS_LIMIT = 100.0
#: the column (and introspection name) of tunix's RolloutConfig: a surface shared by every tunix rollout
TUNIX = "tunix"

#: fields whose effect the sampling_effects check measures (greedy): the neutral value of each
EFFECT_NEUTRAL: dict[str, Any] = {
    "stop_token_ids": (), "ignore_eos": False, "min_tokens": 0, "repetition_penalty": 1.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "logit_bias": {},
}

#: a converter's "this engine is not sent the field for this value" (e.g. sglang-jax without a seed)
OMIT = object()
#: the side statuses whose field is not sent (table.py)
NOT_SENT = ("one-sided", "unsupported by design", "absent", "")


class MappingError(ValueError):
    """An engine dict that no canonical spec maps to (from_*), naming the field."""


Severity = Literal["fail", "note"]


@dataclass(frozen=True)
class MappingIssue:
    engine: str
    field: str
    status: str  # the table's vocabulary: one-sided, unsupported by design, engine bug, differs, ignored
    severity: Severity  # fail: the field is dropped or has no effect; note: it means something else here
    reason: str

    def as_dict(self) -> dict:
        return {"engine": self.engine, "field": self.field, "status": self.status, "severity": self.severity,
                "reason": self.reason}


@dataclass(frozen=True)
class ProcessedConvention:
    """An engine whose sampler applies the filters in another order than the canonical one: the reference
    computes the distribution under the engine's order too (`FirstStepDistribution.processed_by_engine`), so that the
    sampling_distribution verdict tells that convention from a sampler defect."""

    label: str  # the engine, in prose ("sglang-jax")
    what: str  # the filter whose meaning differs ("top-p")
    #: spec -> whether the engine's distribution differs from the canonical one (checks test both then)
    applies: Callable[[SamplingSpec], bool]
    #: (penalised logits, spec) -> the engine's processed logits, -inf where masked (numpy, float64)
    logits: Callable[[Any, SamplingSpec], Any]


@dataclass(frozen=True)
class SamplingDialect:
    """One engine's sampling parameters: its column of the table plus the conventions that differ."""

    column: str  # table.Row attribute holding this engine's side (and sampling_table.json's `<column>_field`)
    label: str  # the engine, in messages ("sglang-jax")
    #: canonical field -> fn(canonical value, spec) -> native value (a tuple for a side of several fields; OMIT)
    to: dict[str, Callable[[Any, SamplingSpec], Any]] = field(default_factory=dict)
    #: canonical field -> fn(native value(s)) -> canonical value; absent: the value coerced to the field's type
    back: dict[str, Callable[..., Any]] = field(default_factory=dict)
    #: harness-level fields always sent with this value (the way back refuses another)
    fixed: dict[str, Any] = field(default_factory=dict)
    #: keyword arguments of to_engine and their defaults (vLLM: prompt_logprobs)
    extra: dict[str, Any] = field(default_factory=dict)
    #: the way back rejects fields no row covers, except these (set by the rollout's own workarounds)
    strict: bool = False
    tolerated: tuple[str, ...] = ()
    #: (spec, engine, deterministic=, version=, workarounds=) -> [MappingIssue]: what the engine ignores
    issues: Callable[..., list[MappingIssue]] | None = None
    #: () -> the installed class's fields (harness.sampling.introspect's JSON), None when not installed
    introspect: Callable[[], dict | None] | None = None
    #: introspected fields that are no sampling parameters (deployment, request content), with the reason
    not_sampling: dict[str, str] = field(default_factory=dict)
    processed: ProcessedConvention | None = None
    # ---- a tunix rollout on this engine (RolloutConfig lacks the table's one-sided tunix fields)
    #: (spec, this engine's native values of the fields RolloutConfig lacks) -> RolloutConfig kwargs carrying
    #: them; None: a tunix rollout on this engine cannot forward them (an issue each)
    tunix_extras: Callable[[SamplingSpec, dict], dict] | None = None
    #: spec -> RolloutConfig kwargs a tunix rollout on this engine needs whatever it can forward
    tunix_settings: Callable[[SamplingSpec], dict] | None = None
    #: RolloutConfig kwargs -> this engine's native dict those extras were sent in
    tunix_extras_back: Callable[[dict], dict] | None = None
    #: (spec, engine label) -> [MappingIssue] of a tunix rollout on this engine, beyond the missing fields
    tunix_issues: Callable[[SamplingSpec, str], list[MappingIssue]] | None = None
    #: tunix's sampler class for this engine, and why it cannot forward what RolloutConfig lacks (no tunix_extras)
    tunix_sampler: str = ""
    tunix_no_extras: str = "it cannot forward extra sampling kwargs"


# ---------------------------------------------------------------- which dialect an engine speaks
@cache
def dialect(engine: str) -> SamplingDialect:
    """The dialect of ENGINE (a backend of the registry, a served variant: its engine's; or tunix)."""
    from harness.backends import registry

    spec = registry.sampling_dialects().get(engine)
    if spec is None and engine in registry.BACKENDS:
        spec = registry.sampling_dialects().get(registry.get(engine).engine)
    if spec is None:
        raise KeyError(f"no sampling dialect for {engine!r}; known: {sorted(registry.sampling_dialects())}")
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def dialects() -> dict[str, SamplingDialect]:
    """engine name -> dialect, in the registry's order (tunix's RolloutConfig last)."""
    from harness.backends import registry

    return {name: dialect(name) for name in registry.sampling_dialects()}


def conventions() -> dict[str, ProcessedConvention]:
    """engine -> its processed-distribution convention, for the engines that declare one."""
    return {name: d.processed for name, d in dialects().items() if d.processed is not None}


# ---------------------------------------------------------------- canonical <-> native, from the rows
def _spec_rows() -> list[table.Row]:
    return [r for r in table.ROWS if r.canonical in SamplingSpec.model_fields]


def _sent(side: table.Side) -> bool:
    return bool(side.fields) and side.status not in NOT_SENT


def native(spec: SamplingSpec, d: SamplingDialect, only: set[str] | None = None) -> tuple[dict, dict]:
    """(sampling params, request-level args) of SPEC in dialect D (`only`: these canonical fields)."""
    params: dict[str, Any] = {}
    request: dict[str, Any] = {}
    for row in _spec_rows():
        side = getattr(row, d.column)
        if (only is not None and row.canonical not in only) or not _sent(side):
            continue
        value = getattr(spec, row.canonical)
        conv = d.to.get(row.canonical)
        out = conv(value, spec) if conv else value
        for f, v in zip(side.fields, out if len(side.fields) > 1 else (out,)):
            if v is not OMIT:
                (request if f.startswith("request:") else params)[f.removeprefix("request:")] = v
    return params, request


def _coerce(name: str, v: Any) -> Any:
    """A native value as the canonical field's type (the default's type says which)."""
    default = SamplingSpec.model_fields[name].get_default(call_default_factory=True)
    if isinstance(default, bool):
        return bool(v)
    if isinstance(default, float):
        return float(v)
    if isinstance(default, int):
        return int(v)
    if isinstance(default, tuple):
        return tuple(v or ())
    if isinstance(default, dict):
        return {int(k): float(x) for k, x in (v or {}).items()}
    return None if v is None else int(v)  # optional ints (seed, top_k)


def canonical(d: SamplingDialect, params: dict, request: dict | None = None, present_only: bool = False) -> dict:
    """The canonical field values that native PARAMS (and REQUEST) mean; an absent native field has the row's
    native default (`present_only`: fields with none of their native fields present are left out)."""
    request = request or {}
    out: dict[str, Any] = {}
    for row in _spec_rows():
        side = getattr(row, d.column)
        if not _sent(side):
            continue
        defaults = side.default if len(side.fields) > 1 else (side.default,)
        vals, seen = [], False
        for f, default in zip(side.fields, defaults):
            src, key = (request, f.removeprefix("request:")) if f.startswith("request:") else (params, f)
            seen |= key in src
            vals.append(src.get(key, default))
        if present_only and not seen:
            continue
        conv = d.back.get(row.canonical)
        out[row.canonical] = conv(*vals) if conv else _coerce(row.canonical, vals[0])
    return out


def to_native(spec: SamplingSpec, d: SamplingDialect, **extra: Any) -> dict:
    """SPEC in dialect D's sampling parameters: every field explicit, so that no engine default decides."""
    unknown = set(extra) - set(d.extra)
    if unknown:
        raise TypeError(f"{d.label} sampling parameters: unexpected {sorted(unknown)}; takes {sorted(d.extra)}")
    params, _ = native(spec, d)
    return {**params, **d.fixed, **d.extra, **extra}


def from_native(params: dict, d: SamplingDialect, request: dict | None = None) -> SamplingSpec:
    """The canonical spec an explicit native dict means (the engine's own conventions undone)."""
    if d.strict:
        known = {f for r in _spec_rows() for f in getattr(r, d.column).fields if not f.startswith("request:")}
        unknown = sorted(set(params) - known - set(d.tolerated) - set(d.fixed))
        if unknown:
            raise MappingError(f"{d.label} field(s) {unknown} have no canonical counterpart")
    values = canonical(d, params, request)
    for k, harness_value in d.fixed.items():
        if k in params and params[k] != harness_value:
            raise MappingError(f"{k}={params[k]!r}: the harness always sends {harness_value!r}")
    return SamplingSpec(**values)


def native_fields(d: SamplingDialect) -> tuple[str, ...]:
    """Every sampling parameter dialect D is sent (its sampling dict's keys, request-level ones aside)."""
    fields = [f for r in _spec_rows() if _sent(getattr(r, d.column))
              for f in getattr(r, d.column).fields if not f.startswith("request:")]
    return tuple(fields) + tuple(d.fixed) + tuple(d.extra)


def to_engine(spec: SamplingSpec, engine: str, **extra: Any) -> dict:
    """ENGINE's native sampling parameters for SPEC (a backend; a served one: its engine's)."""
    return to_native(spec, dialect(engine), **extra)


def engine_request(spec: SamplingSpec, engine: str) -> dict:
    """The request-level arguments that carry what ENGINE keeps outside its sampling parameters."""
    return native(spec, dialect(engine))[1]


def from_engine(params: dict, engine: str, request: dict | None = None) -> SamplingSpec:
    return from_native(params, dialect(engine), request)


def to_tunix(spec: SamplingSpec, engine: str, *, max_prompt_length: int | None = None) -> dict:
    """tunix RolloutConfig keyword arguments for a rollout on ENGINE. What RolloutConfig has no field for
    (the table's one-sided tunix fields) goes where the engine's dialect says (`tunix_extras`; set even at
    neutral values, so that the model's generation_config cannot fill it in); where it says nothing, it
    cannot be sent (`issues` says so)."""
    t, e = dialect(TUNIX), dialect(engine)
    kw, _ = native(spec, t)
    kw["top_k"] = native(spec, e, {"top_k"})[0]["top_k"]  # None would mean unset: the engine's explicit off
    if max_prompt_length is not None:
        kw["max_prompt_length"] = max_prompt_length
    if e.tunix_extras is not None:
        kw.update(e.tunix_extras(spec, native(spec, e, lacking())[0]))
    if e.tunix_settings is not None:
        kw.update(e.tunix_settings(spec))
    return kw


def from_tunix(kw: dict, engine: str) -> SamplingSpec:
    t, e = dialect(TUNIX), dialect(engine)
    values = canonical(t, kw)
    if e.tunix_extras_back is not None:
        values.update(canonical(e, e.tunix_extras_back(kw), present_only=True))
    return SamplingSpec(**values)


def lacking() -> set[str]:
    """Canonical fields tunix's RolloutConfig has no field for (the table's one-sided tunix sides)."""
    return {r.canonical for r in _spec_rows() if getattr(r, TUNIX).status == "one-sided"}


# ---------------------------------------------------------------- what an engine cannot do as the spec says
def version_tuple(v: str | None) -> tuple[int, ...]:
    out = []
    for part in (v or "").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def set_fields(spec: SamplingSpec) -> dict[str, Any]:
    """Fields the spec sets to a non-default value."""
    default = SamplingSpec()
    return {k: getattr(spec, k) for k in SamplingSpec.model_fields if getattr(spec, k) != getattr(default, k)}


def _is_default(spec: SamplingSpec, f: str) -> bool:
    return getattr(spec, f) == SamplingSpec.model_fields[f].get_default(call_default_factory=True)


def issues(spec: SamplingSpec, engine: str, *, deterministic: bool | None = None,
           version: str | None = None, workarounds: dict | None = None) -> list[MappingIssue]:
    """Everything `engine` would do differently from the canonical meaning of `spec`.

    ENGINE: a backend (a served one: its engine's), or `tunix/<engine>` for tunix's RolloutConfig on it.
    `deterministic`: the engine's deterministic-sampling mode as the run's engine had it (None: unknown).
    `version`: the engine version. `workarounds`: the rollout's compat state as the run's session recorded it
    (name -> "on"/"off"/"not needed"). An engine without a dialect has no known issues."""
    surface, _, on = engine.partition("/")
    if surface == TUNIX and on:
        return _tunix_issues(spec, engine, on)
    try:
        d = dialect(engine)
    except KeyError:
        return []
    if d.issues is None:
        return []
    return d.issues(spec, engine, deterministic=deterministic, version=version, workarounds=workarounds)


def _tunix_issues(spec: SamplingSpec, label: str, on: str) -> list[MappingIssue]:
    out: list[MappingIssue] = []
    e = dialect(on)
    if spec.n > 1:
        out.append(MappingIssue(label, "n", "converted", "note",
                                "RolloutConfig has no n: pass it to generate(..., n=) (tunix's VllmSampler "
                                "keeps only the first of n samples)"))
    if e.tunix_extras is None:
        for f in [r.canonical for r in _spec_rows() if r.canonical in lacking()]:
            if not _is_default(spec, f):
                out.append(MappingIssue(label, f, "one-sided", "fail",
                                        f"tunix's RolloutConfig has no {f}, and {e.tunix_no_extras}"))
    if e.tunix_issues is not None:
        out.extend(e.tunix_issues(spec, label))
    if spec.top_logprobs > 1:
        out.append(MappingIssue(label, "top_logprobs", "converted", "note",
                                "RolloutConfig.return_logprobs is a bool: tunix asks for the sampled token's "
                                "logprob only"))
    return out


# ---------------------------------------------------------------- generation_config.json
GENERATION_CONFIG_SAMPLING = {  # generation_config key -> canonical field (what the engines read from it)
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
    "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens",
}


def generation_config_issues(gen: dict, engine: str) -> list[MappingIssue]:
    """What a model's generation_config.json would decide for a request mapped here.

    A backend (LLM.generate / Engine.generate with explicit params): nothing. A tunix rollout
    (`tunix/<engine>`) starts from it: every key RolloutConfig cannot override, on an engine whose
    dialect cannot forward the missing fields, is an issue."""
    surface, _, on = engine.partition("/")
    if surface != TUNIX or not on or dialect(on).tunix_extras is not None:
        return []
    present = {k: gen[k] for k in GENERATION_CONFIG_SAMPLING if gen.get(k) is not None}
    return [MappingIssue(engine, GENERATION_CONFIG_SAMPLING[k], "engine default", "fail",
                         f"generation_config.json sets {k}={present[k]!r}; tunix's {dialect(on).tunix_sampler} "
                         "starts from it and RolloutConfig cannot override it")
            for k in present if GENERATION_CONFIG_SAMPLING[k] in lacking()]
