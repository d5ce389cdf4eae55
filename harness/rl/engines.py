"""Rollout engines as tunix's RLCluster builds them, wrapped so every step can be measured.

`TrackedRollout` is the class handed to `ClusterConfig(rollout_engine=...)`
(as a functools.partial). RLCluster constructs it exactly as it constructs any
custom BaseRollout, `(rollout_actor=, tokenizer=, mesh=, rollout_config=)`, and
it builds the real engine inside with the same arguments:

  vanilla     tunix's VanillaRollout on its own copy of the actor's weights
              (a copy, not the trainer's module: otherwise RLCluster sees shared
              weights, skips sync_weights, and update_params is never exercised)
  sglang_jax  harness.backends.sglang_jax.rollout.SglangJaxRollout
  vllm        harness.backends.vllm_rollout.VllmRollout

The wrapper changes nothing the engine computes. Per `generate` call (one
training step) it
  - sets the step's sampling seed (tunix never advances RolloutConfig.seed) and
    return_logprobs=True,
  - scores the same tokens with the trainer (`RLCluster.get_actor_per_token_logps`,
    the anchor weights the engine should hold) and, optionally, with the
    engine's own `get_per_token_logps`,
  - records lengths, group diversity and timings.
`update_params` is forwarded (counted, timed) unless `stale_weights` is set: the
test hook for a rollout whose weight sync does nothing. `temperature_scale` != 1
is the other test hook: the engine is asked to sample at that multiple of the
configured temperature while the trainer keeps the configured one (a rollout
that applies temperature wrongly).

What the wrapper supplies, or guards, for engine classes (each is recorded as a run warning when it
triggers, and listed in docs/rl.md). The three items below were defects of both classes, found by the
RL runs and since fixed in the classes; the wrapper keeps its guards so an older or third-party rollout
is still measured correctly:
  - weights: RLCluster passes tunix-named, tunix-laid-out nnx state; sglang-jax and vLLM want
    HuggingFace names/layouts. The wrapper passes `harness.rl.weights.tunix_to_hf(state)`; both classes
    now also convert tunix Qwen3 names themselves (`looks_like_tunix`).
  - `model()`: must not be the trainer's own actor module, or RLCluster decides the weights are shared
    and never calls update_params. Both classes now return an nnx clone; the wrapper reports None if an
    engine returns the actor.
  - GRPO groups: RLCluster repeats each prompt num_generations times with one RolloutConfig.seed. An
    engine that seeds every request with that seed returns identical samples (zero advantage, no
    learning); both classes now derive a seed per prompt row. With `group_mode="n"` (default) the
    wrapper asks for n samples of each distinct prompt instead; a probe on the first step records
    whether the plain repeated-prompt call collapses (`repeat_probe_identical`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import time
import traceback
from typing import Any

import numpy as np

from harness.backends import registry
# tunix's BaseRollout where tunix is installed (the RL venvs), else the contract's one stand-in
from harness.backends.tunix_contract import BaseRollout
from harness.rl import task as task_lib
from harness.rl.metrics import step_metrics

#: engine -> its BaseRollout "module:Class" (harness.backends.registry); the baselines are built below
ENGINE_CLASSES = {name: e.rollout for name, e in registry.rl_engines().items() if e.rollout}


def load_class(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _copy_module(module):
    """A deep copy of an nnx module with fresh buffers (the trainer donates its own)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, state = nnx.split(module)
    return nnx.merge(graphdef, jax.tree.map(lambda x: jnp.array(x, copy=True), state))


