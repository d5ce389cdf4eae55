"""RolloutRunner: any tunix `BaseRollout` as a backend, driven only through the BaseRollout surface.

`parity run --backends reference,NAME=module.path:Factory` records backend NAME
through a rollout the harness knows nothing about: `module.path` is imported
from PYTHONPATH or an installed package, and `Factory` (a BaseRollout subclass
or any callable returning one) is called with keyword arguments
`rollout_config=` (a tunix RolloutConfig whose `rollout_vllm_model_version` and
`rollout_sglang_jax_model_version` name the model directory) plus `model_path=`
and `dtype=` when its signature takes them. Installed packages can register
rollouts in the entry-point group `rollout_parity.backends` (name = backend
name, value = `module:Factory`). The rollout runs in the venv of a named
backend or any interpreter (`--backend-python NAME=BACKEND|VENV|PYTHON`; default
the reference's venv).

The runner uses only `generate(prompts, RolloutConfig)`, `get_per_token_logps`,
`update_params`, `pad_id` and `eos_id`. A rollout may declare richer
capabilities in a class attribute `parity_capabilities` (a set of names):

    token_ids        generate takes token-id lists as prompts (else the suite's ids are
                     decoded to text with the model's tokenizer, as tunix passes text)
    n                generate(..., n=k) returns k rows per prompt, grouped by prompt
                     (else each prompt is repeated k times in the batch, as RLCluster's GRPO does)
    prompt_logprobs  generate(..., prompt_logprobs=True) sets `output.prompt_logprobs`:
                     one list per row, one entry per prompt token, the first None
    top_logprobs     generate(..., top_logprobs=k) sets `output.top_logprobs`:
                     per row, per completion position, {token id: logprob}

and `logprob_mode` ("raw" | "temperature" | "processed": what its generate logprobs
mean; default "temperature", tunix's vanilla sampler's log_softmax(logits / T)).
A check that needs a capability the rollout lacks is skipped with that reason
(`capabilities_missing` in the session record's config); a sampling field tunix's
RolloutConfig cannot express skips the case; a rollout that returns
`logprobs=None` although `return_logprobs=True` was asked fails the logprob checks.
"""

from __future__ import annotations

import importlib
import inspect
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any, Callable

from harness.backends.base import Runner, Sample, Scored, Unsupported
from harness.backends.tunix_upstream import SGLANG_START_ENV
from harness.model import ModelRef
from harness.sampling.mapping import lacking
from harness.spec import LOGPROB_MODES, SamplingSpec

ENTRY_POINT_GROUP = "rollout_parity.backends"
CAPABILITIES = {
    "token_ids": "generate taking token-id prompts",
    "n": "generate(..., n=k) returning k samples per prompt",
    "prompt_logprobs": "generate returning prompt logprobs",
    "top_logprobs": "generate returning top-k logprobs per completion position",
}
#: the registry's runner of every rollout backend (harness/backends/registry.py: `rollout` names the factory)
RUNNER = "harness.backends.rollout_runner:RolloutRunner"
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def spec_env(name: str) -> str:
    return f"PARITY_ROLLOUT_{name.upper()}"


def python_env(name: str) -> str:
    return f"PARITY_ROLLOUT_PYTHON_{name.upper()}"


def is_spec(value: str) -> bool:
    """'module.path:Factory' (not a URL: those are served backends)."""
    return bool(_SPEC.match(value)) and not value.startswith(("http:", "https:"))


def parse_entry(entry: str) -> tuple[str, str]:
    """'mine=hf_rollout:HfRollout' -> ('mine', 'hf_rollout:HfRollout'); ValueError naming the entry."""
    name, _, spec = entry.partition("=")
    name, spec = name.strip(), spec.strip()
    if not _NAME.match(name):
        raise ValueError(f"--backends entry {entry!r}: NAME=module.path:Class with NAME in lower-case letters, "
                         "digits and _")
    if not is_spec(spec):
        raise ValueError(f"--backends entry {entry!r}: expected NAME=module.path:Class")
    return name, spec


