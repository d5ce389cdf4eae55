"""VllmHttpRunner (`vllm_http`): vLLM's OpenAI server, token ids in and token ids out.

The harness starts `python -m vllm.entrypoints.openai.api_server` (the vllm
venv's interpreter) on 127.0.0.1 with the engine settings of the in-process
VllmRunner (float32, eager, block size 32, the same logprobs mode, 32 MiB of
KV cache) and `VLLM_SERVER_DEV_MODE=1`, which adds the server's own
`/collective_rpc` and `/reset_prefix_cache` endpoints used for weight updates.

`HttpVllmRollout` is a VllmRollout whose engine is the server: it implements
the batch API that VllmRunner calls (`generate_ids`, `score_ids`,
`update_params`, `engine_facts`) over `/v1/completions`, so VllmRunner's
mapping (harness.backends.vllm_sampling.to_vllm) and result conversion are shared and
the records mean the same thing; the tunix surface a trainer calls
(`generate(prompts, RolloutConfig)`, `get_per_token_logps`, `pad_id`, `eos_id`)
is VllmRollout's own, running on top of it, as a rollout that fans out to
servers would. The conventions normalised on the way are listed in
docs/http.md.

Options: those of harness.backends.http.options, and the in-process runner's
`logprobs_mode` / PARITY_VLLM_LOGPROBS_MODE, `prompt_logprobs` /
PARITY_VLLM_PROMPT_LOGPROBS, `block_size` / PARITY_VLLM_BLOCK_SIZE,
`enforce_eager` / PARITY_VLLM_EAGER, `dtype`, `kv_cache_memory_bytes`,
`server_args` (extra CLI arguments).
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from harness.backends.http.options import HttpOptions
from harness.backends.http.pool import Pool
from harness.backends.http.server import Client, Server, ServerError, free_port, log_dir, same_model
from harness.backends.tunix_contract import RolloutConfig
from harness.backends.vllm_rollout import Completion, PromptResult, VllmRollout
from harness.backends.options import runner_options
from harness.backends.vllm_runner import _MODES, VllmRunner
from harness.backends.vllm_sampling import VLLM
from harness.model import ModelRef
from harness.sampling.mapping import native_fields

SERVED_MODEL = "parity"
#: vLLM's OpenAI layer floors every logprob at this (JSON has no -inf)
FLOOR = -9999.0
#: SamplingParams fields of to_vllm that /v1/completions takes under the same name: every one the mapping sends
#: (from the table's vLLM column) but logit_bias (JSON object keys are strings) and detokenize (no such field)
_SAME_NAME = tuple(f for f in native_fields(VLLM) if f not in ("logit_bias", "detokenize"))
_PREFIX = "token_id:"


def unfloor(v: float | None) -> float | None:
    """The server's -9999.0 back to -inf (the in-process engine's value)."""
    if v is None:
        return None
    v = float(v)
    return -math.inf if v <= FLOOR else v


def token_id(s: str) -> int:
    """'token_id:17' (return_tokens_as_token_ids) -> 17; anything else is refused, never guessed from text."""
    if not isinstance(s, str) or not s.startswith(_PREFIX):
        raise ServerError(f"expected a token written as 'token_id:N' (return_tokens_as_token_ids), got {s!r}")
    return int(s[len(_PREFIX):])


def top_of(d: dict | None, k: int) -> dict[int, float] | None:
    """A completion position's top_logprobs ({'token_id:N': lp}, the sampled token first plus the top k)
    -> the entries of rank <= k, as the in-process runner keeps them (the API gives no ranks: the k largest)."""
    if d is None:
        return None
    items = sorted(((token_id(t), unfloor(v)) for t, v in d.items()), key=lambda kv: -kv[1])
    return dict(items[:k])


def prompt_side(ids: list[int], plp: list | None, k: int) -> tuple[list | None, list | None]:
    """choice.prompt_logprobs ([None, {'id': {logprob, rank, decoded_token}}, ...]) -> (logprobs, top) as
    VllmRollout._prompt_lps gives them: the first None, ranks <= k in the top."""
    if plp is None:
        return None, None
    if len(plp) != len(ids):
        raise ServerError(f"vLLM server returned {len(plp)} prompt logprobs for a {len(ids)}-token prompt")
    lps: list[float | None] = []
    top: list[dict[int, float] | None] = []
    for t, d in zip(ids, plp):
        if d is None:
            lps.append(None)
            top.append(None)
            continue
        entries = {int(tid): e for tid, e in d.items()}
        if t not in entries:
            raise ServerError(f"vLLM server's prompt logprobs lack the prompt token {t} at its position")
        lps.append(unfloor(entries[t]["logprob"]))
        top.append({tid: unfloor(e["logprob"]) for tid, e in entries.items()
                    if e.get("rank") is None or e["rank"] <= max(k, 1)})
    return lps, top


def request_body(prompt: list[int], fields: dict) -> dict:
    """to_vllm's SamplingParams fields -> a /v1/completions body, every field explicit."""
    body: dict[str, Any] = {"model": SERVED_MODEL, "prompt": list(prompt), "stream": False, "echo": False,
                            "return_tokens_as_token_ids": True, "return_token_ids": True}
    for k in _SAME_NAME:
        if k in fields:
            body[k] = fields[k]
    if fields.get("logit_bias"):
        body["logit_bias"] = {str(k): float(v) for k, v in fields["logit_bias"].items()}
    return body


