"""Engine labels <-> run configurations (the injected-defect hooks)."""

import pytest

from harness.rl.config import RunConfig


@pytest.mark.parametrize("label, engine, stale, scale", [
    ("vllm", "vllm", False, 1.0),
    ("vanilla-stale", "vanilla", True, 1.0),
    ("sglang_jax-temp1.1", "sglang_jax", False, 1.1),
    ("vllm-stale-temp0.9", "vllm", True, 0.9),
])
def test_labels_round_trip(label, engine, stale, scale):
    cfg = RunConfig.from_label(label, algo="ppo", seed=2)
    assert (cfg.engine, cfg.stale_weights, cfg.temperature_scale) == (engine, stale, scale)
    assert cfg.label == label and cfg.algo == "ppo" and cfg.seed == 2
    assert RunConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("label, needle", [
    ("sglang", "unknown engine"), ("vllm-hot", "unknown suffix"), ("vllm-tempx", "needs a number"),
    ("vllm-temp0", "must be > 0"), ("vllm-temp1.10", "write it as 'vllm-temp1.1'"),
    ("vllm-temp1.1-stale", "write it as 'vllm-stale-temp1.1'"),
])
def test_bad_labels_say_why(label, needle):
    with pytest.raises(ValueError, match=needle):
        RunConfig.from_label(label)