def build_engine(engine: str, *, rollout_actor, tokenizer, mesh, rollout_config, engine_options: dict):
    """The real rollout engine, constructed the way RLCluster constructs a BaseRollout."""
    if engine == "vanilla":
        from tunix.rl.rollout import base_rollout, vanilla_rollout

        model = _copy_module(rollout_actor)
        cfg = model.config
        return vanilla_rollout.VanillaRollout(
            model, tokenizer,
            base_rollout.CacheConfig(cache_size=rollout_config.kv_cache_size, num_layers=cfg.num_layers,
                                     num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim),
        )
    if engine not in ENGINE_CLASSES:
        raise ValueError(f"unknown engine {engine!r}: choose vanilla or one of {sorted(ENGINE_CLASSES)}")
    cls = load_class(ENGINE_CLASSES[engine])
    kwargs: dict[str, Any] = dict(rollout_actor=rollout_actor, tokenizer=tokenizer, mesh=mesh,
                                  rollout_config=rollout_config)
    if engine_options:
        params = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
        for k, v in engine_options.items():
            if takes_any or k in params:
                kwargs[k] = v
    return cls(**kwargs)


def _pad_right(seqs: list[np.ndarray], length: int, pad: int) -> np.ndarray:
    out = np.full((len(seqs), length), pad, dtype=np.int32)
    for i, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int32)[:length]
        out[i, : len(s)] = s
    return out


class Tracker:
    """What the wrapper saw, per step: filled by TrackedRollout and the reward function."""

    def __init__(self, run_cfg):
        self.cfg = run_cfg
        self.steps: list[dict] = []
        self.reward_calls: list[dict] = []
        self.sync_calls = 0
        self.sync_skipped = 0
        self.sync_seconds = 0.0
        self.warnings: list[str] = []
        self.cluster = None  # set once RLCluster exists
        self.t0 = time.perf_counter()


def _runs(prompts: list[str]) -> list[tuple[str, int]]:
    """Consecutive runs of equal prompts: [a, a, b, b] -> [(a, 2), (b, 2)]."""
    out: list[tuple[str, int]] = []
    for p in prompts:
        if out and out[-1][0] == p:
            out[-1] = (p, out[-1][1] + 1)
        else:
            out.append((p, 1))
    return out


