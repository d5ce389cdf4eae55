"""tunix Qwen3 (nnx) parameters -> HuggingFace names and layouts, in memory.

RLCluster.sync_weights hands the rollout engine `nnx.state(actor, nnx.Param)`:
tunix names and layouts (q_proj.w is [embed, heads, head_dim], kernels are
[in, out]). sglang-jax and vLLM load HuggingFace checkpoints: names like
`model.layers.0.self_attn.q_proj.weight`, torch layouts [out, in]. This is
the exact inverse of tunix's own loader (`tunix.models.qwen3.params.
_get_key_and_transform_mapping`), so that HF -> tunix -> HF is the identity
(tests/rl/test_weights.py checks it bit for bit on the embedded model).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
# tunix path (inside a layer) -> (HF name inside model.layers.i, kind)
_LAYER_MAP = {
    "attn.q_proj.w": ("self_attn.q_proj.weight", "dnh"),
    "attn.k_proj.w": ("self_attn.k_proj.weight", "dnh"),
    "attn.v_proj.w": ("self_attn.v_proj.weight", "dnh"),
    "attn.o_proj.w": ("self_attn.o_proj.weight", "nhd"),
    "attn.q_norm.w": ("self_attn.q_norm.weight", "id"),
    "attn.k_norm.w": ("self_attn.k_norm.weight", "id"),
    "mlp.gate_proj.kernel": ("mlp.gate_proj.weight", "t"),
    "mlp.up_proj.kernel": ("mlp.up_proj.weight", "t"),
    "mlp.down_proj.kernel": ("mlp.down_proj.weight", "t"),
    "input_layernorm.w": ("input_layernorm.weight", "id"),
    "post_attention_layernorm.w": ("post_attention_layernorm.weight", "id"),
}
_TOP_MAP = {
    "embedder.input_embedding": ("model.embed_tokens.weight", "id"),
    "final_norm.w": ("model.norm.weight", "id"),
    "lm_head.w": ("lm_head.weight", "t"),
}


def flatten_state(state: Any) -> dict[str, Any]:
    """nnx.State / nested dict -> {'a.b.c': array} (Variable wrappers unwrapped)."""
    if hasattr(state, "to_pure_dict"):
        state = state.to_pure_dict()
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if hasattr(node, "to_pure_dict"):
            node = node.to_pure_dict()
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif hasattr(node, "value") and not hasattr(node, "shape"):
            walk(prefix, node.value)
        else:
            flat[prefix] = node

    walk("", state)
    return flat


def _convert(arr: np.ndarray, kind: str) -> np.ndarray:
    if kind == "id":
        return arr
    if kind == "t":
        return arr.T
    if kind == "dnh":  # [D, N, H] -> [N*H, D]
        d = arr.shape[0]
        return arr.reshape(d, -1).T
    if kind == "nhd":  # [N, H, D] -> [D, N*H]
        return arr.reshape(-1, arr.shape[-1]).T
    raise ValueError(kind)


def tunix_to_hf(state: Any, dtype=np.float32) -> dict[str, np.ndarray]:
    """Every parameter of a tunix Qwen3 state under its HF name and layout (contiguous numpy).
    Unknown names raise: a silently dropped tensor would be a stale-weight bug."""
    out: dict[str, np.ndarray] = {}
    for path, value in flatten_state(state).items():
        arr = np.asarray(value, dtype=dtype)
        if path in _TOP_MAP:
            name, kind = _TOP_MAP[path]
        else:
            m = _LAYER.match(path)
            if not m or m.group(2) not in _LAYER_MAP:
                raise KeyError(f"tunix parameter {path!r} has no HuggingFace name (Qwen3 dense only)")
            inner, kind = _LAYER_MAP[m.group(2)]
            name = f"model.layers.{m.group(1)}.{inner}"
        out[name] = np.ascontiguousarray(_convert(arr, kind))
    return out
