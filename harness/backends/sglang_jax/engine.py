"""The sglang-jax Engine behind SglangJaxRollout: in this process (`LocalEngine`) or in its own (`EngineProcess`).

sglang-jax must live in its own process (defect no. 14 in docs/sglang_jax.md): a failed Engine
SIGKILLs its host, `Engine.shutdown()` (also registered at exit) kills every
child of the caller, and importing its engine module installs the uvloop
policy and disables `threading._register_atexit` process-wide. So the
rollout normally talks to an `EngineProcess`: a `python -m
harness.backends.sglang_jax.worker` child that owns a `LocalEngine`, spoken to
with pickled (op, kwargs) messages over its stdin/stdout. When the child dies
the call raises `EngineCrashed` with its exit status and the tail of its
stderr, and the next call may start a fresh one.

`LocalEngine` is also usable in-process (`SglangJaxRollout(isolated=False)`),
for a process that is prepared to be the engine's host.
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from harness import steptimer
from harness.backends.sglang_jax import compat

#: Engine kwargs measured to work on CPU (docs/sglang_jax.md); every one can be overridden.
CPU_ENGINE_DEFAULTS: dict[str, Any] = {
    "device": "cpu",
    "tp_size": 1,
    "dtype": "float32",
    "page_size": 1,
    "max_total_tokens": 4096,
    "max_running_requests": 8,
    "max_prefill_tokens": 256,
    "chunked_prefill_size": 256,
    "context_length": 512,
    "attention_backend": "native",
    "disable_radix_cache": True,
    "skip_server_warmup": True,
    "enable_single_process": True,
    "disable_overlap_schedule": True,
    "random_seed": 42,
    "disable_jax_precompile": True,
    "enable_deterministic_sampling": True,
    "log_level": "error",
}


class EngineCrashed(RuntimeError):
    """The engine process died (or never started); the message carries its exit status and stderr tail."""


class EngineCallError(RuntimeError):
    """An engine call raised inside the engine process; the engine is still alive."""


# ============================================================================ in the engine's process
class LocalEngine:
    """A real sgl_jax Engine with the compat workarounds applied; plain-data in, plain-data out."""

    def __init__(self, model_path: str, engine_kwargs: dict | None = None, compat_off: list[str] | None = None,
                 weight_swap: str = "leaves"):
        t0 = time.perf_counter()
        if weight_swap not in ("leaves", "rejit"):
            raise ValueError(f"weight_swap={weight_swap!r}: 'leaves' (no recompile) or 'rejit' (initialize_jit)")
        self.weight_swap = weight_swap
        self.cfg = compat.CompatConfig.from_env(compat_off)
        self.env_applied = compat.apply_env(self.cfg)
        kwargs = {**CPU_ENGINE_DEFAULTS, **(engine_kwargs or {})}
        if kwargs.get("device") == "cpu":
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
        if os.environ.get("JAX_PLATFORMS") and os.environ["JAX_PLATFORMS"] != kwargs.get("device"):
            raise ValueError(f"engine device {kwargs.get('device')!r} must equal JAX_PLATFORMS="
                             f"{os.environ['JAX_PLATFORMS']!r} (sglang-jax requires them equal)")
        self.patches_applied = compat.apply_patches(self.cfg)
        # XLA's persistent compilation cache (harness/paths.py; PARITY_JAX_CACHE=off disables): the engine's
        # first calls compile its forward and sampler for every batch shape, the same in every engine process
        from harness import paths

        cache = paths.enable_jax_compile_cache()
        self.jax_compile_cache = str(cache) if cache is not None else None
        from sgl_jax.srt.entrypoints.engine import Engine  # noqa: E402 (after env + patches)

        self.t_import = time.perf_counter() - t0
        self.kwargs = kwargs
        self.model_path = str(model_path)
        t1 = time.perf_counter()
        self.engine = Engine(model_path=self.model_path, **kwargs)
        self.t_start = time.perf_counter() - t1
        self.weight_swaps = 0
        self._timing = False  # steptimer installed (`parity bench` attribution only)
        self.last_call: dict = {}
        self.last_kwargs: dict = {}

    # ---------------------------------------------------------------- internals
    @property
    def model_runner(self):
        return self.engine.scheduler_info["scheduler"].tp_worker.worker.model_runner

    # ---------------------------------------------------------------- calls
    def ping(self) -> str:
        return "pong"

    def info(self) -> dict:
        import jax

        mr = self.model_runner
        cfg = mr.model_config
        hf = cfg.hf_config
        dev = jax.devices()[0]
        head = getattr(mr.model, "lm_head", None)
        return {
            "versions": {**compat.installed_versions(), "python": sys.version.split()[0]},
            "device": f"{dev.platform} ({getattr(dev, 'device_kind', dev.platform)}), {_dtype_name(cfg.dtype)}",
            "dtype": _dtype_name(cfg.dtype),
            "engine_kwargs": self.kwargs,
            "model_path": self.model_path,
            "vocab_size": int(cfg.vocab_size),
            "eos_token_ids": sorted(int(x) for x in (cfg.hf_eos_token_id or [])),
            "context_length": int(cfg.context_len),
            "architecture": list(getattr(hf, "architectures", None) or []),
            "lm_head_dtype": _dtype_name(getattr(head, "dtype", None)) if head is not None else "tied",
            "compat": self.cfg.describe(),
            "compat_env_applied": self.env_applied,
            "compat_patches_applied": self.patches_applied,
            "timings": {"import_s": self.t_import, "engine_start_s": self.t_start},
            "jax_compile_cache": self.jax_compile_cache,
            "weight_swaps": self.weight_swaps,
            "weight_swap": self.weight_swap,
            "pid": os.getpid(),
        }

    def generate(self, **kwargs) -> list[dict]:
        t = time.perf_counter()
        out = self.engine.generate(**kwargs)
        self.last_call = {"engine_s": time.perf_counter() - t, "steps": steptimer.take() if self._timing else None}
        self.last_kwargs = kwargs
        if isinstance(out, dict):
            out = [out]
        return [_plain(o) for o in out]

    def idle_load(self, seconds: float = 2.0) -> dict:
        """What this engine does while nobody calls it, over `seconds` of this process doing nothing else:
        scheduler loop iterations per second and this process's CPU seconds per second (compat
        idle_scheduler_waits: without it 0.0.2 loops without ever blocking)."""
        sched = self.engine.scheduler_info["scheduler"]
        count = [0]
        loop = sched.recv_requests  # (bound: the class's, patched or not)

        def counted():
            count[0] += 1
            return loop()

        sched.recv_requests = counted  # the loop looks it up on the instance at each iteration
        try:
            t, cpu = time.perf_counter(), time.process_time()
            time.sleep(seconds)
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        finally:
            del sched.recv_requests
        return {"loops_per_s": count[0] / wall, "cpu_s_per_s": cpu / wall, "seconds": wall}

    # ---------------------------------------------------------------- attribution (`parity bench`)
    def step_timing(self) -> None:
        """Time every step, forward and sample from now on (harness/steptimer.py)."""
        steptimer.install_sglang_jax()
        steptimer.take()
        self._timing = True

    def last_timing(self) -> dict:
        """The last generate's wall time inside this process, and its steps when timed."""
        return self.last_call

    def last_request(self) -> dict:
        """The last generate's Engine.generate keyword arguments, to send the same work again."""
        return self.last_kwargs

    def timed_generate(self, **kwargs) -> dict:
        """Engine.generate without sending the outputs back: last_timing() of the call."""
        self.generate(**kwargs)
        return self.last_call

    def update_weights(self, path: str | None = None, named: dict | None = None, flush: bool = True) -> dict:
        """Swap weights in memory: HF-named arrays (or every *.safetensors under `path`) are mapped
        with the model's own WeightMapping table (transpose, head-dim and kv-head padding), written
        with nnx.update, and the jitted forward rebuilt (0.0.2 captures the state leaves in a closure)."""
        import jax.numpy as jnp
        from flax import nnx
        from sgl_jax.srt.utils.weight_utils import WeightLoader, WeightMapping

        t0 = time.perf_counter()
        if (path is None) == (named is None):
            raise ValueError("update_weights: give exactly one of path= or named=")
        if path is not None:
            named = _read_safetensors(Path(path))
        mr = self.model_runner
        model = mr.model
        mapping_fns = [getattr(model, a) for a in dir(model) if a.startswith("_create_") and a.endswith("weight_mappings")]
        if len(mapping_fns) != 1:
            raise NotImplementedError(f"{type(model).__name__}: no unique _create_*_weight_mappings method")
        mappings = mapping_fns[0]()
        unknown = sorted(set(named) - set(mappings))
        if unknown:
            raise KeyError(f"update_weights: {len(unknown)} name(s) not in the model's weight mapping, e.g. {unknown[:3]}")
        loader = WeightLoader(model=model, model_config=mr.model_config, mesh=mr.mesh, dtype=mr.model_config.dtype)
        params = nnx.state(model)
        for name, arr in named.items():
            mapping = mappings[name]
            if isinstance(mapping, (str, list)):
                mapping = WeightMapping(target_path=mapping)
            old = loader._get_param(params, mapping.target_path) if isinstance(mapping.target_path, str) else None
            old_shape = tuple(old.value.shape) if old is not None else None
            loader._process_and_assign_weight(params, name, jnp.asarray(arr), mapping)
            if old is not None and tuple(loader._get_param(params, mapping.target_path).value.shape) != old_shape:
                raise ValueError(f"update_weights: {name} has shape {tuple(arr.shape)}, not the loaded model's")
        nnx.update(model, params)
        if self.cfg.on("lm_head_model_dtype"):
            compat.fix_lm_head_dtype(model, mr.model_config.dtype)
        t_update = time.perf_counter() - t0
        how = self._refresh_jit_leaves(mr) if self.weight_swap == "leaves" else None
        if how is None:
            mr.initialize_jit()
            how = "rejit"
        if flush:
            compat.flush_cache(self.engine, self.cfg)
        self.weight_swaps += 1
        return {"tensors": len(named), "update_s": t_update, "total_s": time.perf_counter() - t0, "jit": how}

    @staticmethod
    def _refresh_jit_leaves(mr) -> str | None:
        """Point 0.0.2's jitted forward at the new state leaves without rebuilding it.

        initialize_jit() closes `run_model_wrapper` over the Python list of state leaves that it
        passes to the jitted function on every call (as arguments, not constants). Replacing that
        list's contents in place swaps the weights with no retrace and no recompile, provided the
        state's structure, shapes and dtypes are unchanged; otherwise None (caller re-jits)."""
        import jax
        from flax import nnx

        wrapper = mr.jitted_run_model
        names = getattr(getattr(wrapper, "__code__", None), "co_freevars", ())
        if "model_state_leaves" not in names or "model_state_def" not in names:
            return None
        cells = dict(zip(names, wrapper.__closure__))
        _, state = nnx.split(mr.model)
        leaves, treedef = jax.tree_util.tree_flatten(state)
        old = cells["model_state_leaves"].cell_contents
        if treedef != cells["model_state_def"].cell_contents or len(old) != len(leaves) or any(
                getattr(a, "shape", None) != getattr(b, "shape", None) or getattr(a, "dtype", None) != getattr(b, "dtype", None)
                for a, b in zip(old, leaves)):
            return None
        old[:] = leaves
        return "leaves"

    def shutdown(self) -> None:
        try:
            self.engine.shutdown()
        except Exception:
            pass


