"""Typed backend options: what a runner can be told, validated before anything runs.

Each backend of the registry names an options model (`Backend.options`, a
`BackendOptions` subclass importable with pydantic alone: the driver validates
suites and the command line in its own venv, where no engine is installed).
Values come from, weakest first:

1. the model's defaults;
2. the deprecated environment variables of `ENV` (e.g. PARITY_VLLM_LOGPROBS_MODE),
   each announced once per process with a DeprecationWarning;
3. the suite's `backends:` block (`backends: {vllm: {logprobs_mode: raw}}`);
4. the command line, `--backend-opt vllm.logprobs_mode=raw` (repeatable).

In the suite and on the command line, `profile: NAME` (`--backend-opt vllm.profile=raw`) applies a named set of
values of `PROFILES` beneath the explicit ones of the same source. A served variant (`serves=ENGINE`) starts from
its engine's resolved options, then its own block and `--backend-opt`. The resolved options go to the runner's
constructor, into run.json (`backend_options`), every session record (`config.options`), summary.json
(`backends.*.options`) and the report.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator

from harness.backends import registry


class OptionsError(ValueError):
    """A bad option value or name: the message names where it came from (file, flag) and the field."""


class BackendOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: field -> the environment variable that set it before options were typed (deprecated, still honoured)
    ENV: ClassVar[dict[str, str]] = {}
    #: profile name -> field values
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {}


class ReferenceOptions(BackendOptions):
    """The exact reference has nothing to choose: float64, teacher-forced, no engine."""


class VllmOptions(BackendOptions):
    """VllmRunner (and the served vLLM backend): docs/vllm.md."""

    logprobs_mode: Literal["processed", "raw"] = Field(
        "processed", description="what generate's completion logprobs (and top-k) are: processed (as tunix "
                                 "configures vLLM) or raw log_softmax; prompt logprobs and scores are raw")
    prompt_logprobs: Literal["separate", "inline"] = Field(
        "separate", description="separate: the sampling request without prompt logprobs (reads the prefix cache, "
                                "as production does) and a second request for them; inline: one request, as "
                                "tunix 0.1.x's VllmSampler (vLLM then never reads the prefix cache)")
    block_size: PositiveInt = Field(32, description="KV cache block size (CPU attention needs a multiple of 32)")
    enforce_eager: bool = Field(True, description="no torch.compile: faster start, slower decode")

    ENV: ClassVar[dict[str, str]] = {
        "logprobs_mode": "PARITY_VLLM_LOGPROBS_MODE", "prompt_logprobs": "PARITY_VLLM_PROMPT_LOGPROBS",
        "block_size": "PARITY_VLLM_BLOCK_SIZE", "enforce_eager": "PARITY_VLLM_EAGER"}
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "raw": {"logprobs_mode": "raw"},  # what an RL trainer that recomputes logprobs itself asks for
        "tunix": {"logprobs_mode": "processed", "prompt_logprobs": "inline"},  # tunix 0.1.x's VllmSampler requests
        "compiled": {"enforce_eager": False},
    }

    @field_validator("logprobs_mode", mode="before")
    @classmethod
    def _mode(cls, v: Any) -> Any:  # vLLM's own spelling (raw_logprobs) is accepted too
        return v.lower().removesuffix("_logprobs") if isinstance(v, str) else v


class SglangJaxOptions(BackendOptions):
    """SglangJaxRunner (and the served sglang-jax backend): docs/sglang_jax.md."""

    engine: dict[str, Any] = Field(default_factory=dict,
                                   description="sgl_jax Engine kwargs over the CPU defaults (engine.CPU_ENGINE_DEFAULTS)")
    compat_off: list[str] = Field(default_factory=list,
                                  description="compat workarounds to switch off (compat.REGISTRY names, or all)")
    logprob_mode: Literal["processed", "temperature", "raw"] = Field(
        "processed", description="what SglangJaxRollout's generated-token logprobs are: processed (renormalised over "
                                 "what min_p/top_k/top_p kept, as tunix configures its vLLM rollout), temperature "
                                 "(what sglang-jax's sampler computes) or raw; prompt logprobs and scores are raw "
                                 "(docs/sglang_jax.md; the in-process rollout: a served engine returns its own)")

    ENV: ClassVar[dict[str, str]] = {"engine": "PARITY_SGLANG_ENGINE", "compat_off": "PARITY_SGLANG_COMPAT_OFF",
                                     "logprob_mode": "PARITY_SGLANG_LOGPROB_MODE"}
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "no_compat": {"compat_off": ["all"]},  # the engine as released: every workaround off
    }

    @field_validator("engine", mode="before")
    @classmethod
    def _json(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as e:
                raise ValueError(f"not a JSON object: {e}") from None
        return v

    @field_validator("compat_off", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v


#: the served backends' options and the environment variables that set them before options were typed
_HTTP_ENV = {"fanout": "PARITY_HTTP_FANOUT", "start_timeout": "PARITY_HTTP_START_TIMEOUT",
             "request_timeout": "PARITY_HTTP_REQUEST_TIMEOUT", "max_inflight": "PARITY_HTTP_MAX_INFLIGHT"}


class ServedOptions(BackendOptions):
    """An engine behind its own HTTP servers (harness.backends.http, docs/http.md): the servers and the client."""

    fanout: PositiveInt = Field(1, description="servers of the engine behind the round-robin client "
                                               "(`parity run --fanout N` sets it for every served backend)")
    start_timeout: PositiveFloat = Field(600.0, description="seconds a server may take to answer its health check")
    request_timeout: PositiveFloat = Field(600.0, description="seconds one request may take")
    max_inflight: PositiveInt = Field(8, description="concurrent requests per server")


class VllmHttpOptions(VllmOptions, ServedOptions):
    """VllmHttpRunner: VllmRunner's options, served."""

    ENV: ClassVar[dict[str, str]] = {**VllmOptions.ENV, **_HTTP_ENV}


