"""Runtime workarounds for sglang-jax 0.0.2 defects: one named function each, switchable one by one.

Stock sglang-jax 0.0.2 (the newest release on PyPI) cannot generate a token on
CPU, returns no logprobs, samples wrongly when seeded, and more (the measured
list, numbered, is the workaround table of docs/sglang_jax.md). Every workaround for
those defects lives here, and nowhere else:

- each is a `Workaround` in `REGISTRY`, named for the defect it covers, with
  the symptom you see when it is off and the harness check that catches it;
- each is applied only when the installed versions need it (`needed`);
- each can be switched off on its own, with the environment variable
  ``PARITY_SGLANG_COMPAT_OFF=name1,name2`` (or ``all``) or the runner option
  ``compat_off``, so that the harness can show every upstream defect, and so
  that a release that fixes one runs clean without it;
- nothing in site-packages is edited: env-phase workarounds set variables
  before flax is imported, patch-phase ones replace functions and methods of
  the imported modules (monkeypatching), host-phase ones are helpers the
  engine host calls instead of a broken Engine method, param-phase ones
  change what the rollout sends or how it reads the engine's answer.

`CompatConfig.describe()` is what the runner records in its session config.

The patch-phase code runs inside the engine process (worker.py) and is
written against sgl_jax 0.0.2's internals; keep this module import-light (no
jax/flax/sgl_jax at import time) because env-phase workarounds must run
before flax is first imported.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Iterable, Literal

ENV_OFF = "PARITY_SGLANG_COMPAT_OFF"
Phase = Literal["env", "patch", "host", "params"]


def _version_tuple(v: str | None) -> tuple[int, ...]:
    if not v:
        return ()
    out = []
    for part in v.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
        if digits != part:
            break
    return tuple(out)


def installed_versions() -> dict[str, str]:
    out = {}
    for dist in ("sglang-jax", "jax", "jaxlib", "flax", "transformers", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _sgl_at_most_002(v: dict[str, str]) -> bool:
    return _version_tuple(v.get("sglang-jax")) <= (0, 0, 2)


@dataclass(frozen=True)
class Workaround:
    name: str
    item: str  # the defect's number in docs/sglang_jax.md's workaround table
    defect: str
    symptom_off: str
    caught_by: str
    phase: Phase
    needed: Callable[[dict[str, str]], bool]
    fixed_upstream: str = ""


REGISTRY: dict[str, Workaround] = {w.name: w for w in [
    Workaround(
        "flax_always_shard_variable_off", "1",
        "flax > 0.12.0 wants an auto mesh context or sharding metadata for every nnx variable; 0.0.2 "
        "builds its model without one",
        "Engine start fails: 'An auto mesh context or metadata is required'",
        "test_compat_off[flax_always_shard_variable_off] (engine does not start; every case errors)",
        "env", lambda v: _sgl_at_most_002(v) and _version_tuple(v.get("flax")) > (0, 12, 0)),
    Workaround(
        "flax_pytree_module_off", "2",
        "0.0.2 registers nnx modules (NativeAttention, ...) as pytrees that flax >= 0.12 already registers",
        "import fails: 'Duplicate custom PyTreeDef type registration for NativeAttention'",
        "test_compat_off[flax_pytree_module_off] (engine does not import; every case errors)",
        "env", lambda v: _sgl_at_most_002(v) and _version_tuple(v.get("flax")) >= (0, 12, 0)),
    Workaround(
        "min_p_filter_arity", "3",
        "sampler._apply_min_p_filter unpacks 2 operands, the non-TPU caller passes 3",
        "every sampling call fails (greedy too: lax.cond traces both branches): "
        "'too many values to unpack'",
        "test_compat_off[min_p_filter_arity]; in a recording every generate case errors (greedy_tokens fails)",
        "patch", _sgl_at_most_002, "sglang-jax cdd6600a (2025-10-28)"),
    Workaround(
        "sampler_logprobs_escape_jit", "4",
        "the jitted sampler writes logprobs onto a Python object inside jit; they never leave it",
        "return_logprob=True crashes: 'NoneType' object has no attribute 'astype' / is not subscriptable",
        "test_compat_off[sampler_logprobs_escape_jit]; completion_logprobs (no records)",
        "patch", _sgl_at_most_002, "sglang-jax eced7f4e (2025-11-18)"),
    Workaround(
        "top_logprobs_on_device", "5",
        "top_logprobs_num > 0 / token_ids_logprob call .tolist() on tracers inside jit",
        "ConcretizationTypeError in prefill or decode whenever top logprobs or token-id logprobs are asked",
        "test_compat_off[top_logprobs_on_device]; every case errors (the runner asks for top logprobs)",
        "patch", _sgl_at_most_002),
    Workaround(
        "prefill_logprob_rows_padded", "6",
        "prefill is padded to max_running_requests rows but the logprob path emits logits rows only for real "
        "requests (and recompiles the model for every new set of prompt lengths: they are static pytree aux)",
        "AssertionError 'Temperature batch size 8 doesn't match logits batch size 2' on any logprob prefill "
        "smaller than max_running_requests",
        "test_compat_off[prefill_logprob_rows_padded]; every case errors",
        "patch", _sgl_at_most_002),
    Workaround(
        "lm_head_model_dtype", "7",
        "an untied lm_head is built with dtype bfloat16 whatever the model dtype: logits are computed in bf16",
        "logprobs off by ~1e-2 from the float64 reference (greedy usually still agrees)",
        "test_compat_off[lm_head_model_dtype]; prompt_logprobs / completion_logprobs (atol 1e-4)",
        "patch", _sgl_at_most_002),
    Workaround(
        "seeded_sampler_exact", "8",
        "the seeded sampler (enable_deterministic_sampling) softmaxes already-masked probabilities again and "
        "draws with a weak integer hash: near-uniform over the whole vocabulary, top-k/top-p ignored",
        "sampled tokens outside the top-k set; sampled-token logprobs of -10 and below",
        "test_compat_off[seeded_sampler_exact] (top_k=2 support); sampling_distribution",
        "patch", _sgl_at_most_002),
    Workaround(
        "unseeded_key_advances", "9",
        "unseeded sampling reuses one PRNG key, captured in the jitted sampler, for every step of every call",
        "repeated unseeded calls return identical 'samples'",
        "test_compat_off[unseeded_key_advances] (deterministic sampling off, two calls identical)",
        "patch", _sgl_at_most_002),
    Workaround(
        "top_p_renormalised", "18 (new)",
        "the CPU sampler measures top-p on the whole distribution (cumulative mass before top-k/min-p "
        "masking, no renormalisation) and applies min-p after it; vLLM, tunix and the canonical spec "
        "renormalise the top-k/min-p survivors first",
        "top-p combined with top-k or min-p keeps more tokens than asked (TV ~0.19 from the canonical "
        "distribution on the sampling suite's dist-topk-topp / dist-minp-topp)",
        "test_compat_off[top_p_renormalised]; sampling_distribution on dist-topk-topp, dist-minp-topp",
        "patch", _sgl_at_most_002),
    Workaround(
        "logit_bias_applied", "16 (new)",
        "SamplingParams validates logit_bias but no penalizer adds it to the logits",
        "logit_bias has no effect (a -100 bias on the greedy token leaves it the greedy token)",
        "test_compat_off[logit_bias_applied]; sampling_effects / sampling_mapping on fx-logit-bias",
        "patch", _sgl_at_most_002),
    Workaround(
        "repetition_penalty_applied", "17 (new)",
        "SamplingParams validates repetition_penalty but 0.0.2 has no repetition penalizer (frequency, presence "
        "and min_new_tokens have one)",
        "repetition_penalty has no effect",
        "test_compat_off[repetition_penalty_applied]; sampling_effects / sampling_mapping on fx-repetition-penalty",
        "patch", _sgl_at_most_002),
    Workaround(
        "flush_cache_direct", "15 (new)",
        "Engine.flush_cache() raises TypeError (FlushCacheReqInput() lacks its request_id) and the scheduler "
        "has no handler for it anyway",
        "every in-memory weight update fails after the swap, at the flush: the weight_update cases error",
        "test_compat_off[flush_cache_direct]; weight_update / greedy_tokens on update-b and update-back-a",
        "host", _sgl_at_most_002),
    Workaround(
        "keep_stop_token", "10",
        "output_ids drop the matched stop/EOS token (no_stop_trim=False) and special tokens "
        "(skip_special_tokens=True) by default; the harness convention (vLLM, tunix trainers) keeps them",
        "a completion that stops on EOS lacks it: fewer ids than logprobs (the rollout refuses the output)",
        "test_compat_off[keep_stop_token]; eos_policy / greedy_tokens on greedy-eos",
        "params", lambda v: True),
    Workaround(
        "prompt_id_echo_unclipped", "11",
        "input_token_logprobs report prompt token id vocab_size-1 as 0 (an off-by-one clip meant for "
        "multimodal hash ids)",
        "the engine echoes a different prompt than was sent; the rollout's echo check refuses it",
        "test_compat_off[prompt_id_echo_unclipped]; greedy-ids case (prompt has id 383 = vocab_size-1) errors",
        "patch", _sgl_at_most_002),
    Workaround(
        "n_as_seeded_requests", "13",
        "n > 1 sends n copies of a request that share one seed: identical samples",
        "n = 4 gives 4 identical completions",
        "test_compat_off[n_as_seeded_requests]; n_samples",
        "params", _sgl_at_most_002),
    Workaround(
        "stop_before_length", "19 (new)",
        "the scheduler tests max_new_tokens before the stop set: an EOS/stop token drawn as the last allowed "
        "token is reported as finish 'length' (vLLM, HF and tunix's trainers: 'stop'); the rollout reports "
        "'stop' when the last token is a stop id, or an EOS id without ignore_eos",
        "a completion ending in EOS exactly at max_tokens reads 'length' (a truncation-aware trainer treats it "
        "as cut off)",
        "test_compat_off_stop_before_length; eos_policy (sample-n4 on peaked models)",
        "host", _sgl_at_most_002),
    Workaround(
        "idle_scheduler_waits", "20 (new)",
        "the scheduler loop reads its sockets with zmq.NOBLOCK and loops again when there is nothing to run: "
        "an idle engine never blocks",
        "an idle engine keeps a core busy (its scheduler thread loops thousands of times a second), slowing "
        "whatever else runs: a second engine of the same run, the tests beside an engine a fixture keeps",
        "test_compat_off_idle_scheduler_waits (idle scheduler loops per second); no check (results unchanged)",
        "patch", _sgl_at_most_002),
]}

#: defects in the notes with no workaround here, and why
NOT_APPLICABLE = {
    "12": "HTTP /generate rejects batched input_ids: the rollout drives Engine.generate in-process, never HTTP",
    "14": "a failed Engine SIGKILLs its host and Engine.shutdown kills the caller's children: the engine always "
          "runs in its own worker process (worker.py); a crash is reported as an error, not fatal",
}


#: the workarounds without which 0.0.2 cannot start, sample or return logprobs on CPU at all: the "bare" engine of
#: `parity bench` keeps these and turns every other one off (harness/bench_worker.py)
TO_RUN = ("flax_always_shard_variable_off", "flax_pytree_module_off", "min_p_filter_arity",
          "sampler_logprobs_escape_jit", "top_logprobs_on_device", "prefill_logprob_rows_padded",
          "unseeded_key_advances")


class CompatError(ValueError):
    pass


@dataclass
class CompatConfig:
    """Which workarounds are on: needed by the installed versions and not switched off."""

    off: frozenset[str] = frozenset()
    versions: dict[str, str] = dataclasses.field(default_factory=installed_versions)

    @classmethod
    def from_env(cls, extra_off: Iterable[str] | str | None = None) -> "CompatConfig":
        names = parse_off(os.environ.get(ENV_OFF, "")) | parse_off(extra_off)
        return cls(off=frozenset(names))

    def needed(self, name: str) -> bool:
        return REGISTRY[name].needed(self.versions)

    def on(self, name: str) -> bool:
        if name not in REGISTRY:
            raise CompatError(f"unknown compat workaround {name!r}; known: {sorted(REGISTRY)}")
        return name not in self.off and self.needed(name)

    def state(self, name: str) -> str:
        if not self.needed(name):
            return "not needed"
        return "off" if name in self.off else "on"

    def active(self) -> list[str]:
        return [n for n in REGISTRY if self.on(n)]

    def describe(self) -> dict:
        return {
            "sglang_jax_version": self.versions.get("sglang-jax", "?"),
            "workarounds": {n: self.state(n) for n in REGISTRY},
            "switched_off": sorted(self.off),
            "not_applicable": NOT_APPLICABLE,
        }

    def to_wire(self) -> list[str]:
        return sorted(self.off)


def parse_off(value: Iterable[str] | str | None) -> set[str]:
    if not value:
        return set()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {x.strip() for x in items if x and x.strip()}
    if "all" in names:
        return set(REGISTRY)
    unknown = sorted(names - set(REGISTRY))
    if unknown:
        raise CompatError(f"{ENV_OFF}/compat_off: unknown workaround(s) {unknown}; known: {sorted(REGISTRY)} or 'all'")
    return names


# --------------------------------------------------------------------------------------------
# The configuration the patched functions consult (set once per engine process by apply_*).
_CFG: CompatConfig | None = None


def _on(name: str) -> bool:
    return _CFG is not None and _CFG.on(name)


# ============================================================================ env phase
def flax_always_shard_variable_off() -> None:
    """Item 1: flax > 0.12.0 shards every nnx variable by default; 0.0.2 builds models outside a mesh."""
    os.environ["FLAX_ALWAYS_SHARD_VARIABLE"] = "false"


def flax_pytree_module_off() -> None:
    """Item 2: stop flax registering nnx modules as pytrees, so 0.0.2's own registrations do not collide."""
    os.environ["FLAX_PYTREE_MODULE"] = "false"


