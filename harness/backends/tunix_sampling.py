"""tunix's RolloutConfig as a sampling surface: the conventions in which it differs from the canonical spec.

Shared by every tunix rollout (this project's and tunix's own); what it lacks is carried, or not, as the
rollout engine's dialect says (`SamplingDialect.tunix_extras`). harness.sampling.mapping.to_tunix /
from_tunix generate the mapping from the table's tunix column.

- greedy: T = 0 with top_p None (top_p 1.0 at T 0 divides by zero in tunix's vanilla sampler).
- top_k: None means *unset* (the model's generation_config decides): the rollout engine's explicit off is sent.
- stop_token_ids -> eos_tokens (not sent when empty); top_logprobs k -> return_logprobs = k > 0 (a bool: read
  back as the spec's default k).
"""

from __future__ import annotations

from harness.sampling.mapping import OMIT, SamplingDialect
from harness.spec import SamplingSpec


def tunix_fields() -> dict | None:
    """The fields of `tunix.rl.rollout.base_rollout.RolloutConfig` (a dataclass)."""
    import dataclasses

    from harness.sampling.introspect import plain, version

    dist = version("google-tunix")
    if dist is None:
        return None
    from tunix.rl.rollout.base_rollout import RolloutConfig

    fields = {}
    for f in dataclasses.fields(RolloutConfig):
        if f.default is not dataclasses.MISSING:
            fields[f.name] = plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            fields[f.name] = plain(f.default_factory())  # type: ignore[misc]
        else:
            fields[f.name] = "<required>"
    return {"engine": "tunix", "distribution": dist[0], "version": dist[1],
            "class": "tunix.rl.rollout.base_rollout.RolloutConfig", "fields": fields}


TUNIX = SamplingDialect(
    column="tunix", label="tunix",
    to={"top_p": lambda v, s: None if s.greedy else v,  # greedy: tunix's vanilla sampler needs top_p None at T = 0
        "stop_token_ids": lambda v, s: list(v) if v else OMIT,
        "top_logprobs": lambda v, s: v > 0},
    back={"top_p": lambda v: 1.0 if v is None else float(v),
          "top_k": lambda v: None if v is None or int(v) in (0, -1) else int(v),
          "seed": lambda v: v,
          "top_logprobs": lambda v: SamplingSpec.model_fields["top_logprobs"].default if v else 0},
    introspect=tunix_fields,
    not_sampling={f: "engine/deployment setting" for f in (
        "kv_cache_size", "data_type", "rollout_mapping_config", "tensor_parallel_size", "data_parallel_size",
        "expert_parallel_size", "rollout_vllm_server_mode", "rollout_vllm_model_version", "rollout_vllm_lora_config",
        "rollout_vllm_hbm_utilization", "rollout_vllm_init_with_random_weights", "rollout_vllm_tpu_backend_type",
        "rollout_vllm_async_scheduling", "rollout_vllm_hf_config_path", "rollout_vllm_additional_config",
        "rollout_vllm_enable_dp_attention", "rollout_vllm_delete_dst_buffers", "rollout_vllm_max_num_batched_tokens",
        "rollout_vllm_max_num_seqs", "rollout_vllm_reshard_chunk_size", "rollout_vllm_kwargs",
        "rollout_sglang_jax_model_version", "rollout_sglang_jax_context_length",
        "rollout_sglang_jax_mem_fraction_static", "rollout_sglang_jax_init_with_random_weights",
        "rollout_sglang_jax_disable_radix_cache", "rollout_sglang_jax_enable_static_lora",
        "rollout_sglang_jax_enable_single_process", "rollout_sglang_jax_lora_target_modules",
        "rollout_sglang_jax_max_lora_rank", "rollout_sglang_jax_lora_scaling",
        "rollout_sglang_jax_precompile_bs_paddings", "rollout_sglang_jax_precompile_token_paddings",
        "rollout_sglang_jax_chunked_prefill_size", "rollout_sglang_jax_page_size", "rollout_sglang_jax_load_format",
        "rollout_sglang_jax_max_running_requests", "rollout_sglang_jax_log_level", "rollout_sglang_jax_kwargs")},
)
