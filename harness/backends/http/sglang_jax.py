"""SglangJaxHttpRunner (`sglang_jax_http`): sglang-jax's native server, `/generate` with token ids.

The harness starts the server through `harness.backends.http.sglang_server`
(sgl_jax's own `launch_server` with the compat workarounds applied in the
server process) on 127.0.0.1 with the in-process engine's CPU settings.
`HttpEngine` offers what SglangJaxRollout asks of its engine (`generate` with
Engine.generate's batched arguments, `alive`, `info`): each prompt is one
request (0.0.2's `/generate` rejects a batch of `input_ids`), the requests
of a batch go out concurrently, round-robin over the servers, and the answers
come back in order. So SglangJaxRollout's request building (seeds per sample
for n > 1, stop-token settings, random seeds for unseeded sampling) and its
answer checks (ids vs logprob ids, prompt echo) are the same code for both
paths, and the records mean the same thing (docs/http.md).

Weight updates: 0.0.2's server has no endpoint that loads weights (no
update_weights_from_disk / from_tensor), so a case that needs another weight
set is recorded as skipped with that reason (base.Unsupported), never run on
the old weights.

Options: those of harness.backends.http.options, plus `engine` / PARITY_SGLANG_ENGINE (JSON ServerArgs
over engine.CPU_ENGINE_DEFAULTS) and `compat_off` / PARITY_SGLANG_COMPAT_OFF, as for the in-process runner.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from harness.backends.base import Unsupported
from harness.backends.http.options import HttpOptions
from harness.backends.http.pool import Pool
from harness.backends.http.server import Client, Server, ServerError, free_port, log_dir, same_model
from harness.backends.options import runner_options
from harness.backends.sglang_jax import compat
from harness.backends.sglang_jax.engine import CPU_ENGINE_DEFAULTS
from harness.backends.sglang_jax.rollout import SglangJaxRollout
from harness.backends.sglang_jax.runner import SglangJaxRunner
from harness.model import ModelRef

#: Engine.generate's per-request arguments that /generate takes for one prompt
_PER_REQUEST = ("input_ids", "sampling_params", "return_logprob", "logprob_start_len", "top_logprobs_num",
                "token_ids_logprob")


class HttpEngine:
    """What SglangJaxRollout calls on its engine, over `/generate` of one or more servers."""

    def __init__(self, model_path: str, engine_kwargs: dict, compat_off: list[str], name: str, opts: HttpOptions):
        self.model_path, self.name, self.opts = model_path, name, opts
        self.engine_kwargs = {**CPU_ENGINE_DEFAULTS, **engine_kwargs}
        self.compat_off = list(compat_off)
        t0 = time.perf_counter()
        self.pool = Pool.from_options(opts, self._start_server)
        self.start_s = time.perf_counter() - t0
        try:
            self.info_at_start = self.info()
        except BaseException:
            self.pool.close()
            raise

    def _start_server(self, index: int) -> Server:
        port = free_port()
        cfg = {"model_path": self.model_path, "host": "127.0.0.1", "port": port,
               "engine_kwargs": self.engine_kwargs, "compat_off": self.compat_off}
        logs = log_dir()
        env = {"TOKENIZERS_PARALLELISM": "false"}
        if self.engine_kwargs.get("device") == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
        return Server([sys.executable, "-m", "harness.backends.http.sglang_server", json.dumps(cfg)],
                      name=f"{self.name}[{index}]", health="/get_model_info", port=port,
                      log=logs / f"{self.name}.server{index}.log" if logs else None, env=env,
                      start_timeout=self.opts.start_timeout, cwd=str(Path(__file__).resolve().parents[3]))

    @property
    def alive(self) -> bool:
        return all(s is None or s.alive for s in self.pool.servers)

    def info(self) -> dict:
        """What the rollout and runner read from LocalEngine.info, from the server and the model files."""
        # /get_server_info would say more, but 0.0.2 never answers it in single-process mode (it waits for
        # the scheduler's internal state): the settings sent and this venv's versions stand in for it
        model_info = self.pool.clients[0].get("/get_model_info", timeout=30)
        for c in self.pool.clients:
            same_model(c.url, c.get("/get_model_info", timeout=30).get("model_path"), self.model_path)
        cfg = json.loads((Path(self.model_path) / "config.json").read_text())
        eos = cfg.get("eos_token_id")
        gen = Path(self.model_path) / "generation_config.json"
        if gen.is_file():
            eos = json.loads(gen.read_text()).get("eos_token_id", eos)
        eos_ids = sorted({int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None})
        kw = dict(self.engine_kwargs)
        return {
            "dtype": kw.get("dtype"),  # what the server was started with (it reports nothing about it)
            "versions": {**compat.installed_versions(), "python": sys.version.split()[0]},
            "device": f"{kw.get('device')}, {kw.get('dtype')} (served)",
            "engine_kwargs": kw, "model_path": model_info.get("model_path", self.model_path),
            "vocab_size": int(cfg["vocab_size"]), "eos_token_ids": eos_ids,
            "context_length": int(kw.get("context_length") or cfg.get("max_position_embeddings", 0)),
            "lm_head_dtype": "not reported by the server",
            "timings": {"server_start_s": self.start_s},
            "servers": self.pool.urls, **self.opts.describe(),
        }

    @staticmethod
    def _one(client: Client, body: dict) -> dict:
        out = client.post("/generate", body)
        if isinstance(out, list) and len(out) == 1:
            out = out[0]
        if not isinstance(out, dict) or not isinstance(out.get("meta_info"), dict):
            raise ServerError(f"/generate answered without meta_info: {str(out)[:300]}")
        return out

    def generate(self, **kwargs: Any) -> list[dict]:
        """Engine.generate's batched arguments -> one /generate request per prompt, answers in order."""
        unknown = set(kwargs) - set(_PER_REQUEST)
        if unknown:
            raise ValueError(f"HttpEngine.generate: unsupported arguments {sorted(unknown)}")
        ids = kwargs["input_ids"]
        b = len(ids)
        bodies = []
        for r in range(b):
            body = {}
            for key in _PER_REQUEST:
                if key not in kwargs or kwargs[key] is None:
                    continue
                v = kwargs[key]
                body[key] = v[r] if isinstance(v, list) else v
            if body.get("token_ids_logprob") is None:
                body.pop("token_ids_logprob", None)
            bodies.append(body)
        return self.pool.dispatch(bodies, self._one)

    def update_weights(self, **kwargs: Any) -> dict:
        raise Unsupported("sglang-jax's HTTP server has no endpoint that loads weights "
                          f"(sglang-jax {compat.installed_versions().get('sglang-jax', '?')}): "
                          "update_params cannot be served")

    def shutdown(self) -> None:
        self.pool.close()