class SglangJaxHttpOptions(SglangJaxOptions, ServedOptions):
    """SglangJaxHttpRunner: SglangJaxRunner's options, served."""

    ENV: ClassVar[dict[str, str]] = {**SglangJaxOptions.ENV, **_HTTP_ENV}


# ---------------------------------------------------------------------------------------------- resolution
def options_class(backend: str) -> type[BackendOptions]:
    """The options model of BACKEND (an external server NAME=URL, unknown here, takes none: BackendOptions)."""
    b = registry.BACKENDS.get(backend)
    spec = b.options if b else None
    if not spec:
        return BackendOptions
    import importlib

    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)


_WARNED: set[str] = set()


def _from_env(cls: type[BackendOptions], backend: str, engine: str | None = None) -> dict[str, Any]:
    """The deprecated variables' values; the warning names ENGINE for the options a served BACKEND shares with it."""
    shared = options_class(engine).model_fields if engine else {}
    out = {}
    for fname, var in cls.ENV.items():
        v = os.environ.get(var)
        if v in (None, ""):
            continue
        out[fname] = v
        if var not in _WARNED:
            _WARNED.add(var)
            name = engine if fname in shared else backend
            msg = (f"{var} is deprecated: use --backend-opt {name}.{fname}=VALUE or the suite's "
                   f"`backends: {{{name}: {{{fname}: ...}}}}` block")
            warnings.warn(msg, DeprecationWarning, stacklevel=3)
            print(f"[parity] DeprecationWarning: {msg}", file=sys.stderr, flush=True)
    return out


def _describe(e: ValidationError) -> str:
    return "; ".join(f"field {'.'.join(map(str, err['loc'])) or '?'!r}: {err['msg']}" for err in e.errors())


def _layer(cls: type[BackendOptions], values: dict[str, Any], where: str) -> dict[str, Any]:
    """A source's values with its `profile` expanded beneath them."""
    values = dict(values)
    profile = values.pop("profile", None)
    if profile is None:
        return values
    if profile not in cls.PROFILES:
        raise OptionsError(f"{where}: field 'profile': unknown profile {profile!r}; known: {sorted(cls.PROFILES)}")
    return {**cls.PROFILES[profile], **values}


