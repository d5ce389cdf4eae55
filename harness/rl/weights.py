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


def looks_like_tunix(names) -> bool:
    """Whether flat parameter names are tunix Qwen3 paths (what RLCluster.sync_weights hands a rollout):
    the rollouts then convert them with tunix_to_hf by default instead of loading them under wrong names."""
    names = list(names)
    return bool(names) and all(n in _TOP_MAP or (_LAYER.match(n) and _LAYER.match(n).group(2) in _LAYER_MAP)
                               for n in names)


def hf_to_tunix(hf: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """HF-named arrays -> tunix Qwen3 names and layouts (flat), as RLCluster.sync_weights would hand them.
    For tests of the rollouts' default conversion; tests/rl/test_weights.py checks tunix_to_hf against
    tunix's own loader, this is its numpy inverse."""
    heads, kv, hd, d = (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"],
                        config["hidden_size"])
    out = {"embedder.input_embedding": hf["model.embed_tokens.weight"], "final_norm.w": hf["model.norm.weight"]}
    if "lm_head.weight" in hf:  # a tied model (tunix: use_tied_embedding) has no head of its own
        out["lm_head.w"] = hf["lm_head.weight"].T
    shapes = {"q_proj": (d, heads, hd), "k_proj": (d, kv, hd), "v_proj": (d, kv, hd)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for proj, shape in shapes.items():
            out[f"layers.{i}.attn.{proj}.w"] = hf[p + f"self_attn.{proj}.weight"].T.reshape(shape)
        out[f"layers.{i}.attn.o_proj.w"] = hf[p + "self_attn.o_proj.weight"].T.reshape(heads, hd, d)
        for norm in ("q_norm", "k_norm"):
            out[f"layers.{i}.attn.{norm}.w"] = hf[p + f"self_attn.{norm}.weight"]
        for proj in ("gate_proj", "up_proj", "down_proj"):
            out[f"layers.{i}.mlp.{proj}.kernel"] = hf[p + f"mlp.{proj}.weight"].T
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"layers.{i}.{norm}.w"] = hf[p + f"{norm}.weight"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def to_hf_named(params: Any, filter_types: tuple | None = None, param_mapping: Any = None) -> dict[str, Any]:
    """The one way a rollout of this package turns `update_params`' params into HuggingFace-named arrays.

    `params`: a flat or nested mapping / flax nnx.State / nnx.Module (filtered by `filter_types` with
    nnx's state filtering when given), or an iterable of (name, array) pairs. Names are the flattened
    dotted paths. `param_mapping` renames them: a dict path -> HF name, or a callable (path, array) ->
    an HF name, an iterable of (HF name, array) pairs (one tunix tensor may become several), or None;
    a path mapped to None is skipped. Without a mapping, tunix Qwen3 paths (what RLCluster.sync_weights
    hands a rollout) go through `tunix_to_hf`, and anything else is taken as HF-named already.
    The arrays are returned as given (numpy, jax or torch): each engine converts them its own way.
    """
    nnx = None
    try:
        from flax import nnx
    except ImportError:  # no flax here: params cannot be an nnx module or state
        pass
    if nnx is not None and isinstance(params, nnx.Module):
        params = nnx.state(params, *(filter_types or (nnx.Param,)))
    elif filter_types and hasattr(params, "filter"):
        params = params.filter(*filter_types)
    if isinstance(params, Mapping) or hasattr(params, "to_pure_dict"):
        flat = flatten_state(params)
    else:
        flat = dict(params)
    if param_mapping is None:
        return tunix_to_hf(flat) if looks_like_tunix(flat) else flat
    out: dict[str, Any] = {}
    for name, value in flat.items():
        target = param_mapping.get(name) if isinstance(param_mapping, Mapping) else param_mapping(name, value)
        if target is None:
            continue
        if isinstance(target, str):
            out[target] = value
        else:
            out.update({str(n): v for n, v in target})
    if not out:
        raise ValueError("update_params: param_mapping mapped every parameter to None: no weights given")
    return out