def apply_env(cfg: CompatConfig) -> list[str]:
    """Run before flax/sgl_jax are imported (the worker does it first thing)."""
    global _CFG
    _CFG = cfg
    done = []
    for name, fn in (("flax_always_shard_variable_off", flax_always_shard_variable_off),
                     ("flax_pytree_module_off", flax_pytree_module_off)):
        if cfg.on(name):
            fn()
            done.append(name)
    return done


# ============================================================================ host phase
def flush_cache_direct(engine) -> None:
    """Item 15 (new): drop every cached prefix by resetting the scheduler's tree cache directly
    (single-process mode), since Engine.flush_cache() is broken in 0.0.2. Call it while idle."""
    sched = engine.scheduler_info["scheduler"]
    sched.tree_cache.reset()
    # and free what the tree held, as upstream's Scheduler.flush_cache does: resetting the tree alone leaks
    # every cached prefix's KV slots (no longer in the tree, never returned to the allocator). With the radix
    # cache on, the next large request then waits forever for KV space: the hang at update-b (cases 1-7 in
    # 17 s, then idle). With it off the tree holds nothing and the reset alone was enough.
    sched.req_to_token_pool.clear()
    sched.token_to_kv_pool_allocator.clear()


def flush_cache(engine, cfg: CompatConfig) -> None:
    if cfg.on("flush_cache_direct"):
        flush_cache_direct(engine)
    else:
        engine.flush_cache()