def validate(backend: str, values: dict[str, Any], where: str) -> BackendOptions:
    """BACKEND's options from VALUES (one source, profile allowed); OptionsError naming WHERE and the field."""
    cls = options_class(backend)
    try:
        return cls.model_validate(_layer(cls, values, where))
    except ValidationError as e:
        raise OptionsError(f"{where}: {_describe(e)}") from None


def parse_cli(items: list[str] | None) -> dict[str, dict[str, str]]:
    """['vllm.logprobs_mode=raw', ...] -> {'vllm': {'logprobs_mode': 'raw'}}; names checked by `resolve`."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        backend, dot, fname = key.strip().partition(".")
        if not eq or not dot or not backend or not fname:
            raise OptionsError(f"--backend-opt {item!r}: expected BACKEND.FIELD=VALUE (e.g. vllm.logprobs_mode=raw)")
        out.setdefault(backend, {})[fname] = value
    return out


def resolve(backend: str, suite_block: dict[str, dict] | None = None, cli: dict[str, dict] | None = None,
            suite_where: str = "suite") -> BackendOptions:
    """BACKEND's options: defaults < deprecated environment < suite `backends:` block < --backend-opt."""
    cls = options_class(backend)
    b = registry.BACKENDS.get(backend)
    values = _from_env(cls, backend, b.serves if b else None)
    chain = ([b.serves] if b and b.serves else []) + [backend]  # a served engine starts from its engine's
    for name in chain:
        values.update(_layer(cls, (suite_block or {}).get(name) or {}, f"{suite_where}: backends: {name}"))
    for name in chain:
        values.update(_layer(cls, (cli or {}).get(name) or {}, f"--backend-opt {name}"))
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        raise OptionsError(f"options of backend {backend!r} (suite {suite_where}, --backend-opt, environment): "
                           f"{_describe(e)}") from None


def runner_options(backend: str, kwargs: dict[str, Any]) -> BackendOptions:
    """A runner's typed options from its constructor keywords (the fields its model declares; None = not given)
    over the deprecated environment variables: the one reading of both, whether `parity record` built the runner
    (it passes every field) or a test or trainer did."""
    cls = options_class(backend)
    given = {k: kwargs[k] for k in cls.model_fields if kwargs.get(k) is not None}
    return resolve(backend, cli={backend: given})


def check_block(block: Any, where: str) -> dict[str, dict[str, Any]]:
    """A suite's `backends:` block, validated on its own (names and values): the suite loader calls this."""
    if not isinstance(block, dict):
        raise OptionsError(f"{where}: backends: a mapping of backend name -> options, got {type(block).__name__}")
    for name, values in block.items():
        if name not in registry.BACKENDS:
            raise OptionsError(f"{where}: backends: unknown backend {name!r}; known: {sorted(registry.BACKENDS)}")
        if not isinstance(values, dict):
            raise OptionsError(f"{where}: backends: {name}: a mapping of option -> value, got "
                               f"{type(values).__name__}")
        validate(name, values, f"{where}: backends: {name}")
    return block


def check_cli(cli: dict[str, dict[str, str]]) -> None:
    """--backend-opt names known backends and valid values (options of a backend a run lacks are unused)."""
    for name, values in cli.items():
        if name not in registry.BACKENDS:
            raise OptionsError(f"--backend-opt {name}.*: unknown backend {name!r}; known: {sorted(registry.BACKENDS)}")
        validate(name, values, f"--backend-opt {name}")


def resolve_all(backends: list[str], suite_block: dict | None, cli: dict | None,
                suite_where: str = "suite") -> dict[str, dict[str, Any]]:
    """{backend: resolved options as JSON}: what run.json records."""
    return {b: resolve(b, suite_block, cli, suite_where).model_dump(mode="json") for b in backends}


def describe(backend: str) -> list[dict[str, Any]]:
    """Each option of BACKEND: name, type, default, environment variable, description (docs, --help)."""
    cls = options_class(backend)
    out = []
    for fname, f in cls.model_fields.items():
        default = f.default_factory() if f.default_factory else f.default
        out.append({"name": fname, "type": str(f.annotation), "default": default, "env": cls.ENV.get(fname),
                    "description": f.description or ""})
    return out