class HttpVllmRollout(VllmRollout):
    """VllmRollout over /v1/completions: the batch API (generate_ids / score_ids / update_params) is this
    class's; the tunix surface is inherited and calls it."""

    def __init__(self, model: ModelRef, name: str, opts: HttpOptions, *, logprobs_mode: str, prompt_logprobs: str,
                 engine_kwargs: dict, server_args: list[str]):
        # VllmRollout.__init__ builds a vllm.LLM; here the engine is the server, so only the state the tunix
        # surface reads is set: the default RolloutConfig, the model's tokenizer and EOS ids as vLLM reads them
        from transformers import AutoTokenizer

        self._actor = self._model_view = self._mesh = None
        self.llm = None  # model() without an actor: the weights live in the server, not here
        self._config = RolloutConfig()
        self.add_special_tokens = False
        self.param_mapping = None
        self.in_process = False
        self._tmp_weights = None
        self.output = None
        self.last_results: list[PromptResult] | None = None
        self.prompt_logprobs_how = prompt_logprobs
        self.logprobs_mode = logprobs_mode
        self.engine_kwargs = dict(engine_kwargs)
        self.model_dir = Path(model.path)
        self.weights_dir = Path(model.path)  # what a restarted server must load
        self.name = name
        self.opts = opts
        self.server_args = list(server_args)
        self.last_update_s: float | None = None
        t0 = time.perf_counter()
        self.pool = Pool.from_options(opts, self._start_server)
        self.start_s = time.perf_counter() - t0
        try:
            self._hf_tokenizer = self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
            self._eos = self._read_eos()
            for c in self.pool.clients:
                models = c.get("/v1/models", timeout=30).get("data") or [{}]
                same_model(c.url, models[0].get("root"), self.weights_dir)
        except BaseException:
            self.pool.close()
            raise

    def _argv(self, port: int) -> list[str]:
        kw = self.engine_kwargs
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
                "--model", str(self.weights_dir), "--tokenizer", str(self.model_dir),
                "--served-model-name", SERVED_MODEL, "--dtype", str(kw["dtype"]), "--seed", str(kw["seed"]),
                "--logprobs-mode", self.logprobs_mode, "--max-logprobs", str(kw["max_logprobs"]),
                "--block-size", str(kw["block_size"]), "--disable-uvicorn-access-log",
                # the worker inside the engine core process: one interpreter fewer to start (~45 s here)
                "--distributed-executor-backend", "uni"]
        if kw.get("kv_cache_memory_bytes") and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            argv += ["--kv-cache-memory-bytes", str(kw["kv_cache_memory_bytes"])]
        if kw.get("enforce_eager"):
            argv.append("--enforce-eager")
        return argv + self.server_args

    def _start_server(self, index: int) -> Server:
        port = free_port()
        logs = log_dir()
        env = {"VLLM_SERVER_DEV_MODE": "1", "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "INFO")}
        return Server(self._argv(port), name=f"{self.name}[{index}]", health="/health", port=port,
                      log=logs / f"{self.name}.server{index}.log" if logs else None, env=env,
                      start_timeout=self.opts.start_timeout)

    # ------------------------------------------------------------------ facts
    def engine_facts(self) -> dict:
        out = {k: v for k, v in self.engine_kwargs.items()}
        out.update(served="vLLM OpenAI server /v1/completions, " + (
                       "external server" if self.opts.urls else "started as vllm.entrypoints.openai.api_server"),
                   servers=self.pool.urls,
                   prompt_logprobs=self.prompt_logprobs_how, logprobs_mode=self.logprobs_mode,
                   server_start_s=round(self.start_s, 3), server_args=self.server_args, **self.opts.describe())
        return out

    def engine_dtype(self) -> str:
        """The dtype the server's engine resolved, from its own config line in the log ("dtype=torch.X");
        without a log (a server the harness did not start) the dtype asked for."""
        for s in self.pool.servers:
            if s is not None and s.log is not None and s.log.is_file():
                found = re.findall(r"dtype=torch\.(\w+)", s.log.read_text(errors="replace"))
                if found:
                    return found[-1]
        return str(self.engine_kwargs["dtype"])

    def server_version(self) -> str:
        return str(self.pool.clients[0].get("/version", timeout=30).get("version", "unknown"))

    def close(self) -> None:
        self.pool.close()

    # ------------------------------------------------------------------ calls
    def _completion(self, client: Client, body: dict) -> dict:
        out = client.post("/v1/completions", body)
        if not isinstance(out, dict) or not isinstance(out.get("choices"), list):
            raise ServerError(f"/v1/completions answered without a choices list: {str(out)[:300]}")
        return out

    def generate_ids(self, prompts: list[list[int]], sampling: dict | list[dict], *,
                     prompt_logprobs: str | None = None, prompt_top_k: int = 1) -> list[PromptResult]:
        """VllmRollout.generate_ids over the server: shared or per-prompt fields, one request per prompt."""
        how = prompt_logprobs or self.prompt_logprobs_how
        prompts = [[int(t) for t in p] for p in prompts]
        per_prompt = list(sampling) if isinstance(sampling, (list, tuple)) else [sampling] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise ValueError(f"{len(per_prompt)} sampling settings for {len(prompts)} prompts")
        sent = [{**f, "prompt_logprobs": max(int(prompt_top_k), 0) if how == "inline" else None} for f in per_prompt]
        outs = self.pool.dispatch([request_body(p, f) for p, f in zip(prompts, sent)], self._completion)
        results = []
        for p, fields, out in zip(prompts, sent, outs):
            choices = out["choices"]
            n = int(fields.get("n", 1))
            if len(choices) != n:
                raise ServerError(f"vLLM server returned {len(choices)} choices for n={n}")
            k = fields.get("logprobs") or 0
            samples = [self._sample(c, k, fields.get("logprobs") is not None) for c in choices]
            first = choices[0]
            if first.get("prompt_token_ids") is not None and list(first["prompt_token_ids"]) != p:
                raise ServerError("vLLM server echoes other prompt ids than were sent")
            plps, ptop = prompt_side(p, first.get("prompt_logprobs"), prompt_top_k)
            results.append(PromptResult(prompt_ids=p, prompt_logprobs=plps, prompt_top=ptop, samples=samples,
                                        native_params=fields))
        if how == "separate":
            for r, (plps, ptop) in zip(results, self._prompt_logprob_requests(prompts, prompt_top_k)):
                r.prompt_logprobs, r.prompt_top = plps, ptop
        self.last_results = results
        return results

    @staticmethod
    def _sample(c: dict, k: int, want_lp: bool) -> Completion:
        ids = c.get("token_ids")
        if ids is None:
            raise ServerError("a /v1/completions choice without token_ids (return_token_ids ignored?)")
        ids = [int(t) for t in ids]
        lps = tops = None
        if want_lp:
            lp = c.get("logprobs")
            if not isinstance(lp, dict):
                raise ServerError(f"a /v1/completions choice without logprobs: {str(c)[:200]}")
            toks = [token_id(t) for t in lp.get("tokens") or []]
            if toks != ids:
                raise ServerError(f"logprobs.tokens {toks} disagree with token_ids {ids}")
            lps = [unfloor(v) for v in lp.get("token_logprobs") or []]
            if len(lps) != len(ids) or any(v is None for v in lps):
                raise ServerError(f"{len(lps)} token logprobs (some None?) for {len(ids)} tokens")
            tops = [top_of(d, max(k, 1)) for d in lp.get("top_logprobs") or []]
        return Completion(token_ids=ids, logprobs=lps, top=tops, finish_reason=c.get("finish_reason"),
                          stop_reason=c.get("stop_reason"), text=c.get("text") or "")

    def _prompt_logprob_requests(self, sequences: list[list[int]], k: int) -> list[tuple[list, list]]:
        """One max_tokens=1 greedy request per sequence asking for prompt logprobs (raw log_softmax)."""
        bodies = [{"model": SERVED_MODEL, "prompt": s, "max_tokens": 1, "temperature": 0.0,
                   "prompt_logprobs": max(int(k), 0), "return_token_ids": True, "stream": False} for s in sequences]
        outs = self.pool.dispatch(bodies, self._completion)
        res = []
        for s, out in zip(sequences, outs):
            c = out["choices"][0] if out["choices"] else {}
            if c.get("prompt_token_ids") is not None and list(c["prompt_token_ids"]) != s:
                raise ServerError("vLLM server echoes another sequence than was sent")
            if c.get("prompt_logprobs") is None:
                raise ServerError("vLLM server returned no prompt_logprobs")
            res.append(prompt_side(s, c["prompt_logprobs"], k))
        return res

    def score_ids(self, prompts: list[list[int]], completions: list[list[int]],
                  top_k: int = 0) -> list[tuple[list[float], list[dict[int, float]]]]:
        """Teacher-forced raw logprobs: the prompt logprobs of prompt + completion at len(prompt) + i."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        if any(not p for p in prompts):
            raise ValueError("an empty prompt cannot be scored (nothing conditions the first token)")
        todo = [i for i, c in enumerate(completions) if c]
        out: list[tuple[list[float], list[dict[int, float]]]] = [([], []) for _ in prompts]
        if todo:
            seqs = [[int(t) for t in prompts[i]] + [int(t) for t in completions[i]] for i in todo]
            for i, (lps, top) in zip(todo, self._prompt_logprob_requests(seqs, top_k)):
                n = len(prompts[i])
                out[i] = ([float(x) for x in lps[n:]], top[n:])
        return out

    def update_params(self, path: str | os.PathLike) -> None:
        """Every server reloads the weights in place (worker.reload_weights through the dev-mode
        /collective_rpc endpoint), then drops its prefix cache (/reset_prefix_cache)."""
        t0 = time.perf_counter()
        path = str(Path(path).resolve())

        def reload(c: Client) -> None:
            c.post("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": path}})
            ok = c.post("/reset_prefix_cache", {})
            if not (isinstance(ok, dict) and ok.get("success")):
                raise ServerError(f"{c.url}: /reset_prefix_cache after the weight update answered {ok}")

        self.weights_dir = Path(path)  # a server restarted after a crash loads these
        self.pool.broadcast(reload)
        self.last_update_s = time.perf_counter() - t0


class VllmHttpRunner(VllmRunner):
    name = "vllm_http"
    update_forms_probe = False  # a served engine takes a model directory only (update_params(path))
    bench = None  # measured through the generic calls (the engine is behind its server)

    def __init__(self, model: ModelRef, **options: Any):  # noqa: D107 - VllmRunner's options + HttpOptions
        self.model, self.options = model, options
        self.name = options.get("name") or type(self).name
        if options.get("raw"):
            options["logprobs_mode"] = "raw"
        typed = runner_options(type(self).name, options)  # the in-process runner's options, served
        mode, how = typed.logprobs_mode, typed.prompt_logprobs
        self.logprob_mode = mode  # type: ignore[assignment]
        engine_kwargs = {
            "dtype": options.get("dtype") or "float32", "seed": 0, "max_logprobs": 20,
            "block_size": typed.block_size, "enforce_eager": typed.enforce_eager,
            "kv_cache_memory_bytes": options.get("kv_cache_memory_bytes", 32 << 20),
        }
        self.rollout = HttpVllmRollout(model, self.name, HttpOptions.read(self.name, options, typed),
                                       logprobs_mode=_MODES[mode], prompt_logprobs=how, engine_kwargs=engine_kwargs,
                                       server_args=list(options.get("server_args") or []))

    def versions(self) -> dict[str, str]:
        out = super().versions()  # this venv's packages: what the servers the harness starts run
        try:
            out["vllm_server"] = self.rollout.server_version()
        except ServerError as e:
            out["vllm_server"] = f"unknown ({e})"
        return out

    def config(self) -> dict:
        out = self.rollout.engine_facts()
        out["logprob_mode"] = self.logprob_mode
        return out

    def dtype(self) -> str:
        return self.rollout.engine_dtype()

    def native_params(self, spec) -> dict:
        """The /v1/completions body sent for each prompt (its `prompt` aside)."""
        body = request_body([], super().native_params(spec))
        body.pop("prompt")
        return body