# ============================================================================ patch phase
def min_p_filter_arity() -> None:
    """Item 3: the non-TPU sampling path calls _apply_min_p_filter((probs, min_ps, False)); accept it."""
    from sgl_jax.srt.layers import sampler as S

    orig = S._apply_min_p_filter

    def _apply_min_p_filter(operands):
        return orig(tuple(operands)[:2])

    _apply_min_p_filter.__wrapped__ = orig
    S._apply_min_p_filter = _apply_min_p_filter


def seeded_sampler_exact() -> None:
    """Item 8: replace the seeded draw by an exact categorical draw keyed by (seed, position).

    0.0.2's multinomial_with_seed softmaxes its input again (which on the CPU path is already a
    masked, sorted probability vector: the masked zeros get weight 1/e) and uses an integer hash
    for noise. Here each row draws `jax.random.categorical(fold_in(PRNGKey(seed), position), logits)`:
    exact, reproducible across calls and batch positions, different at every position.
    """
    import jax
    import jax.numpy as jnp
    from sgl_jax.srt.layers import sampler as S
    from sgl_jax.srt.utils.jax_utils import is_tpu_runtime

    orig = S.multinomial_with_seed
    tpu = is_tpu_runtime()

    def multinomial_with_seed(operands):
        inputs, seed, positions, rng = operands
        if seed is None:
            return S.multinomial(operands)
        # TPU path: inputs are masked, temperature-scaled logits. CPU path: sorted masked probs.
        logits = inputs if tpu else jnp.log(inputs)

        def one(s, p, row):
            key = jax.random.fold_in(jax.random.PRNGKey(s), p)
            return jax.random.categorical(key, row)

        idx = jax.vmap(one)(seed.reshape(-1), positions.reshape(-1).astype(jnp.int32), logits)
        return idx.reshape(-1, 1)

    multinomial_with_seed.__wrapped__ = orig
    S.multinomial_with_seed = multinomial_with_seed


