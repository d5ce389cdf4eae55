"""tunix Qwen3 state -> HuggingFace tensors: the exact inverse of tunix's own loader (needs tunix)."""

import json

import numpy as np
import pytest

pytest.importorskip("tunix")


def test_hf_to_tunix_to_hf_is_the_identity():
    import jax
    from flax import nnx
    from safetensors.numpy import load_file

    from harness.model import embedded
    from harness.rl.train import load_actor
    from harness.rl.weights import tunix_to_hf

    ref = embedded("A")
    mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    actor = load_actor(ref.path, mesh)
    hf = load_file(str(ref.path / "model.safetensors"))
    back = tunix_to_hf(nnx.state(actor, nnx.Param))
    assert set(back) == set(hf)
    for name, arr in hf.items():
        assert back[name].shape == arr.shape, name
        np.testing.assert_array_equal(back[name], arr, err_msg=name)


def test_unknown_parameter_names_raise():
    from harness.rl.weights import tunix_to_hf

    with pytest.raises(KeyError):
        tunix_to_hf({"layers": {"0": {"attn": {"mystery": np.zeros(2)}}}})


def test_rope_patch_binds_the_models_rope_theta():
    from tunix.models.qwen3 import model as qwen3

    from harness.model import embedded
    from harness.rl.train import patch_tunix_rope

    theta = json.loads((embedded("A").path / "config.json").read_text())["rope_theta"]
    try:
        assert patch_tunix_rope(theta) is True
        assert qwen3.apply_rope.keywords == {"rope_theta": theta}
        assert patch_tunix_rope(theta) is True  # idempotent: wraps the original, not the wrapper
        assert qwen3.apply_rope.func.__name__ == "apply_rope"
    finally:
        patch_tunix_rope(1_000_000.0)
    assert not hasattr(qwen3.apply_rope, "keywords")