class HttpSglangJaxRollout(SglangJaxRollout):
    """SglangJaxRollout whose engine is HttpEngine (servers instead of an engine process)."""

    def __init__(self, *args: Any, http: HttpOptions, name: str, **kwargs: Any):
        self._http, self._name = http, name
        super().__init__(*args, **kwargs)

    def _start_engine(self) -> None:
        self._engine = HttpEngine(self._weights_from, self.engine_options, self.compat.to_wire(), self._name,
                                  self._http)
        self.info = self._engine.info_at_start
        self.vocab_size = int(self.info["vocab_size"])
        self._eos_ids = list(self.info["eos_token_ids"])
        self.deterministic = bool(self.info["engine_kwargs"].get("enable_deterministic_sampling"))

    def _engine_call(self, op: str, **kwargs: Any) -> Any:
        self._engine.pool.ensure_alive()  # a server that died is restarted, as an engine process is
        return getattr(self._engine, op)(**kwargs)


class SglangJaxHttpRunner(SglangJaxRunner):
    name = "sglang_jax_http"
    update_forms_probe = False  # a served engine takes a model directory only (update_params(path))
    bench = None  # measured through the generic calls (the engine is behind its server)

    def __init__(self, model: ModelRef, **options: Any):  # noqa: D107 - see the module docstring
        self.name = options.get("name") or type(self).name
        super().__init__(model, **options)

    def _rollout(self, model: ModelRef, engine: dict, options: dict) -> SglangJaxRollout:
        return HttpSglangJaxRollout(model_path=model.path, engine_options=engine, compat_off=options.get("compat_off"),
                                    isolated=True, http=HttpOptions.read(self.name, options, runner_options(type(self).name, options)),
                                    name=self.name)

    def config(self) -> dict:
        out = super().config()
        out.pop("isolated_engine_process", None)
        out["served"] = "sglang-jax http_server /generate, one prompt per request, " + (
            "external server" if self.rollout.info["external"] else "started by harness.backends.http.sglang_server")
        out["http"] = {k: self.rollout.info[k] for k in ("servers", "fanout", "external", "placement",
                                                         "request_timeout_s", "max_inflight_per_server")}
        return out

    def set_weights(self, model: ModelRef) -> None:
        if Path(model.path).resolve() == Path(self.rollout._weights_from).resolve():
            self.model = model  # already what the servers hold
            return
        self.rollout._engine_call("update_weights", path=str(model.path))