def top_p_renormalised() -> None:
    """Item 18: top-p over the renormalised top-k/min-p survivors (vLLM's and the canonical order).

    Replaces the non-TPU sampling function only (the TPU path masks logits with its own topp_mask and
    is not exercised here). Everything else is kept: the CPU sort, the masked sorted probabilities
    handed to the same (seeded or unseeded) multinomial, the index gather.
    """
    import jax
    import jax.numpy as jnp
    from sgl_jax.srt.layers import sampler as S

    orig = S.top_k_top_p_min_p_sampling_from_probs_jax_not_tpu_runtime

    def sample(args):
        _, probs, top_ks, top_ps, min_ps, positions, _temps, sampling_seeds, need_min_p, rng = args
        probs_idx = jax.pure_callback(S._get_sorted_indices_np, jnp.empty(probs.shape, dtype=jnp.int32), probs,
                                      vmap_method="legacy_vectorized")
        clean = jnp.nan_to_num(probs, nan=0.0, posinf=0.0, neginf=0.0)
        probs_sort = jnp.take_along_axis(clean, probs_idx, axis=-1)
        keep = jnp.arange(probs.shape[-1]).reshape(1, -1) < top_ks.reshape(-1, 1)
        # min-p through the engine's own filter (relative to column 0, the most likely token), so that
        # switching off min_p_filter_arity still shows defect no. 3 (min_p_filter_arity); top-k kept the top, so column 0 is the max
        kept = jax.lax.cond(need_min_p, S._apply_min_p_filter, lambda ops: ops[0],
                            (jnp.where(keep, probs_sort, 0.0), min_ps, False))
        keep &= kept > 0.0
        mass = jnp.maximum(kept.sum(axis=-1, keepdims=True), jnp.finfo(kept.dtype).tiny)
        before = (jnp.cumsum(kept, axis=-1) - kept) / mass  # renormalised mass strictly above the token
        top_p = top_ps.reshape(-1, 1)
        keep &= ~((before >= top_p) & (top_p < 1.0))
        probs_sort = jnp.where(keep, probs_sort, 0.0)
        operands = (probs_sort, sampling_seeds, positions, rng)
        sampled = jax.lax.cond(sampling_seeds is not None, S.multinomial_with_seed, S.multinomial, operands)
        return jnp.take_along_axis(probs_idx.astype(jnp.int32), axis=1, indices=sampled).flatten()

    sample.__wrapped__ = orig
    S.top_k_top_p_min_p_sampling_from_probs_jax_not_tpu_runtime = sample