class TrackedRollout(BaseRollout):
    """A real engine behind tunix's BaseRollout, measured per step; see the module docstring."""

    def __init__(self, *, rollout_actor, tokenizer, mesh, rollout_config, engine: str, tracker: Tracker,
                 engine_options: dict | None = None, group_mode: str = "n"):
        self.engine_name = engine
        self.tracker = tracker
        self.group_mode = group_mode if engine != "vanilla" else "repeat"
        self._probed = False
        self._tokenizer = tokenizer
        t0 = time.perf_counter()
        self.inner = build_engine(engine, rollout_actor=rollout_actor, tokenizer=tokenizer, mesh=mesh,
                                  rollout_config=rollout_config, engine_options=engine_options or {})
        tracker.engine_init_seconds = time.perf_counter() - t0
        self.mesh = getattr(self.inner, "mesh", None)
        self._actor = rollout_actor
        self._model_is_trainer = False
        try:
            from tunix.rl import utils as rl_utils

            inner_model = self.inner.model()
            self._model_is_trainer = inner_model is not None and rl_utils.is_sharing_weights(inner_model,
                                                                                             rollout_actor)
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            tracker.warnings.append(f"{engine}.model() failed: {type(e).__name__}: {e}")
        if self._model_is_trainer:
            tracker.warnings.append(
                f"{engine}.model() returns the trainer's own weights: RLCluster would then skip sync_weights "
                "and update_params would never run; the wrapper reports model() as None so that it does")

    # ------------------------------------------------------------ BaseRollout
    def generate(self, prompts, rollout_config, **kwargs):
        cfg = self.tracker.cfg
        step = len(self.tracker.steps)
        rc = dataclasses.replace(rollout_config, seed=task_lib.rollout_seed(cfg.seed, step), return_logprobs=True)
        trainer_temperature = rc.temperature
        if cfg.temperature_scale != 1.0:  # the injected defect: the engine samples at another temperature
            rc = dataclasses.replace(rc, temperature=rc.temperature * cfg.temperature_scale)
        rec: dict[str, Any] = {"step": step, "syncs_before": self.tracker.sync_calls,
                               "skipped_syncs_before": self.tracker.sync_skipped, "n": len(prompts),
                               "t": time.perf_counter() - self.tracker.t0}
        if not self._probed and self.engine_name != "vanilla":
            self._probed = True
            self._probe_repeats(list(prompts), rc)
        t0 = time.perf_counter()
        runs = _runs(list(prompts))
        if self.group_mode == "n" and len(runs) < len(prompts) and len({n for _, n in runs}) == 1:
            out = self.inner.generate([p for p, _ in runs], rc, n=runs[0][1], **kwargs)
        else:
            out = self.inner.generate(prompts, rc, **kwargs)
        rec["generate_s"] = time.perf_counter() - t0
        rec["group_mode"] = self.group_mode
        try:
            self._measure(rec, list(prompts), out, rc, trainer_temperature)
        except Exception as e:  # noqa: BLE001 - a measurement failure must not stop training; it is recorded
            rec["measure_error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
        self.tracker.steps.append(rec)
        return out

    def get_per_token_logps(self, prompt_tokens, completion_tokens):
        return self.inner.get_per_token_logps(prompt_tokens, completion_tokens)

    def update_params(self, params, filter_types=None):
        self.tracker.sync_calls += 1
        if self.tracker.cfg.stale_weights:
            self.tracker.sync_skipped += 1
            return None
        import jax

        t0 = time.perf_counter()
        # tunix's sync_weights forbids every host<->device transfer on CPU backends
        # (transfer_guard "disallow_explicit"), which no engine outside JAX can honour when it
        # copies weights into its own memory: allow them for the engine's update only.
        with jax.transfer_guard("allow"):
            if self.engine_name == "vanilla":
                result = self.inner.update_params(params, filter_types)
            else:
                from harness.rl.weights import tunix_to_hf

                result = self.inner.update_params(tunix_to_hf(params))
        self.tracker.sync_seconds += time.perf_counter() - t0
        return result

    def pad_id(self) -> int:
        return self.inner.pad_id()

    def eos_id(self) -> int:
        return self.inner.eos_id()

    def model(self):
        return None if self._model_is_trainer else self.inner.model()

    # ------------------------------------------------------------ measuring
    def _probe_repeats(self, prompts: list[str], rc) -> None:
        """Does the plain tunix call (the same prompt twice, one seed) give two identical samples?"""
        try:
            out = self.inner.generate([prompts[0], prompts[0]], rc)
            a, b = (tuple(int(x) for x in np.asarray(t).reshape(-1)) for t in out.tokens[:2])
            self.tracker.repeat_probe_identical = a == b
            if a == b:
                self.tracker.warnings.append(
                    f"{self.engine_name}: generate([p, p], seed=s) returns two identical samples: with "
                    "RLCluster's repeated GRPO prompts every group would collapse (zero advantage); "
                    f"group_mode={self.group_mode!r}")
        except Exception as e:  # noqa: BLE001
            self.tracker.warnings.append(f"{self.engine_name}: repeat probe failed: {type(e).__name__}: {e}")

    def _unpadded_tokens(self, out) -> list[np.ndarray]:
        """RolloutOutput.tokens are documented unpadded; an engine that right-pads them to
        max_tokens (with pad_id) is trimmed back to its logprobs' length here."""
        pad = self.inner.pad_id()
        tokens = [np.asarray(t).reshape(-1) for t in out.tokens]
        if out.logprobs is None:
            return tokens
        fixed = []
        for t, lp in zip(tokens, out.logprobs):
            n = len(np.asarray(lp).reshape(-1))
            if len(t) > n and np.all(t[n:] == pad):
                t = t[:n]
                self.tracker.tokens_right_padded = True
            fixed.append(t)
        return fixed

    def _measure(self, rec: dict, prompts: list[str], out, rc, trainer_temperature: float) -> None:
        import jax.numpy as jnp

        tokens = self._unpadded_tokens(out)
        texts = list(out.text)
        rec["completion_len_mean"] = float(np.mean([len(t) for t in tokens])) if tokens else 0.0
        rec["truncated_frac"] = float(np.mean([len(t) >= rc.max_tokens_to_generate for t in tokens]))
        eos_ids = set(rc.eos_tokens or [self.inner.eos_id()])
        rec["eos_frac"] = float(np.mean([bool(len(t)) and int(t[-1]) in eos_ids for t in tokens])) if tokens else 0.0
        rec["lengths"] = [int(len(t)) for t in tokens]
        # GRPO repeats each prompt num_generations times in a row: identical samples within a group
        # give zero advantage (e.g. an engine that hands every request the same seed).
        groups: dict[str, list[tuple]] = {}
        for p, t in zip(prompts, tokens):
            groups.setdefault(p, []).append(tuple(int(x) for x in t))
        multi = [g for g in groups.values() if len(g) > 1]
        rec["identical_group_frac"] = (float(np.mean([len(set(g)) == 1 for g in multi])) if multi else None)
        rec["texts"] = texts[: min(4, len(texts))]

        pad, eos = self.inner.pad_id(), self.inner.eos_id()
        max_len = rc.max_tokens_to_generate
        prompt_ids = np.asarray(out.left_padded_prompt_tokens, dtype=np.int32)
        completion = _pad_right(tokens, max_len, pad)
        lengths = [min(len(t), max_len) for t in tokens]
        mask = completion != pad  # what GRPO/PPO train on
        # A sampled pad id inside a completion is masked out by tunix's trainers (mask = token != pad),
        # so every later token is scored without it: a real trainer/rollout mismatch of tunix's making.
        rec["pad_tokens_sampled"] = int(sum(int(np.sum(np.asarray(t[:n]) == pad)) for t, n in zip(tokens, lengths)))

        cluster = self.tracker.cluster
        trainer = None
        if cluster is not None:
            t0 = time.perf_counter()
            trainer = np.asarray(cluster.get_actor_per_token_logps(
                prompt_tokens=jnp.asarray(prompt_ids), completion_tokens=jnp.asarray(completion),
                pad_id=pad, eos_id=eos, temperature=trainer_temperature))
            rec["trainer_logps_s"] = time.perf_counter() - t0

        def per_seq(arr2d):
            return [arr2d[i, :n][mask[i, :n]] for i, n in enumerate(lengths)]

        if out.logprobs is not None and trainer is not None:
            rollout_lp = []
            bad = 0
            for i, (lp, n) in enumerate(zip(out.logprobs, lengths)):
                lp = np.asarray(lp, dtype=np.float64).reshape(-1)
                if len(lp) != len(tokens[i]):
                    bad += 1
                lp = lp[:n]
                row = np.full(n, np.nan)
                row[: len(lp)] = lp
                rollout_lp.append(row[mask[i, :n]])
            rec["logprob_len_mismatch"] = bad
            tr = per_seq(trainer)
            rec["sample"] = step_metrics(rollout_name=f"{self.engine_name} generate", rollout=rollout_lp,
                                         trainer_name="trainer", trainer=tr)
        elif out.logprobs is None:
            rec["sample"] = None
            rec["sample_missing"] = "generate returned logprobs=None with return_logprobs=True"
        if self.tracker.cfg.score_with_engine and trainer is not None:
            t0 = time.perf_counter()
            try:
                eng = np.asarray(self.inner.get_per_token_logps(jnp.asarray(prompt_ids), jnp.asarray(completion)),
                                 dtype=np.float64)
                rec["engine_logps_s"] = time.perf_counter() - t0
                rec["score"] = step_metrics(rollout_name=f"{self.engine_name} get_per_token_logps",
                                            rollout=per_seq(eng), trainer_name="trainer", trainer=per_seq(trainer))
            except Exception as e:  # noqa: BLE001
                rec["score"] = None
                rec["score_error"] = f"{type(e).__name__}: {e}"
