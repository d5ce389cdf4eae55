"""Where an engine call's time goes, step by step (`parity bench` attribution; never on in a parity run).

Wraps, in the engine's own process, three layers of each engine:

- the step: one scheduler iteration that runs the model (sglang-jax `Scheduler.run_batch`, vLLM
  `EngineCore.step`): host work (batch building, metadata, output bookkeeping) plus the next two;
- the forward: the jitted model call alone, blocked until its result is ready (sglang-jax
  `ModelRunner._forward`, vLLM `GPUModelRunner.execute_model`, which CPUModelRunner inherits);
- the sample: the jitted sampler alone, blocked likewise (sglang-jax `ModelRunner.sample`, vLLM
  `GPUModelRunner.sample_tokens`).

Steps are split into `decode` (one new token per request) and `prefill` (anything else). What a
call spends outside its steps (the scheduler loop, tokenizer/detokenizer hand-offs, waiting for the
GIL or a core) is its wall time minus the steps' sum, computed by `breakdown`. Blocking on the
forward's result adds no wait on CPU: the step blocks on the sampled ids right after it anyway.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable

KINDS = ("step", "forward", "sample")
_lock = threading.Lock()
_stats: dict[str, dict[str, float]] = {}
_mode = threading.local()
_installed: set[str] = set()


def _add(mode: str, kind: str, dt: float) -> None:
    with _lock:
        s = _stats.setdefault(mode, {"steps": 0, "step_s": 0.0, "forward_s": 0.0, "sample_s": 0.0})
        s[f"{kind}_s"] += dt
        if kind == "step":
            s["steps"] += 1


def take() -> dict[str, dict[str, float]]:
    """The sums since the last take() (by mode: steps, step_s, forward_s, sample_s), and reset."""
    global _stats
    with _lock:
        out, _stats = _stats, {}
    return out


def wrap(cls: type, name: str, kind: str, mode_of: Callable[..., str] | None = None,
         block: Callable[[Any], None] | None = None) -> None:
    """Time `cls.name` as `kind` ("step", "forward" or "sample"). A step's mode comes from `mode_of(*args)`; the
    forward and sample inside it are counted under that mode. `block(result)` waits for an async result."""
    key = f"{cls.__module__}.{cls.__qualname__}.{name}"
    if key in _installed:
        return
    orig = getattr(cls, name)

    @functools.wraps(orig)
    def timed(self, *args, **kwargs):
        if kind == "step":
            _mode.value = mode_of(self, *args, **kwargs) if mode_of else "step"
        t = time.perf_counter()
        out = orig(self, *args, **kwargs)
        if block is not None:
            block(out)
        _add(getattr(_mode, "value", "unknown"), kind, time.perf_counter() - t)
        return out

    setattr(cls, name, timed)
    _installed.add(key)


def breakdown(call_s: list[float], stats: list[dict[str, dict[str, float]]]) -> dict:
    """Per call (its wall time and take() after it) -> medians over the calls, so that one call slowed by the
    machine moves no figure: per step of each mode {steps_per_call, step_ms, forward_ms, sample_ms, host_ms},
    outside_steps_s (wall - the sum of the steps), and shares (device = forward + sample, host = the rest of the
    steps, outside) of the median call's wall time."""
    import statistics

    if not call_s or len(call_s) != len(stats):
        raise ValueError(f"{len(call_s)} call times for {len(stats)} step records")
    med = statistics.median
    out: dict[str, Any] = {"calls": len(call_s), "call_s": med(call_s)}
    outside = [wall - sum(m["step_s"] for m in st.values()) for wall, st in zip(call_s, stats)]
    out["outside_steps_s"] = med(outside)
    for mode in ("decode", "prefill"):
        per = [st[mode] for st in stats if mode in st and st[mode]["steps"]]
        if not per:
            out[mode] = None
            continue
        ms = {k: med([1000.0 * p[f"{k}_s"] / p["steps"] for p in per]) for k in ("step", "forward", "sample")}
        out[mode] = {"steps_per_call": med([p["steps"] for p in per]), "step_ms": ms["step"],
                     "forward_ms": ms["forward"], "sample_ms": ms["sample"],
                     "host_ms": med([1000.0 * (p["step_s"] - p["forward_s"] - p["sample_s"]) / p["steps"]
                                     for p in per])}
    i = sorted(range(len(call_s)), key=call_s.__getitem__)[(len(call_s) - 1) // 2]  # the median call
    wall, st = call_s[i], stats[i]
    device = sum(m["forward_s"] + m["sample_s"] for m in st.values())
    steps = sum(m["step_s"] for m in st.values())
    out["shares"] = ({"device": device / wall, "host": (steps - device) / wall, "outside": (wall - steps) / wall}
                     if wall > 0 else None)
    return out


# ---------------------------------------------------------------- engines
def _block_tree(x: Any) -> None:
    import jax

    leaves = jax.tree_util.tree_leaves(vars(x) if hasattr(x, "__dict__") and not hasattr(x, "block_until_ready")
                                       else x)
    for leaf in leaves:
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
        elif hasattr(leaf, "__dict__"):
            _block_tree(leaf)


def install_sglang_jax() -> None:
    """In the sglang-jax engine process, after the Engine exists (its classes are imported)."""
    from sgl_jax.srt.managers.scheduler import Scheduler
    from sgl_jax.srt.model_executor.model_runner import ModelRunner

    wrap(Scheduler, "run_batch", "step",
         mode_of=lambda self, batch: "decode" if batch.forward_mode.is_decode() else "prefill")
    wrap(ModelRunner, "_forward", "forward", block=_block_tree)
    wrap(ModelRunner, "sample", "sample", block=_block_tree)


def install_vllm(core: Any = None) -> None:
    """In the vLLM process (in-process engine core), after the LLM exists; `core` is its EngineCore, whose
    step_fn was bound to the unwrapped step when it was built."""
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    def mode_of_forward(scheduler_output) -> str:  # decode: every scheduled request gets one token
        n = getattr(scheduler_output, "num_scheduled_tokens", None) or {}
        return "decode" if n and scheduler_output.total_num_scheduled_tokens == len(n) else "prefill"

    orig_exec = GPUModelRunner.execute_model

    @functools.wraps(orig_exec)
    def execute_model(self, scheduler_output, *args, **kwargs):
        _mode.value = mode_of_forward(scheduler_output)
        return orig_exec(self, scheduler_output, *args, **kwargs)

    if "vllm.execute_model.mode" not in _installed:
        GPUModelRunner.execute_model = execute_model
        _installed.add("vllm.execute_model.mode")
    wrap(GPUModelRunner, "execute_model", "forward")
    wrap(GPUModelRunner, "sample_tokens", "sample")
    orig_step = EngineCore.step
    _wrap_vllm_step(EngineCore)
    fn = getattr(core, "step_fn", None)
    if fn is not None and getattr(fn, "__func__", None) is orig_step:
        import types

        core.step_fn = types.MethodType(EngineCore.step, core)


def _wrap_vllm_step(cls: type) -> None:
    """EngineCore.step: its mode is known only once its forward ran (set there), so it is read after the call."""
    key = "vllm.EngineCore.step"
    if key in _installed:
        return
    orig = cls.step

    @functools.wraps(orig)
    def step(self, *args, **kwargs):
        _mode.value = None
        t = time.perf_counter()
        out = orig(self, *args, **kwargs)
        if _mode.value is not None:  # no model run: nothing scheduled
            _add(_mode.value, "step", time.perf_counter() - t)
        return out

    cls.step = step
    _installed.add(key)