def penalties_applied() -> None:
    """Items 16 and 17: logit_bias and repetition_penalty as penalizers of 0.0.2's own orchestrator.

    The orchestrator hands the sampler one host array per step (`linear_penalty`, added to the
    logits). logit_bias is additive and joins that sum. repetition_penalty is multiplicative on the
    raw logits (vLLM: divide positive, multiply negative, over prompt and output tokens), so while it
    is active the array carries a second half, the per-token factor ([bs, 2V]: additive | factor),
    and the sampler's _apply_linear_penalty applies the factor first, then the sum: the order of
    harness.processing.apply_penalties. Each penalizer is required only while its workaround is on.
    """
    import jax.numpy as jnp
    import numpy as np
    from sgl_jax.srt.layers import sampler as S
    from sgl_jax.srt.sampling.penaltylib import orchestrator as O

    class LogitBiasPenalizer(O._BatchedPenalizer):
        def __init__(self, orchestrator):
            self.orchestrator = orchestrator
            self._is_prepared = False

        def _is_required(self) -> bool:
            return _on("logit_bias_applied") and any(getattr(r.sampling_params, "logit_bias", None) for r in self.orchestrator.reqs())

        def _prepare(self):
            reqs = self.orchestrator.reqs()
            self.bias = np.zeros((len(reqs), self.orchestrator.vocab_size), np.float32)
            for i, r in enumerate(reqs):
                for tok, b in (r.sampling_params.logit_bias or {}).items():
                    self.bias[i, int(tok)] += float(b)

        def _cumulate_output_tokens(self, output_ids):
            pass

        def compute_penalty(self):
            return self.bias

        def _filter(self, keep_indices):
            self.bias = self.bias[keep_indices]

        def _merge(self, their):
            self.bias = np.concatenate([self.bias, their.bias], axis=0)

    class RepetitionPenalizer(O._BatchedPenalizer):
        def __init__(self, orchestrator):
            self.orchestrator = orchestrator
            self._is_prepared = False

        def _is_required(self) -> bool:
            return _on("repetition_penalty_applied") and any(
                getattr(r.sampling_params, "repetition_penalty", 1.0) != 1.0 for r in self.orchestrator.reqs())

        def _prepare(self):
            reqs = self.orchestrator.reqs()
            self.penalties = np.array([[r.sampling_params.repetition_penalty] for r in reqs], np.float32)
            self.seen = np.zeros((len(reqs), self.orchestrator.vocab_size), bool)
            for i, r in enumerate(reqs):
                ids = [t for t in list(r.origin_input_ids) + list(r.output_ids or []) if 0 <= t < self.seen.shape[1]]
                self.seen[i, ids] = True

        def _cumulate_output_tokens(self, output_ids):
            ids = np.asarray(output_ids).reshape(-1)
            self.seen[np.arange(len(ids)), ids] = True

        def factor(self):
            return np.where(self.seen, self.penalties, np.float32(1.0)).astype(np.float32)

        def _filter(self, keep_indices):
            self.penalties, self.seen = self.penalties[keep_indices], self.seen[keep_indices]

        def _merge(self, their):
            self.penalties = np.concatenate([self.penalties, their.penalties], axis=0)
            self.seen = np.concatenate([self.seen, their.seen], axis=0)

    orig_init, orig_apply = O.BatchedPenalizerOrchestrator.__init__, O.BatchedPenalizerOrchestrator.apply

    def __init__(self, vocab_size, batch, penalizers):
        orig_init(self, vocab_size, batch, set(penalizers) | {LogitBiasPenalizer, RepetitionPenalizer})

    def apply(self):
        rep = self.penalizers.get(RepetitionPenalizer)
        bias = self.penalizers.get(LogitBiasPenalizer)
        rep = rep if rep is not None and rep.is_prepared() else None
        bias = bias if bias is not None and bias.is_prepared() else None
        if rep is None and bias is None:
            return orig_apply(self)
        # orig_apply sums only the penalizers it knows; ours are not prepared while it runs
        hidden = [p for p in (rep, bias) if p is not None]
        for p in hidden:
            p._is_prepared = False
        try:
            additive = orig_apply(self)
        finally:
            for p in hidden:
                p._is_prepared = True
        n = len(self.reqs())
        additive = np.zeros((n, self.vocab_size), np.float32) if additive is None else np.array(additive, np.float32)
        if bias is not None:
            additive = additive + bias.compute_penalty()
        return additive if rep is None else np.concatenate([additive, rep.factor()], axis=1)

    orig_linear = S.Sampler._apply_linear_penalty

    def _apply_linear_penalty(self, operands):
        logits, sm = operands
        penalty = sm.linear_penalty
        if penalty is None or penalty.shape[-1] != 2 * logits.shape[-1]:
            return orig_linear(self, operands)
        v = logits.shape[-1]
        add, fac = penalty[:, :v].astype(logits.dtype), penalty[:, v:].astype(logits.dtype)
        fac = jnp.where(fac == 0, 1.0, fac)  # zero pad rows of a padded batch
        logits = jnp.where(fac != 1.0, jnp.where(logits > 0, logits / fac, logits * fac), logits)
        return logits + add

    for f, o in ((__init__, orig_init), (apply, orig_apply), (_apply_linear_penalty, orig_linear)):
        f.__wrapped__ = o
    O.BatchedPenalizerOrchestrator.__init__ = __init__
    O.BatchedPenalizerOrchestrator.apply = apply
    S.Sampler._apply_linear_penalty = _apply_linear_penalty


def lm_head_model_dtype() -> None:
    """Item 7: after loading, give an untied lm_head the model's dtype (it is built as bfloat16).

    The loader already stores the lm_head weights in the model dtype; only the module's compute
    dtype (an nnx static attribute, baked into the graph at initialize_jit) is wrong, so this
    runs between load_model and initialize_jit.
    """
    from sgl_jax.srt.model_executor.model_runner import ModelRunner

    orig = ModelRunner.load_model

    def load_model(self):
        orig(self)
        fix_lm_head_dtype(self.model, self.model_config.dtype)

    load_model.__wrapped__ = orig
    ModelRunner.load_model = load_model


def fix_lm_head_dtype(model, dtype) -> bool:
    head = getattr(model, "lm_head", None)
    if head is None or getattr(head, "dtype", None) is None or head.dtype == dtype:
        return False
    head.dtype = dtype
    value = head.embedding.value
    if value.dtype != dtype:
        head.embedding.value = value.astype(dtype)
    return True


def prompt_id_echo_unclipped() -> None:
    """Item 11: report prompt token ids as sent (0.0.2 clips id vocab_size-1, and above, to 0)."""
    from sgl_jax.srt.managers.scheduler import Scheduler

    orig = Scheduler.add_input_logprob_return_values

    def add_input_logprob_return_values(self, i, req, output, logprob_pt, num_input_logprobs, last_prefill_chunk):
        fresh = req.input_token_logprobs_idx is None
        orig(self, i, req, output, logprob_pt, num_input_logprobs, last_prefill_chunk)
        if last_prefill_chunk and fresh and req.input_token_logprobs_idx is not None:
            req.input_token_logprobs_idx = [int(x) for x in req.origin_input_ids[req.logprob_start_len:]]

    add_input_logprob_return_values.__wrapped__ = orig
    Scheduler.add_input_logprob_return_values = add_input_logprob_return_values


#: longest an idle scheduler waits for a request before its idle self-checks run again (idle_scheduler_waits)
IDLE_WAIT_MS = 100


def _idle(sched) -> bool:
    """Nothing to run and nothing that could become runnable without a request: the last loop ran no batch,
    nothing waits or runs, no prefill is cut in chunks."""
    return (sched.last_batch is None and not sched.waiting_queue and sched.chunked_req is None
            and sched.running_batch.is_empty())