def _dtype_name(dtype: Any) -> str:
    try:
        import numpy as np

        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def _read_safetensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"update_weights: no *.safetensors in {path}")
    out: dict = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def _plain(obj: Any) -> Any:
    """Engine output -> picklable plain Python (numpy scalars become floats/ints)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "shape", None) == ():
        return obj.item()
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):
        return obj.tolist()
    return obj


# ============================================================================ the parent's proxy
_HDR = struct.Struct("!Q")


def send_msg(fh, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(_HDR.pack(len(data)) + data)
    fh.flush()


def recv_msg(fh) -> Any:
    hdr = fh.read(_HDR.size)
    if len(hdr) < _HDR.size:
        raise EOFError("engine process closed its pipe")
    (n,) = _HDR.unpack(hdr)
    data = fh.read(n)
    if len(data) < n:
        raise EOFError("engine process closed its pipe mid-message")
    return pickle.loads(data)


class EngineProcess:
    """A LocalEngine in a child process (`python -m harness.backends.sglang_jax.worker`)."""

    def __init__(self, model_path: str, engine_kwargs: dict | None = None, compat_off: list[str] | None = None,
                 weight_swap: str = "leaves", start_timeout: float = 600.0, call_timeout: float = 1800.0,
                 echo_stderr: bool | None = None):
        self.model_path = str(model_path)
        self.engine_kwargs = dict(engine_kwargs or {})
        self.compat_off = list(compat_off or [])
        self.call_timeout = call_timeout
        self.echo = bool(int(os.environ.get("PARITY_SGLANG_VERBOSE", "0"))) if echo_stderr is None else echo_stderr
        self._tail: collections.deque[str] = collections.deque(maxlen=60)
        self._lock = threading.Lock()
        env = dict(os.environ)
        if self.engine_kwargs.get("device", CPU_ENGINE_DEFAULTS["device"]) == "cpu":
            env.setdefault("JAX_PLATFORMS", "cpu")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.backends.sglang_jax.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            cwd=str(Path(__file__).resolve().parents[3]),
        )
        self._stderr_thread = threading.Thread(target=self._pump_stderr, daemon=True)
        self._stderr_thread.start()
        self.info_at_start = self._call("init", timeout=start_timeout, model_path=self.model_path,
                                        engine_kwargs=self.engine_kwargs, compat_off=self.compat_off,
                                        weight_swap=weight_swap)

    def _pump_stderr(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            for part in line.split("\r"):
                # not kept for the crash tail: XLA's error line per executable loaded from the persistent compile
                # cache, about LLVM tuning flags it takes for missing CPU features (openxla/xla#44565; it loads)
                if part.strip() and "cpu_aot_loader.cc" not in part:
                    self._tail.append(part)
            if self.echo:
                sys.stderr.write("[sglang-jax] " + line + "\n")

    def stderr_tail(self, n: int = 25) -> str:
        lines = [ln for ln in self._tail if "Warning" not in ln and "warnings.warn" not in ln]
        return "\n".join(lines[-n:])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _crashed(self, what: str) -> EngineCrashed:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._stderr_thread.join(timeout=2)
        how = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit status {rc}"
        if rc in (137, -9):
            how += ": sglang-jax kills its host process when the engine fails"
        cause = self.last_exception_line()
        return EngineCrashed(f"sglang-jax engine process died during {what} ({how})"
                             f"{': ' + cause if cause else ''}; last stderr lines:\n{self.stderr_tail()}")

    def last_exception_line(self) -> str:
        for line in reversed(self._tail):
            m = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)): (.*)", line)
            if m:
                return line[:500]
        return ""

    def _call(self, op: str, timeout: float | None = None, **kwargs) -> Any:
        with self._lock:
            if not self.alive:
                raise self._crashed(op)
            try:
                send_msg(self.proc.stdin, (op, kwargs))
            except (BrokenPipeError, OSError):
                raise self._crashed(op) from None
            box: dict = {}

            def reader():
                try:
                    box["msg"] = recv_msg(self.proc.stdout)
                except BaseException as e:  # noqa: BLE001
                    box["err"] = e

            t = threading.Thread(target=reader, daemon=True)
            t.start()
            t.join(timeout if timeout is not None else self.call_timeout)
            if t.is_alive():
                self.proc.kill()
                raise EngineCrashed(f"sglang-jax engine call {op!r} timed out after {timeout or self.call_timeout:.0f}s; "
                                    f"killed it. Last stderr lines:\n{self.stderr_tail()}")
            if "err" in box:
                raise self._crashed(op) from None
            status, payload = box["msg"]
            if status == "ok":
                return payload
            etype, msg, tb = payload
            raise EngineCallError(f"{etype} in sglang-jax engine ({op}): {msg}\n--- engine traceback ---\n{tb}")

    def __getattr__(self, op: str):
        if op.startswith("_"):
            raise AttributeError(op)
        return lambda **kw: self._call(op, **kw)

    def shutdown(self) -> None:
        if self.alive:
            try:
                with self._lock:
                    send_msg(self.proc.stdin, ("exit", {}))
                self.proc.wait(timeout=20)
            except Exception:
                self.proc.kill()
                self.proc.wait()
