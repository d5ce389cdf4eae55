"""SglangJaxRollout: tunix's BaseRollout on the real sglang-jax Engine, with logprobs that mean something.

Upstream tunix has a SglangJaxRollout, but it returns no logprobs, its
`get_per_token_logps` crashes, and it cannot import against the sglang-jax on
PyPI (0.0.2). This one:

- subclasses `tunix.rl.rollout.base_rollout.BaseRollout` when tunix is importable
  (else a local ABC with the same methods), and is constructed the way tunix's
  RLCluster constructs a rollout engine: ``(rollout_actor=, tokenizer=, mesh=,
  rollout_config=)``, plus ``model_path=`` (default:
  ``rollout_config.rollout_sglang_jax_model_version``), ``engine_options=``
  (sgl_jax Engine kwargs over the CPU defaults in engine.py), ``compat_off=``
  and ``isolated=`` (engine in its own process, the default);
- offers `generate_batch`, a batch API like vLLM's ``LLM.generate`` (the integration design's `generate()`):
  text or token-id prompts, one native sampling dict shared or one per prompt,
  ``return_logprob``, ``logprob_start_len``, ``top_logprobs_num``,
  ``token_ids_logprob``; one `PromptOutput` per prompt with its n samples;
- includes the EOS / stop token that ends a completion in its tokens and
  logprobs (vLLM's convention, which tunix trainers need), and returns every
  generated token's logprob (never None when asked);
- n > 1: all n samples, in order, as n requests with distinct seeds derived
  from the request seed (`derive_seed`);
- `get_per_token_logps` runs a real teacher-forced prefill through the engine
  (prompt + completion, ``logprob_start_len = len(prompt) - 1``,
  ``max_new_tokens = 1``): completion logprob i = log p(completion[i] |
  prompt + completion[:i]) (golden/worked_example.json), shape (batch,
  completion_len), padding handled;
- `update_params` swaps the weights in memory (HF-named arrays, a model
  directory, or a nested state with a name mapping) and rebuilds the jitted
  forward; radix cache disabled and flushed: no stale KV.

Logprob meaning (`logprob_mode=`, default `LOGPROB_MODE`): prompt logprobs and
teacher-forced scores are raw log_softmax(logits); generated-token logprobs are
"processed" (renormalised over what min_p/top_k/top_p kept, as vLLM's
processed_logprobs and tunix's default rollout), "temperature" (what sglang-jax's
sampler computes: log_softmax((logits + penalties) / T), not renormalised) or
"raw"; greedy gives raw in every mode (docs/sglang_jax.md says why processed).
"""

from __future__ import annotations

import hashlib
import random
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from harness.backends.sglang_jax import compat
from harness.backends.sglang_jax.engine import EngineCrashed, EngineProcess, LocalEngine

#: what the generated-token logprobs mean (harness.spec.LogprobMode), chosen per rollout (logprob_mode=):
#: "processed" (the default: what tunix configures its vLLM rollout to return, rollout_vllm_logprobs_mode
#: "processed_logprobs"; docs/sglang_jax.md says why), "temperature" (what sglang-jax's sampler computes),
#: "raw" (the model's log_softmax, as the trainer's teacher-forced recompute at T = 1)
LOGPROB_MODES = ("processed", "temperature", "raw")
LOGPROB_MODE = "processed"

# tunix's contract (or its stand-ins), the row-seed, unpadding and padding rules: shared with VllmRollout
from harness.backends.tunix_contract import (  # noqa: E402
    SEED_MASK,
    TUNIX,
    BaseRollout,
    RolloutConfig,
    RolloutOutput,
    Row,
    model_view,
    rollout_output,
    row_seed,
    scores_to_array,
    seed_int,
    unpad_for_logps,
    update_view,
)


# ------------------------------------------------------------------ batch API output
@dataclass
class SampleOutput:
    """One completion, unpadded; EOS/stop token included in ids and logprobs."""

    prompt_index: int
    sample_index: int
    token_ids: list[int]
    text: str
    logprobs: list[float] | None
    top_logprobs: list[dict[int, float]] | None
    token_ids_logprobs: list[dict[int, float]] | None
    finish_reason: str | None  # "stop" | "length" | "abort"
    stop_reason: int | str | None  # stop token id / stop string that ended it; None for EOS or length
    native_params: dict
    meta: dict = field(default_factory=dict)