def idle_scheduler_waits() -> None:
    """Item 20 (new): an idle scheduler waits on its two sockets (zmq poll, at most IDLE_WAIT_MS) before it
    reads them, instead of looping again at once. A request or RPC wakes it as soon as it arrives; what the
    loop does when idle (memory and tree-cache self-checks) still runs every IDLE_WAIT_MS; a busy scheduler
    never waits."""
    import zmq
    from sgl_jax.srt.managers.scheduler import Scheduler

    orig = Scheduler.recv_requests

    def recv_requests(self):
        if _on("idle_scheduler_waits") and self.node_rank == 0 and _idle(self):
            poller = self.__dict__.get("_parity_poller")
            if poller is None:
                poller = zmq.Poller()
                for sock in (self.recv_from_tokenizer, self.recv_from_rpc):
                    if sock is not None:
                        poller.register(sock, zmq.POLLIN)
                self._parity_poller = poller
            poller.poll(IDLE_WAIT_MS)
        return orig(self)

    recv_requests.__wrapped__ = orig
    Scheduler.recv_requests = recv_requests


# ---------------------------------------------------------------- logprobs inside the jitted step
# Items 4, 5, 6 and 9 share the sampler and the logits processor. The code below replaces
# Sampler.__call__, ModelRunner.sample, ModelRunner._forward and LogitsProcessor.__call__; each
# replacement consults _on(name) so that each workaround can still be switched off alone (its
# original code path then runs, and fails the way 0.0.2 fails).

def _bucket(k: int) -> int:
    """Static sizes for top-k / token-id gathers, so that few shapes compile."""
    if k <= 0:
        return 0
    for b in (1, 2, 5, 10, 20):
        if k <= b:
            return b
    return 1 << (k - 1).bit_length()