def installed() -> dict[str, str]:
    """Rollouts registered by installed packages in the entry-point group `rollout_parity.backends`."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def rollout_spec(name: str) -> str | None:
    """The factory of rollout backend `name`: registered (tunix's shipped rollouts), given on the command
    line (exported to the recording process in PARITY_ROLLOUT_<NAME>), or an installed plugin."""
    from harness.backends import registry

    b = registry.BACKENDS.get(name)
    if b is not None:
        return b.rollout if b.runner == RUNNER else None
    if os.environ.get(spec_env(name)):
        return os.environ[spec_env(name)]
    try:
        return installed().get(name)
    except Exception:  # noqa: BLE001 - a broken distribution's metadata must not break unrelated names
        return None


def venv_of(name: str) -> str:
    """Where rollout backend `name` runs: --backend-python's choice (a backend, venv name or path), else its
    registered venv, else the reference's."""
    from harness.backends import registry

    if os.environ.get(python_env(name)):
        return os.environ[python_env(name)]
    return registry.venv_name(name) if name in registry.BACKENDS else registry.reference()


def load_factory(spec: str) -> Callable[..., Any]:
    module, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"rollout {spec!r}: cannot import {module!r} ({e}); is it on PYTHONPATH "
                          f"(PYTHONPATH={os.environ.get('PYTHONPATH', '')!r}) or installed in {sys.executable}?") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportError(f"rollout {spec!r}: module {module!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"rollout {spec!r}: {attr!r} is not a class or callable")
    return obj


REQUIRED = ("generate", "get_per_token_logps", "update_params", "pad_id", "eos_id")


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _takes(fn: Callable, name: str) -> bool:
    """`name` is an explicit parameter of fn (not swallowed by **kwargs)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class RolloutRunner(Runner):
    """A tunix BaseRollout through its surface only (see the module docstring)."""

    name = ""
    logprob_mode = "temperature"

    def __init__(self, model: ModelRef, **options: Any):
        super().__init__(model, **options)
        self.spec = rollout_spec(self.name)
        if self.spec is None:
            raise KeyError(f"rollout backend {self.name!r}: no factory (--backends {self.name}=module.path:Class)")
        factory = load_factory(self.spec)
        # what must be set before jax/flax are imported (tunix_upstream: sglang-jax 0.0.2 next to flax 0.12.6)
        if "flax" not in sys.modules:
            for k, v in (getattr(factory, "start_env", None) or {}).items():
                os.environ.setdefault(k, v)
        from harness.backends.tunix_contract import TUNIX, RolloutConfig

        self.tunix_classes = TUNIX
        self._config_cls = RolloutConfig
        cfg = self._config(SamplingSpec())
        kwargs: dict[str, Any] = {"rollout_config": cfg}
        if _accepts(factory, "model_path"):
            kwargs["model_path"] = str(model.path)
        if options.get("dtype") and _accepts(factory, "dtype"):
            kwargs["dtype"] = options["dtype"]
        self.rollout = factory(**kwargs)
        missing = [m for m in REQUIRED if not callable(getattr(self.rollout, m, None))]
        if missing:
            raise TypeError(f"rollout {self.spec!r} lacks BaseRollout method(s) {missing}")
        caps = set(getattr(self.rollout, "parity_capabilities", ()) or ())
        unknown = caps - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"rollout {self.spec!r}: unknown parity_capabilities {sorted(unknown)}; "
                             f"known: {sorted(CAPABILITIES)}")
        self.capabilities = caps
        mode = getattr(self.rollout, "logprob_mode", None)
        self.mode_declared = mode is not None
        if mode is not None:
            if mode not in LOGPROB_MODES:
                raise ValueError(f"rollout {self.spec!r}: logprob_mode {mode!r}; choose one of {LOGPROB_MODES}")
            self.logprob_mode = mode
        self._tokenizer = None
        self._eos_ids = self._model_eos_ids()

    # ---------------------------------------------------------------- description
    def close(self) -> None:
        close = getattr(getattr(self, "rollout", None), "close", None)
        if callable(close):
            close()

    def versions(self) -> dict[str, str]:
        from importlib import metadata

        out = {"python": platform.python_version(), "rollout": self.spec}
        dists = metadata.packages_distributions()
        top = self.spec.split(".", 1)[0].split(":", 1)[0]
        for pkg in {top, "tunix", "numpy", "jax", "torch", "transformers", "sgl_jax", "vllm"}:
            for dist in dists.get(pkg, []):
                try:
                    out[dist] = metadata.version(dist)
                except metadata.PackageNotFoundError:
                    pass
        own = getattr(self.rollout, "versions", None)
        if callable(own):
            out.update({str(k): str(v) for k, v in own().items()})
        return out

    def device(self) -> str:
        own = getattr(self.rollout, "device", None)
        if callable(own):
            return str(own())
        return f"{platform.machine()} (the rollout does not say)"

    def dtype(self) -> str:
        own = getattr(self.rollout, "dtype", None)
        if callable(own):
            return str(own())
        # a BaseRollout has no way to report it: the run's, as it was asked to compute in
        return str(self.options.get("dtype") or "float32")

    def config(self) -> dict:
        return {
            "rollout": self.spec,
            "rollout_class": f"{type(self.rollout).__module__}.{type(self.rollout).__qualname__}",
            "tunix_classes": "tunix" if self.tunix_classes else "harness stand-ins (tunix not installed here)",
            "capabilities": sorted(self.capabilities),
            "capabilities_missing": {c: f"{self.name} lacks {c} ({what}): not in its parity_capabilities"
                                     for c, what in CAPABILITIES.items() if c not in self.capabilities},
            "logprob_mode": self.logprob_mode,
            "logprob_mode_declared": self.mode_declared,
            "workarounds": [str(w) for w in getattr(self.rollout, "workarounds", None) or []],
            "dtype_reported_by": "rollout" if callable(getattr(self.rollout, "dtype", None)) else
            "the run (a BaseRollout does not report its dtype)",
            "n_policy": "generate(n=k)" if "n" in self.capabilities else
            "each prompt repeated k times in one generate call (RLCluster's GRPO layout)",
            "score": "get_per_token_logps(left-padded prompts, right-padded completions[, completion_mask])",
            "weights": "update_params(rollout.parity_params(model_dir))" if self._params_hook() else
            "update_params({HF name: numpy array}) from the model directory's safetensors",
        }

    # ---------------------------------------------------------------- helpers
    def _tok(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.model.path))
        return self._tokenizer

    def _model_eos_ids(self) -> list[int]:
        import json

        ids: list[int] = []
        for fname in ("generation_config.json", "config.json"):
            f = Path(self.model.path) / fname
            if f.is_file():
                v = json.loads(f.read_text()).get("eos_token_id")
                ids += v if isinstance(v, list) else ([] if v is None else [v])
        return sorted({int(i) for i in ids})

    def _params_hook(self):
        hook = getattr(self.rollout, "parity_params", None)
        return hook if callable(hook) else None

    def _config(self, spec: SamplingSpec, prompt_len: int = 1) -> Any:
        """SamplingSpec -> tunix RolloutConfig; Unsupported for what RolloutConfig cannot express."""
        # the fields RolloutConfig lacks (the table's one-sided tunix sides) at a value other than their default
        default = SamplingSpec()
        cant = [f if isinstance(getattr(spec, f), (bool, dict)) else f"{f}={getattr(spec, f)}"
                for f in SamplingSpec.model_fields if f in lacking() and getattr(spec, f) != getattr(default, f)]
        if cant:
            raise Unsupported(f"tunix RolloutConfig has no field for {', '.join(cant)}: the case cannot be "
                              f"expressed through the BaseRollout surface")
        path = str(self.model.path)
        eos = None
        if spec.stop_token_ids:  # RolloutConfig.eos_tokens replaces EOS: the model's EOS stays a stop token
            eos = sorted(set(getattr(self, "_eos_ids", []) or []) | set(spec.stop_token_ids))
        return self._config_cls(
            max_tokens_to_generate=spec.max_tokens, temperature=float(spec.temperature),
            top_p=None if spec.top_p >= 1.0 else float(spec.top_p), top_k=spec.top_k, seed=spec.seed,
            max_prompt_length=int(prompt_len), eos_tokens=eos, return_logprobs=True,
            rollout_vllm_model_version=path, rollout_sglang_jax_model_version=path)

    def native_params(self, spec: SamplingSpec) -> dict:
        cfg = self._config(spec)
        keys = ("max_tokens_to_generate", "temperature", "top_p", "top_k", "seed", "eos_tokens", "return_logprobs")
        out = {k: getattr(cfg, k) for k in keys}
        if spec.n > 1:
            out["n"] = spec.n if "n" in self.capabilities else f"{spec.n} (prompt repeated)"
        return out

    # ---------------------------------------------------------------- calls
    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        import numpy as np

        from harness.backends.tunix_contract import unpad_for_logps

        cfg = self._config(spec, max(len(p) for p in prompts))
        n = spec.n
        native_n = n > 1 and "n" in self.capabilities
        sent = [p for p in prompts for _ in range(1 if native_n or n == 1 else n)]
        as_text = "token_ids" not in self.capabilities
        inputs = [self._tok().decode(p) if as_text else list(p) for p in sent]
        kwargs: dict[str, Any] = {}
        if native_n:
            kwargs["n"] = n
        if "prompt_logprobs" in self.capabilities:
            kwargs["prompt_logprobs"] = True
        if "top_logprobs" in self.capabilities and spec.top_logprobs:
            kwargs["top_logprobs"] = spec.top_logprobs
        out = self.rollout.generate(inputs, cfg, **kwargs)
        rows = len(prompts) * n
        tokens = out.tokens
        if len(tokens) != rows:
            raise RuntimeError(f"{self.name}.generate returned {len(tokens)} rows for {len(prompts)} prompts x n={n}")
        pad = int(self.rollout.pad_id())
        stops = sorted({int(self.rollout.eos_id()), *self._eos_ids, *(cfg.eos_tokens or [])})
        # the rows' own prompts, to see that the rollout generated from the prompt it was given
        p_rows, c_rows, _ = unpad_for_logps(np.asarray(out.left_padded_prompt_tokens),
                                            tokens if isinstance(tokens, (list, tuple)) else np.asarray(tokens),
                                            pad=pad, stops=stops)
        if isinstance(tokens, (list, tuple)):  # ragged rows (tunix's samplers): cut after the first stop token
            c_rows = [next((c[:i + 1] for i, t in enumerate(c) if t in stops), c) for c in c_rows]
        lps = getattr(out, "logprobs", None)
        plps = getattr(out, "prompt_logprobs", None) if "prompt_logprobs" in self.capabilities else None
        tops = getattr(out, "top_logprobs", None) if "top_logprobs" in self.capabilities else None
        texts = list(getattr(out, "text", None) or [""] * rows)
        result: list[list[Sample]] = []
        for i, prompt in enumerate(prompts):
            samples = []
            for j in range(n):
                r = i * n + j
                if p_rows[r] != list(prompt):
                    raise RuntimeError(f"{self.name} generated row {r} from prompt tokens {p_rows[r]}, not the "
                                       f"{list(prompt)} it was given" + (" (as text: re-tokenized differently)"
                                                                         if as_text else ""))
                comp = c_rows[r]
                lp = None
                if lps is not None and lps[r] is not None:
                    lp = [float(x) for x in np.asarray(lps[r]).reshape(-1)]
                    lp = lp[:len(comp)] if len(lp) >= len(comp) else lp  # padded rows are cut, short ones kept
                last = comp[-1] if comp else None
                if last is not None and last in stops:
                    finish = "stop"
                elif len(comp) >= spec.max_tokens:
                    finish = "length"
                else:
                    finish = "stop"  # ended early without a stop token in its tokens (a dropped stop token)
                stop_reason = last if finish == "stop" and last in set(spec.stop_token_ids) else None
                top = None
                if tops is not None and tops[r] is not None:
                    top = [{str(k): float(v) for k, v in d.items()} for d in tops[r][:len(comp)]]
                samples.append(Sample(
                    completion_ids=comp, completion_logprobs=lp, finish_reason=finish, stop_reason=stop_reason,
                    prompt_logprobs=None if plps is None or plps[r] is None else
                    [None if v is None else float(v) for v in plps[r]],
                    completion_top=top, text=str(texts[r]) if r < len(texts) else ""))
            result.append(samples)
        return result

    def score(self, prompts: list[list[int]], completions: list[list[int]], spec: SamplingSpec) -> list[Scored]:
        import numpy as np

        todo = [k for k, c in enumerate(completions) if c]
        out = [Scored(logprobs=[]) for _ in prompts]
        if not todo:
            return out
        pad = int(self.rollout.pad_id())
        P = max(len(prompts[k]) for k in todo)
        C = max(len(completions[k]) for k in todo)
        pt = np.full((len(todo), P), pad, dtype=np.int32)
        ct = np.full((len(todo), C), pad, dtype=np.int32)
        mask = np.zeros((len(todo), C), dtype=np.int32)
        for r, k in enumerate(todo):
            pt[r, P - len(prompts[k]):] = prompts[k]
            ct[r, :len(completions[k])] = completions[k]
            mask[r, :len(completions[k])] = 1
        fn = self.rollout.get_per_token_logps
        got = fn(pt, ct, mask) if _takes(fn, "completion_mask") else fn(pt, ct)
        if got is None:
            raise RuntimeError(f"{self.name}.get_per_token_logps returned None")
        arr = np.asarray(got, dtype=np.float64)
        if arr.shape != (len(todo), C):
            raise RuntimeError(f"{self.name}.get_per_token_logps returned shape {arr.shape} for "
                               f"[{len(todo)}, {C}] completions")
        for r, k in enumerate(todo):
            out[k] = Scored(logprobs=[float(x) for x in arr[r, :len(completions[k])]])
        return out

    def set_weights(self, model: ModelRef) -> None:
        hook = self._params_hook()
        if hook is not None:
            params = hook(str(model.path))
        else:
            from safetensors.numpy import load_file

            params = {}
            for f in sorted(Path(model.path).glob("*.safetensors")):
                params.update(load_file(str(f)))
        self.rollout.update_params(params)
        self.model = model


def runner_for(name: str) -> type[RolloutRunner]:
    return type(f"RolloutRunner_{name}", (RolloutRunner,), {"name": name})