@dataclass
class PromptOutput:
    """One prompt of a generate_batch call: prompt-side data once, then its n samples in order."""

    prompt_ids: list[int]
    prompt_logprobs: list[float | None] | None  # one per prompt token, None where not computed (first: None)
    prompt_top_logprobs: list[dict[int, float] | None] | None
    samples: list[SampleOutput]


@dataclass
class ScoreOutput:
    logprobs: list[float]
    top_logprobs: list[dict[int, float]] | None = None


class EngineOutputError(RuntimeError):
    """The engine's answer is inconsistent (ids vs logprobs, prompt echo): refused, not papered over."""


def derive_seed(seed: int, sample_index: int, n: int) -> int:
    """Per-sample seed of sample j of a request with seed s.

    n == 1: s itself (reduced to 31 bits by hashing when larger). n > 1: the first 31 bits of
    blake2b("sglang-jax-rollout:{s}:{j}"), so that the n samples are distinct draws, the same on
    every call, in every batch position, on every machine.
    """
    if n == 1 and 0 <= seed <= SEED_MASK:
        return int(seed)
    digest = hashlib.blake2b(f"sglang-jax-rollout:{int(seed)}:{sample_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & SEED_MASK


def _per_prompt(value: Any, n: int, name: str, is_list_item=lambda v: False) -> list:
    if isinstance(value, (list, tuple)) and not is_list_item(value):
        if len(value) != n:
            raise ValueError(f"{name}: {len(value)} values for {n} prompts")
        return list(value)
    return [value] * n


# ------------------------------------------------------------------ the rollout
class SglangJaxRollout(BaseRollout):
    """tunix BaseRollout on sglang-jax (see the module docstring)."""

    def __init__(self, rollout_actor: Any = None, tokenizer: Any = None, mesh: Any = None,
                 rollout_config: Any = None, *, model_path: str | Path | None = None,
                 engine_options: dict | None = None, compat_off: Sequence[str] | str | None = None,
                 isolated: bool = True, param_mapping: Any = None,
                 weight_swap: str = "leaves", logprob_mode: str | None = None, **unknown: Any):
        if unknown:  # tolerated (a newer RLCluster may pass more), never silently
            warnings.warn(f"SglangJaxRollout ignores unknown arguments {sorted(unknown)}", stacklevel=2)
        mode = (logprob_mode or LOGPROB_MODE).lower().removesuffix("_logprobs")
        if mode not in LOGPROB_MODES:
            raise ValueError(f"SglangJaxRollout logprob_mode={logprob_mode!r}: choose one of {LOGPROB_MODES}")
        self.logprob_mode = mode
        self._actor = rollout_actor
        self._model_view = None
        self._mesh = mesh  # the engine builds its own mesh (tp_size); kept for tunix
        self.rollout_config = rollout_config if rollout_config is not None else RolloutConfig()
        path = model_path or getattr(self.rollout_config, "rollout_sglang_jax_model_version", "") or ""
        if not path or not Path(path).is_dir():
            raise ValueError("SglangJaxRollout needs a local HuggingFace model directory: model_path= or "
                             "rollout_config.rollout_sglang_jax_model_version")
        self.model_path = str(Path(path).resolve())
        self.compat = compat.CompatConfig.from_env(compat_off)
        self.engine_options = {**self._options_from_config(self.rollout_config), **(engine_options or {})}
        self.isolated = isolated
        self.weight_swap = weight_swap
        self.param_mapping = param_mapping
        self._weights_from = self.model_path  # what a restarted engine must load
        self._tokenizer = tokenizer if tokenizer is not None else self._load_tokenizer(self.model_path)
        self._engine: Any = None
        self._warned: set[str] = set()
        self._start_engine()

    # ---------------------------------------------------------------- engine lifecycle
    @staticmethod
    def _options_from_config(cfg: Any) -> dict:
        out = {}
        for src, dst in (("rollout_sglang_jax_context_length", "context_length"),
                         ("rollout_sglang_jax_max_running_requests", "max_running_requests"),
                         ("rollout_sglang_jax_precompile_bs_paddings", "precompile_bs_paddings"),
                         ("rollout_sglang_jax_precompile_token_paddings", "precompile_token_paddings")):
            v = getattr(cfg, src, None)
            if v is not None:
                out[dst] = v
        return out

    def _start_engine(self) -> None:
        off = self.compat.to_wire()
        if self.isolated:
            self._engine = EngineProcess(self._weights_from, self.engine_options, off, weight_swap=self.weight_swap)
            self.info = self._engine.info_at_start
        else:
            self._engine = LocalEngine(self._weights_from, self.engine_options, off, weight_swap=self.weight_swap)
            self.info = self._engine.info()
        self.vocab_size = int(self.info["vocab_size"])
        self._eos_ids = list(self.info["eos_token_ids"])
        self.deterministic = bool(self.info["engine_kwargs"].get("enable_deterministic_sampling"))

    def _engine_call(self, op: str, **kwargs) -> Any:
        if self.isolated and not self._engine.alive:
            if self._weights_from is None:
                raise EngineCrashed("the engine process died after an in-memory weight update from arrays; "
                                    "those weights cannot be restored: call update_params again")
            self._start_engine()
        return getattr(self._engine, op)(**kwargs)

    def restart(self) -> None:
        self.close()
        self._start_engine()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def __enter__(self) -> "SglangJaxRollout":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def engine_info(self) -> dict:
        return self._engine_call("info")

    # ---------------------------------------------------------------- tokenizer
    @staticmethod
    def _load_tokenizer(path: str) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)

    def _encode(self, text: str) -> list[int]:
        tok = self._tokenizer
        if hasattr(tok, "encode"):
            ids = tok.encode(text)
        else:
            ids = tok(text)["input_ids"]
        return [int(x) for x in ids]

    def pad_id(self) -> int:
        tok = self._tokenizer
        if callable(getattr(tok, "pad_id", None)):
            return int(tok.pad_id())
        pid = getattr(tok, "pad_token_id", None)
        return int(pid if pid is not None else self.eos_id())

    def eos_id(self) -> int:
        tok = self._tokenizer
        if callable(getattr(tok, "eos_id", None)):
            return int(tok.eos_id())
        eid = getattr(tok, "eos_token_id", None)
        return int(eid if eid is not None else self._eos_ids[0])

    def model(self) -> Any:
        """A stand-in for the rollout model: the weights live in the engine process.

        With a rollout_actor this is an nnx clone of it, made once and kept in step with
        update_params when the update is an nnx state of the same structure. It must not be the
        actor itself: tunix's learners skip weight sync when `is_sharing_weights(actor,
        rollout.model())`, and sync_weights reshards the actor's state onto this model's layout
        before calling update_params. Without an actor: None."""
        if self._actor is None:
            return None
        if self._model_view is None:
            self._model_view = model_view(self._actor)
        return self._model_view

    # ---------------------------------------------------------------- native sampling dicts
    #: SamplingParams fields sglang-jax 0.0.2 accepts and then ignores (no penalizer applies them), and the
    #: compat workaround that applies each
    IGNORED_BY_ENGINE = {"logit_bias": (lambda v: bool(v), "logit_bias_applied"),
                         "repetition_penalty": (lambda v: v not in (None, 1.0), "repetition_penalty_applied")}

    def _request_params(self, params: dict, j: int, n: int, base_seed: int | None) -> dict:
        p = {k: v for k, v in params.items() if k != "n"}
        if compat._sgl_at_most_002(self.compat.versions):
            for key, (used, fix) in self.IGNORED_BY_ENGINE.items():
                if used(p.get(key)) and key not in self._warned and not self.compat.on(fix):
                    self._warned.add(key)
                    warnings.warn(f"sglang-jax {self.compat.versions.get('sglang-jax')} accepts {key} but never "
                                  f"applies it (workaround {fix} is off): the completion ignores it", stacklevel=3)
        if self.compat.on("keep_stop_token"):
            p.setdefault("skip_special_tokens", False)
            p.setdefault("no_stop_trim", True)
        if base_seed is not None:
            p["sampling_seed"] = derive_seed(base_seed, j, n)
        return p

    def _base_seed(self, params: dict) -> int | None:
        seed = params.get("sampling_seed")
        greedy = float(params.get("temperature", 1.0)) < 1e-6 or params.get("top_k") == 1
        if seed is None and self.deterministic and not greedy:
            # deterministic mode would use DEFAULT_SAMPLING_SEED (42) for every unseeded request
            seed = random.SystemRandom().randrange(SEED_MASK + 1)
        return None if seed is None else int(seed)

    # ---------------------------------------------------------------- batch generate
    def generate_batch(self, prompt: str | list[str] | None = None, sampling_params: dict | list[dict] | None = None,
                       input_ids: list[int] | list[list[int]] | None = None, return_logprob: bool | list[bool] = True,
                       logprob_start_len: int | list[int] | None = None,
                       top_logprobs_num: int | list[int] | None = None,
                       token_ids_logprob: list[int] | list[list[int]] | None = None) -> list[PromptOutput]:
        """Generate for a batch of prompts, like vLLM's LLM.generate.

        `sampling_params` are sglang-jax's own (max_new_tokens, temperature, top_p, top_k (-1 off),
        min_p, n, sampling_seed, stop, stop_token_ids, ignore_eos, min_new_tokens, penalties, ...):
        one dict for all prompts or one per prompt. `logprob_start_len` (default: none of the
        prompt) is where prompt logprobs start; 0 gives one per prompt token, the first None.
        Returns one PromptOutput per prompt, in order, each with its n samples in order.
        """
        if (prompt is None) == (input_ids is None):
            raise ValueError("give exactly one of prompt= (text) or input_ids=")
        if prompt is not None:
            texts = [prompt] if isinstance(prompt, str) else list(prompt)
            ids_list = [self._encode(t) for t in texts]
        else:
            ids_list = [list(map(int, input_ids))] if input_ids and isinstance(input_ids[0], int) else [
                list(map(int, x)) for x in input_ids]
        b = len(ids_list)
        for i, ids in enumerate(ids_list):
            if not ids:
                raise ValueError(f"prompt {i} is empty")
            if max(ids) >= self.vocab_size or min(ids) < 0:
                raise ValueError(f"prompt {i}: token id out of range [0, {self.vocab_size})")
        params = _per_prompt(sampling_params if sampling_params is not None else {}, b, "sampling_params")
        params = [dict(p or {}) for p in params]
        rl = _per_prompt(return_logprob, b, "return_logprob")
        lsl = _per_prompt(logprob_start_len, b, "logprob_start_len")
        top = _per_prompt(top_logprobs_num, b, "top_logprobs_num")
        tids = _per_prompt(token_ids_logprob, b, "token_ids_logprob",
                           is_list_item=lambda v: len(v) == 0 or isinstance(v[0], int))

        # expand n (defect no. 13 in docs/sglang_jax.md: native n > 1 shares one seed) into seeded requests, prompt-major
        req_ids, req_params, req_rl, req_lsl, req_top, req_tids, owner = [], [], [], [], [], [], []
        native = []
        for i in range(b):
            n = int(params[i].get("n", 1))
            if n < 1:
                raise ValueError(f"prompt {i}: n must be >= 1")
            base = self._base_seed(params[i])
            expand = self.compat.on("n_as_seeded_requests") or n == 1
            copies = n if expand else 1
            for j in range(copies):
                p = self._request_params(params[i], j, n if expand else 1, base)
                if not expand:
                    p["n"] = n
                req_ids.append(ids_list[i])
                req_params.append(p)
                req_rl.append(bool(rl[i]))
                req_lsl.append(-1 if lsl[i] is None else int(lsl[i]))
                req_top.append(self._vocab_top(params[i], int(top[i] or 0)) if rl[i] else int(top[i] or 0))
                req_tids.append(list(tids[i]) if tids[i] else None)
                owner.append((i, j, n))
                native.append(p)
        kwargs: dict[str, Any] = {"input_ids": req_ids, "sampling_params": req_params, "return_logprob": req_rl,
                                  "logprob_start_len": req_lsl, "top_logprobs_num": req_top}
        if any(t is not None for t in req_tids):
            kwargs["token_ids_logprob"] = req_tids
        if any("n" in p for p in req_params):
            # the engine's own parallel sampling accepts only scalar logprob arguments
            for key in ("return_logprob", "logprob_start_len", "top_logprobs_num", "token_ids_logprob"):
                if key in kwargs:
                    vals = kwargs[key]
                    if any(v != vals[0] for v in vals):
                        raise ValueError(f"native n > 1 needs one {key} for every prompt")
                    kwargs[key] = vals[0]
        outs = self._engine_call("generate", **kwargs)

        # undo the engine's own n expansion (compat off): one output per sample, prompt-major
        flat: list[tuple[int, int, dict, dict, bool, int, int]] = []
        k = 0
        for r, (i, j, n) in enumerate(owner):
            copies = n if "n" in req_params[r] else 1
            for jj in range(copies):
                if k >= len(outs):
                    raise EngineOutputError(f"engine returned {len(outs)} outputs for {sum(o[2] for o in owner)} samples")
                flat.append((i, j + jj, outs[k], native[r], req_rl[r], req_lsl[r], req_top[r]))
                k += 1
        if k != len(outs):
            raise EngineOutputError(f"engine returned {len(outs)} outputs, expected {k}")

        results = [PromptOutput(prompt_ids=ids_list[i], prompt_logprobs=None, prompt_top_logprobs=None, samples=[])
                   for i in range(b)]
        for i, j, o, p, want_lp, start, ntop in flat:
            prompt_lp, prompt_top, sample = self._parse(o, ids_list[i], i, j, p, want_lp, start, ntop)
            res = results[i]
            if res.prompt_logprobs is None and prompt_lp is not None:
                res.prompt_logprobs, res.prompt_top_logprobs = prompt_lp, prompt_top
            res.samples.append(sample)
        self._to_mode(results, params, rl, top)
        self.last_outputs = results  # what the last call sent and got, per prompt (the tunix surface's records)
        return results

    # ---------------------------------------------------------------- logprob modes
    @staticmethod
    def _truncating(params: dict) -> bool:
        greedy = float(params.get("temperature", 1.0)) < 1e-6 or params.get("top_k") == 1
        k = int(params.get("top_k", -1) if params.get("top_k") is not None else -1)
        return not greedy and (k > 0 or float(params.get("top_p", 1.0)) < 1.0 or float(params.get("min_p", 0.0)) > 0)

    def _vocab_top(self, params: dict, asked: int) -> int:
        """processed mode under top-k/top-p/min-p: the whole temperature distribution at every generated
        position (its kept mass renormalises the sampled token's logprob); else what was asked."""
        return self.vocab_size if self.logprob_mode == "processed" and self._truncating(params) else asked

    def _to_mode(self, results: list[PromptOutput], params: list[dict], rl: list, top: list) -> None:
        """sglang-jax returns temperature-mode logprobs (log_softmax((logits + penalties) / T)); turn them into
        this rollout's mode, in place. processed: minus the log of the mass the sampler kept (min_p, top_k,
        top_p in vLLM's order, which the top_p_renormalised workaround gives the sampler too), computed from the
        full distribution asked for above; raw: the teacher-forced raw logprob of the same tokens (one prefill).
        Greedy is the same in every mode."""
        if self.logprob_mode == "temperature":
            return
        from harness.processing import log_softmax, processed_logits
        from harness.spec import SamplingSpec

        rescore = []
        for i, pr in enumerate(results):
            p = params[i]
            if not rl[i] or float(p.get("temperature", 1.0)) < 1e-6 or p.get("top_k") == 1:
                continue
            asked = int(top[i] or 0)
            if self.logprob_mode == "raw":
                rescore += [(pr, smp, asked) for smp in pr.samples if smp.logprobs]
                continue
            if not self._truncating(p):
                continue  # nothing masked: processed = temperature
            k = int(p.get("top_k", -1) if p.get("top_k") is not None else -1)
            spec = SamplingSpec(temperature=1.0, top_k=k if k > 0 else None, top_p=float(p.get("top_p", 1.0)),
                                min_p=float(p.get("min_p", 0.0)))
            for smp in pr.samples:
                if not smp.logprobs:
                    continue
                if not smp.top_logprobs or len(smp.top_logprobs) != len(smp.token_ids) \
                        or any(len(d) < self.vocab_size for d in smp.top_logprobs):
                    raise EngineOutputError(f"prompt {i}: processed logprobs need the whole distribution at each "
                                            f"position; the engine returned fewer entries")
                lps, tops = [], []
                for tok, dist in zip(smp.token_ids, smp.top_logprobs):
                    ids = np.fromiter(dist.keys(), dtype=np.int64)
                    lp = log_softmax(processed_logits(np.fromiter(dist.values(), dtype=np.float64), spec))
                    at = dict(zip(ids.tolist(), lp.tolist()))
                    lps.append(float(at[int(tok)]))
                    order = np.argsort(-lp, kind="stable")[:asked]
                    tops.append({int(ids[o]): float(lp[o]) for o in order})
                smp.logprobs = lps
                smp.top_logprobs = tops if asked > 0 else None
        if rescore:
            scored = self.score_batch([pr.prompt_ids for pr, _, _ in rescore], [smp.token_ids for _, smp, _ in rescore],
                                      top_logprobs_num=max(a for _, _, a in rescore))
            for (pr, smp, asked), sc in zip(rescore, scored):
                smp.logprobs = list(sc.logprobs)
                smp.top_logprobs = None if not asked or sc.top_logprobs is None else [
                    dict(sorted(d.items(), key=lambda kv: -kv[1])[:asked]) for d in sc.top_logprobs]

    def _parse(self, o: dict, prompt_ids: list[int], i: int, j: int, params: dict, want_lp: bool,
               start: int, ntop: int) -> tuple:
        mi = o["meta_info"]
        out_ids = [int(x) for x in o.get("output_ids") or []]
        fr = mi.get("finish_reason") or {}
        ftype = fr.get("type") if isinstance(fr, dict) else None
        matched = fr.get("matched") if isinstance(fr, dict) else None
        stop_ids = set(params.get("stop_token_ids") or [])
        stop_reason = matched if isinstance(matched, str) else (
            int(matched) if isinstance(matched, int) and matched in stop_ids else None)
        finish = {"stop": "stop", "length": "length", "abort": "abort"}.get(ftype, None)
        if finish == "length" and out_ids and self.compat.on("stop_before_length"):
            last = out_ids[-1]
            if last in stop_ids or (last in self._eos_ids and not params.get("ignore_eos")):
                finish, stop_reason = "stop", (last if last in stop_ids else None)
        logprobs = top = tokid = None
        prompt_lp = prompt_top = None
        if want_lp:
            olp = mi.get("output_token_logprobs") or []
            lp_ids = [int(t[1]) for t in olp]
            if lp_ids != out_ids:
                raise EngineOutputError(
                    f"prompt {i} sample {j}: output_ids {out_ids} disagree with the ids of output_token_logprobs "
                    f"{lp_ids} (a dropped stop/special token: keep_stop_token is "
                    f"{self.compat.state('keep_stop_token')})")
            logprobs = [t[0] for t in olp]
            if any(v is None for v in logprobs):
                raise EngineOutputError(f"prompt {i} sample {j}: a generated token has no logprob")
            logprobs = [float(v) for v in logprobs]
            if ntop > 0:
                top = [{int(t[1]): float(t[0]) for t in pos} for pos in (mi.get("output_top_logprobs") or [])]
            if mi.get("output_token_ids_logprobs"):
                tokid = [{int(t[1]): float(t[0]) for t in pos} for pos in mi["output_token_ids_logprobs"]]
            if start >= 0:
                ilp = mi.get("input_token_logprobs") or []
                echoed = [int(t[1]) for t in ilp]
                if echoed != prompt_ids[start:]:
                    raise EngineOutputError(
                        f"prompt {i}: the engine echoes prompt ids {echoed} for {prompt_ids[start:]} sent "
                        f"(prompt_id_echo_unclipped is {self.compat.state('prompt_id_echo_unclipped')})")
                prompt_lp = [None] * start + [None if t[0] is None else float(t[0]) for t in ilp]
                if ntop > 0 and mi.get("input_top_logprobs"):
                    prompt_top = [None] * start + [None if pos is None else {int(t[1]): float(t[0]) for t in pos}
                                                   for pos in mi["input_top_logprobs"]]
        sample = SampleOutput(
            prompt_index=i, sample_index=j, token_ids=out_ids, text=o.get("text", ""), logprobs=logprobs,
            top_logprobs=top, token_ids_logprobs=tokid, finish_reason=finish, stop_reason=stop_reason,
            native_params=params,
            meta={k: mi[k] for k in ("completion_tokens", "cached_tokens", "e2e_latency", "cache_miss_count") if k in mi},
        )
        return prompt_lp, prompt_top, sample

    # ---------------------------------------------------------------- teacher-forced scores
    def score_batch(self, prompts: list[list[int]], completions: list[list[int]],
                    top_logprobs_num: int = 0) -> list[ScoreOutput]:
        """Raw teacher-forced logprobs of each completion given its prompt: one prefill per pair
        (prompt + completion) with logprob_start_len = len(prompt) - 1 and max_new_tokens = 1; the
        engine's input logprob at position len(prompt)+i is log p(completion[i] | prompt + completion[:i])."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        todo = [(k, list(map(int, p)), list(map(int, c))) for k, (p, c) in enumerate(zip(prompts, completions)) if c]
        results = [ScoreOutput(logprobs=[], top_logprobs=[] if top_logprobs_num else None) for _ in prompts]
        if not todo:
            return results
        for k, p, c in todo:
            if not p:
                raise ValueError(f"pair {k}: empty prompt: the first completion token has no context")
        outs = self._engine_call(
            "generate", input_ids=[p + c for _, p, c in todo],
            sampling_params=[self._request_params({"max_new_tokens": 1, "temperature": 0.0}, 0, 1, None) for _ in todo],
            return_logprob=[True] * len(todo), logprob_start_len=[len(p) - 1 for _, p, _ in todo],
            top_logprobs_num=[int(top_logprobs_num)] * len(todo))
        if len(outs) != len(todo):
            raise EngineOutputError(f"engine returned {len(outs)} outputs for {len(todo)} scored pairs")
        for (k, p, c), o in zip(todo, outs):
            mi = o["meta_info"]
            ilp = mi.get("input_token_logprobs") or []
            echoed = [int(t[1]) for t in ilp]
            if echoed != [p[-1]] + c:
                raise EngineOutputError(
                    f"pair {k}: the engine echoes {echoed} for {[p[-1]] + c} sent "
                    f"(prompt_id_echo_unclipped is {self.compat.state('prompt_id_echo_unclipped')})")
            vals = [t[0] for t in ilp[1:]]
            if any(v is None for v in vals):
                raise EngineOutputError(f"pair {k}: a completion token has no logprob")
            top = None
            if top_logprobs_num:
                top = [{int(t[1]): float(t[0]) for t in pos} for pos in (mi.get("input_top_logprobs") or [])[1:]]
            results[k] = ScoreOutput(logprobs=[float(v) for v in vals], top_logprobs=top)
        return results

    def get_per_token_logps(self, prompt_tokens: Any, completion_tokens: Any, completion_mask: Any | None = None) -> Any:
        """tunix's per-token logps of `completion_tokens` given `prompt_tokens`, through the engine.

        Inputs are unpadded by `tunix_contract.unpad_for_logps` (tunix's layout, or ragged lists; a
        completion ends at its mask's last 1, else at its first EOS / RolloutConfig.eos_tokens token
        (`_stop_ids`), else at its last non-pad token). Returns float32 [batch, C]; 0 at padded positions.
        """
        prompts, completions, width = unpad_for_logps(prompt_tokens, completion_tokens, completion_mask,
                                                      pad=self.pad_id(), stops=self._stop_ids())
        scored = self.score_batch(prompts, completions)
        out = scores_to_array([s.logprobs for s in scored], len(prompts), width)
        if "jax" in sys.modules:  # a jax program (tunix) gets a jax.Array; others need not import jax
            import jax.numpy as jnp

            return jnp.asarray(out)
        return out

    def _stop_ids(self) -> list[int]:
        """What can end a completion (the unpadding rule's stops): the model's EOS ids, eos_id() and
        RolloutConfig.eos_tokens (which generate sends as stop tokens)."""
        eos = getattr(self.rollout_config, "eos_tokens", None) or []
        return sorted({self.eos_id(), *map(int, self._eos_ids), *map(int, eos)})

    # ---------------------------------------------------------------- weights
    def update_params(self, params: Any, filter_types: Optional[Tuple[Any, ...]] = None) -> dict:
        """Swap the engine's weights in memory; the very next call uses them.

        `params`: a model directory (str/Path, or anything with `.path`) whose *.safetensors are
        loaded; else HF-named arrays, a nested state (flax nnx.State, dict of dicts) or an nnx
        module, renamed by `harness.rl.weights.to_hf_named` with the `param_mapping` given at
        construction (tunix Qwen3 names are converted without one); `filter_types` filters an nnx
        state or module.
        """
        path = getattr(params, "path", params)
        if isinstance(path, (str, Path)):
            info = self._engine_call("update_weights", path=str(Path(path).resolve()))
            self._weights_from = str(Path(path).resolve())
            return info
        named = self._named_arrays(params, filter_types)
        info = self._engine_call("update_weights", named=named)
        self._weights_from = None
        update_view(self._model_view, params)
        return info

    def _named_arrays(self, params: Any, filter_types: Optional[Tuple[Any, ...]]) -> dict[str, np.ndarray]:
        from harness.rl.weights import to_hf_named

        return {k: np.asarray(v) for k, v in to_hf_named(params, filter_types, self.param_mapping).items()}

    # ---------------------------------------------------------------- tunix generate
    def generate(self, prompts: list[str] | list[list[int]], rollout_config: Any = None, **kwargs) -> Any:
        """tunix BaseRollout.generate: text (or token-id) prompts -> RolloutOutput.

        Rows are samples grouped by prompt in order: with n (kwarg `n` or `multi_sampling`) samples
        per prompt, row i * n + j is prompt i's sample j, and `left_padded_prompt_tokens` repeats
        each prompt n times so rows align (width max_prompt_length, or the next power of two of
        the longest prompt if that is longer: nothing is truncated). `tokens` is right-padded with
        pad_id to max_tokens_to_generate; `logprobs` holds one unpadded float32 array per row, the
        EOS/stop token included, in the rollout's logprob_mode. `text` is decoded without special tokens.

        Seeds: RolloutConfig.seed seeds the whole batch: prompt i's request seed is
        `tunix_contract.row_seed(seed, i, len(prompts))`, and its n samples get the per-sample seeds
        `derive_seed` makes from that, so that a prompt repeated in the batch (RLCluster's GRPO
        groups) yields distinct samples, the same ones on every call with that seed. Stop tokens:
        RolloutConfig.eos_tokens, else EOS.
        """
        cfg = rollout_config if rollout_config is not None else self.rollout_config
        n = int(kwargs.pop("n", kwargs.pop("multi_sampling", 1)) or 1)
        ids = [self._encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]
        seed = seed_int(getattr(cfg, "seed", None))
        top_k = getattr(cfg, "top_k", None)
        top_p = getattr(cfg, "top_p", None)
        base: dict[str, Any] = {
            "max_new_tokens": int(cfg.max_tokens_to_generate),
            "temperature": float(cfg.temperature or 0.0),
            "top_p": 1.0 if top_p is None else float(top_p),
            "top_k": -1 if top_k is None or int(top_k) <= 0 else int(top_k),
            "stop_token_ids": [int(t) for t in (getattr(cfg, "eos_tokens", None) or [self.eos_id()])],
        }
        params = []
        for i in range(len(ids)):
            p = dict(base, n=n)
            if seed is not None:  # generate_batch derives the n per-sample seeds from the row's seed
                p["sampling_seed"] = row_seed(seed, i, len(ids))
            params.append(p)
        res = self.generate_batch(input_ids=ids, sampling_params=params, return_logprob=True)
        rows = [Row(prompt_ids=pr.prompt_ids, token_ids=smp.token_ids, text=self._decode_after(pr.prompt_ids, smp.token_ids),
                    logprobs=smp.logprobs) for pr in res for smp in pr.samples]
        self.output = rollout_output(rows, cfg, self.pad_id())
        return self.output

    def _decode_after(self, prompt_ids: list[int], ids: list[int]) -> str:
        """The completion's text as it continues the prompt, special tokens skipped: what vLLM's incremental
        detokenizer returns. Decoding the completion alone loses a leading space with some tokenizers (the
        rollout contract's text field caught it: ' said that' vs 'said that')."""
        pre = self._decode(prompt_ids)
        full = self._decode(list(prompt_ids) + list(ids))
        return full[len(pre):] if full.startswith(pre) else self._decode(ids)

    def _decode(self, ids: list[int]) -> str:
        try:
            return self._tokenizer.decode(ids, skip_special_tokens=True)
        except TypeError:  # a tunix tokenizer adapter
            return self._tokenizer.decode(ids)