def install_logprob_path() -> None:
    """Items 4 (logprobs lost inside jit), 5 (top logprobs .tolist() on tracers), 6 (prefill rows vs
    padding) and 9 (frozen PRNG key): logprob selection on device, inside the jitted steps.

    - Sampler.__call__ returns (next_token_ids, extras) where extras hold, for the padded batch,
      the chosen token's logprob, the top-k logprobs and the requested token-id logprobs: only
      [batch], [batch, k] and [batch, m] arrays leave the device, never [batch, vocab].
    - ModelRunner.sample passes a fresh PRNG key per step (defect no. 9) and static k/m buckets, and
      writes the extras where the scheduler reads them.
    - ModelRunner._forward swaps, for a prefill that returns logprobs, 0.0.2's LogitsMetadata
      (whose per-request lengths are static pytree aux: a recompile per prompt-length mix) for
      `PaddedLogprobMetadata`, whose index arrays have the padded token count as their shape;
      LogitsProcessor.__call__ then emits sampling rows for every padded request (defect no. 6) and the
      input logprobs, top-k and token-id logprobs of the pruned rows, on device.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax
    from sgl_jax.srt.layers import logits_processor as LP
    from sgl_jax.srt.layers import sampler as S
    from sgl_jax.srt.model_executor.model_runner import ModelRunner

    LogitsProcessorOutput = LP.LogitsProcessorOutput

    @jax.tree_util.register_pytree_node_class
    class ParityLogitsOutput(LogitsProcessorOutput):
        """LogitsProcessorOutput plus device arrays (`parity_extras`) that 0.0.2 would keep in aux."""

        def tree_flatten(self):
            children, aux = LogitsProcessorOutput.tree_flatten(self)
            return (children, getattr(self, "parity_extras", None)), aux

        @classmethod
        def tree_unflatten(cls, aux, children):
            base, extras = children
            obj = LogitsProcessorOutput.tree_unflatten.__func__(cls, aux, base)
            obj.parity_extras = extras
            return obj

    @jax.tree_util.register_pytree_node_class
    class PaddedLogprobMetadata:
        """Prefill logprob metadata whose only static parts are the mode, k and m."""

        def __init__(self, forward_mode, capture_hidden_mode, pruned_rows, row_tokens, sample_rows,
                     tokid=None, top_k=0):
            self.forward_mode = forward_mode
            self.capture_hidden_mode = capture_hidden_mode
            self.pruned_rows = pruned_rows  # [T] hidden row of each pruned position (padding: 0)
            self.row_tokens = row_tokens  # [T] the token each pruned row scores (0 after a request's end)
            self.sample_rows = sample_rows  # [padded_bs] last row of each request (padding: 0)
            self.tokid = tokid  # [T, m] requested token ids per pruned row, or None
            self.top_k = top_k

        def tree_flatten(self):
            return ((self.pruned_rows, self.row_tokens, self.sample_rows, self.tokid),
                    (self.forward_mode, self.capture_hidden_mode, self.top_k))

        @classmethod
        def tree_unflatten(cls, aux, children):
            return cls(aux[0], aux[1], *children, top_k=aux[2])

    # ------------------------------------------------------------ logits processor
    orig_lp_call = LP.LogitsProcessor.__call__

    def lp_call(self, hidden_states, lm_head, logits_metadata):
        if not isinstance(logits_metadata, PaddedLogprobMetadata):
            return orig_lp_call(self, hidden_states, lm_head, logits_metadata)
        m = logits_metadata
        logits = self._get_logits(hidden_states, lm_head)  # [T, V]
        sampled = logits[m.sample_rows]  # [padded_bs, V]
        lp = jax.nn.log_softmax(logits[m.pruned_rows].astype(jnp.float32), axis=-1)  # [T, V]
        extras = {"input_token_logprobs": jnp.take_along_axis(lp, m.row_tokens[:, None], axis=1)[:, 0]}
        if m.top_k > 0:
            # the bucket may exceed the vocabulary (a whole-distribution request): the shape is static here
            extras["in_top_val"], extras["in_top_idx"] = lax.top_k(lp, min(m.top_k, lp.shape[-1]))
        if m.tokid is not None:
            extras["in_tokid_val"] = jnp.take_along_axis(lp, m.tokid, axis=1)
        out = ParityLogitsOutput(next_token_logits=sampled, input_token_logprobs=extras["input_token_logprobs"])
        out.parity_extras = extras
        return out

    lp_call.__wrapped__ = orig_lp_call
    LP.LogitsProcessor.__call__ = lp_call

    # ------------------------------------------------------------ model runner forward
    orig_forward = ModelRunner._forward

    def _forward(self, forward_batch, logits_metadata):
        lm = logits_metadata
        use = (
            _on("prefill_logprob_rows_padded")
            and isinstance(lm, LP.LogitsMetadata)
            and lm.forward_mode.is_extend()
            and lm.extend_return_logprob
            and (_on("top_logprobs_on_device") or not (lm.extend_return_top_logprob or lm.extend_token_ids_logprob))
        )
        if not use:
            return orig_forward(self, forward_batch, logits_metadata)
        meta, host = _build_padded_metadata(lm, int(forward_batch.input_ids.shape[0]))
        output, cache_miss_count = orig_forward(self, forward_batch, meta)
        _attach_prefill_extras(output, host)
        return output, cache_miss_count

    _forward.__wrapped__ = orig_forward
    ModelRunner._forward = _forward

    def _build_padded_metadata(lm, num_tokens: int):
        seq_lens = [int(x) for x in lm.extend_seq_lens_cpu]
        starts = [int(x) for x in lm.extend_logprob_start_lens_cpu]
        tok_ids = np.asarray(lm.extend_input_logprob_token_ids_device)  # pruned order, one per pruned row
        pruned_rows = np.zeros(num_tokens, np.int32)
        row_tokens = np.zeros(num_tokens, np.int32)
        sample_rows = np.zeros(len(seq_lens), np.int32)
        pruned_lens = []
        pt = 0  # hidden row offset
        qt = 0  # pruned row offset
        for q, (n, s) in enumerate(zip(seq_lens, starts)):
            if n == 0:  # bs padding
                pruned_lens.append(0)
                continue
            k = max(n - s, 0)
            pruned_rows[qt:qt + k] = np.arange(pt + s, pt + s + k)
            row_tokens[qt:qt + k] = tok_ids[qt:qt + k]
            sample_rows[q] = pt + n - 1
            pruned_lens.append(k)
            pt += n
            qt += k
        real = [n for n in seq_lens if n > 0]
        top_nums = list(lm.top_logprobs_nums or [0] * len(real))
        top_k = min(_bucket(max(top_nums, default=0)), 1 << 30) if lm.extend_return_top_logprob else 0
        tokid = None
        token_ids = list(lm.token_ids_logprobs or [None] * len(real))
        if lm.extend_token_ids_logprob:
            width = _bucket(max((len(t) for t in token_ids if t), default=1))
            tokid = np.zeros((num_tokens, width), np.int32)
            r = 0
            for ids, k in zip(token_ids, pruned_lens):
                if ids:
                    tokid[r:r + k, :len(ids)] = ids
                r += k
        meta = PaddedLogprobMetadata(
            lm.forward_mode, lm.capture_hidden_mode, jnp.asarray(pruned_rows), jnp.asarray(row_tokens),
            jnp.asarray(sample_rows), None if tokid is None else jnp.asarray(tokid), top_k)
        return meta, {"pruned_lens": pruned_lens, "top_nums": top_nums, "token_ids": token_ids,
                      "top": lm.extend_return_top_logprob, "tokids": lm.extend_token_ids_logprob}

    def _attach_prefill_extras(output, host) -> None:
        extras = getattr(output, "parity_extras", None) or {}
        if host["top"]:
            vals = np.asarray(jax.device_get(extras["in_top_val"])).tolist()
            idx = np.asarray(jax.device_get(extras["in_top_idx"])).tolist()
            ov, oi, pt = [], [], 0
            for k, n in zip(host["top_nums"], host["pruned_lens"]):
                if n <= 0:
                    ov.append([])
                    oi.append([])
                    continue
                ov.append([vals[pt + j][:k] for j in range(n)])
                oi.append([idx[pt + j][:k] for j in range(n)])
                pt += n
            output.input_top_logprobs_val, output.input_top_logprobs_idx = ov, oi
        if host["tokids"]:
            vals = np.asarray(jax.device_get(extras["in_tokid_val"])).tolist()
            ov, oi, pt = [], [], 0
            for ids, n in zip(host["token_ids"], host["pruned_lens"]):
                if n <= 0:
                    ov.append([])
                    oi.append([])
                    continue
                m = len(ids or [])
                ov.append([vals[pt + j][:m] for j in range(n)])
                oi.append([list(ids or []) for _ in range(n)])
                pt += n
            output.input_token_ids_logprobs_val, output.input_token_ids_logprobs_idx = ov, oi

    # ------------------------------------------------------------ sampler
    orig_sampler_call = S.Sampler.__call__

    def sampler_call(self, logits_output, sampling_metadata, positions, rng=None, k_shape=None, tokid=None):
        sm = sampling_metadata
        logits = jnp.reshape(logits_output.next_token_logits, (-1, logits_output.next_token_logits.shape[-1]))
        logits = self.apply_penalties(logits, sm)
        if rng is None:
            _, rng = jax.random.split(self.rngs.params())
        ids, logprobs = lax.cond(sm.is_all_greedy, self._greedy_sampling, self._regular_sampling,
                                 (logits, sm, positions, rng))
        if not _on("sampler_logprobs_escape_jit"):
            # 0.0.2: the results are written onto logits_output inside jit and lost
            lax.cond(sm.return_logprob, self._process_logprob_results, lambda o: None,
                     (logits_output, sm, ids, logprobs))
            return ids
        extras = {}
        if sm.return_logprob:
            extras["chosen"] = jnp.take_along_axis(logprobs, ids.reshape(-1, 1).astype(jnp.int32), axis=1)[:, 0]
            if _on("top_logprobs_on_device"):
                if k_shape is not None:
                    extras["top_val"], extras["top_idx"] = lax.top_k(logprobs, k_shape.shape[0])
                if tokid is not None:
                    extras["tokid_val"] = jnp.take_along_axis(logprobs, tokid, axis=1)
            else:  # 0.0.2's host-side helpers, called on tracers
                if sm.top_logprobs_nums is not None and any(x > 0 for x in sm.top_logprobs_nums):
                    S.get_top_logprobs(logprobs, sm.top_logprobs_nums)
                if sm.token_ids_logprobs is not None and any(x is not None for x in sm.token_ids_logprobs):
                    S.get_token_ids_logprobs(logprobs, sm.token_ids_logprobs)
        return ids, extras

    sampler_call.__wrapped__ = orig_sampler_call
    S.Sampler.__call__ = sampler_call

    # ------------------------------------------------------------ model runner sample
    orig_sample = ModelRunner.sample

    def sample(self, logits_output, sampling_metadata, positions):
        rng = None
        if _on("unseeded_key_advances"):
            step = getattr(self, "_parity_sample_step", 0) + 1
            self._parity_sample_step = step
            seed = int(self.server_args.random_seed or 0) & 0xFFFFFFFF
            rng = jnp.asarray(np.array([seed, step & 0xFFFFFFFF], dtype=np.uint32))
        if not _on("sampler_logprobs_escape_jit"):
            return self.jitted_sampler(logits_output, sampling_metadata, positions, rng)
        sm = sampling_metadata
        bare = LogitsProcessorOutput(next_token_logits=logits_output.next_token_logits)
        top_nums = list(sm.top_logprobs_nums or [])
        token_ids = list(sm.token_ids_logprobs or [])
        k_shape = tokid = None
        if sm.return_logprob and _on("top_logprobs_on_device"):
            vocab = int(logits_output.next_token_logits.shape[-1])
            k = min(_bucket(max(top_nums, default=0)), vocab)
            k_shape = np.zeros((k,), np.int8) if k > 0 else None
            if any(t for t in token_ids):
                width = _bucket(max(len(t) for t in token_ids if t))
                rows = int(logits_output.next_token_logits.shape[0])
                tok = np.zeros((rows, width), np.int32)
                for i, t in enumerate(token_ids):
                    if t:
                        tok[i, :len(t)] = t
                tokid = jnp.asarray(tok)
            sm = dataclasses.replace(sm, top_logprobs_nums=None, token_ids_logprobs=None)
        ids, extras = self.jitted_sampler(bare, sm, positions, rng, k_shape, tokid)
        if sampling_metadata.return_logprob:
            logits_output.next_token_logprobs = extras["chosen"]
            if "top_val" in extras:
                vals = np.asarray(jax.device_get(extras["top_val"])).tolist()
                idx = np.asarray(jax.device_get(extras["top_idx"])).tolist()
                n = len(top_nums)
                logits_output.next_token_top_logprobs_val = [vals[i][:top_nums[i]] for i in range(n)]
                logits_output.next_token_top_logprobs_idx = [idx[i][:top_nums[i]] for i in range(n)]
            if "tokid_val" in extras:
                vals = np.asarray(jax.device_get(extras["tokid_val"])).tolist()
                logits_output.next_token_token_ids_logprobs_val = [
                    vals[i][:len(t)] if t else [] for i, t in enumerate(token_ids)]
                logits_output.next_token_token_ids_logprobs_idx = [list(t) if t else [] for t in token_ids]
        return ids

    sample.__wrapped__ = orig_sample
    ModelRunner.sample = sample


_PATCHES: list[tuple[tuple[str, ...], Callable[[], None]]] = [
    (("min_p_filter_arity",), min_p_filter_arity),
    (("seeded_sampler_exact",), seeded_sampler_exact),
    (("top_p_renormalised",), top_p_renormalised),
    (("logit_bias_applied", "repetition_penalty_applied"), penalties_applied),
    (("lm_head_model_dtype",), lm_head_model_dtype),
    (("prompt_id_echo_unclipped",), prompt_id_echo_unclipped),
    (("idle_scheduler_waits",), idle_scheduler_waits),
    (("sampler_logprobs_escape_jit", "top_logprobs_on_device", "prefill_logprob_rows_padded",
      "unseeded_key_advances"), install_logprob_path),
]


def apply_patches(cfg: CompatConfig) -> list[str]:
    """Install the patch-phase workarounds that are on (idempotent per process)."""
    global _CFG
    _CFG = cfg
    applied = []
    for names, fn in _PATCHES:
        if any(cfg.on(n) for n in names) and not getattr(fn, "_parity_done", False):
            fn()
            fn._parity_done = True  # type: ignore[attr-defined]
        applied += [n for n in names if cfg.on(n)]
    return applied
