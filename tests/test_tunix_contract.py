"""The tunix contract rules every rollout of this package shares (harness/backends/tunix_contract.py) and the one
params -> HF names API (harness.rl.weights.to_hf_named): pure logic, no engine."""

import numpy as np
import pytest

from harness.backends.tunix_contract import (
    SEED_MASK,
    RolloutConfig,
    Row,
    prompt_width,
    rollout_output,
    row_seed,
    seed_int,
    unpad_for_logps,
)
from harness.rl.weights import hf_to_tunix, to_hf_named, tunix_to_hf

PAD, EOS, OTHER_STOP = 0, 2, 7


def test_row_seed_one_row_is_the_seed_and_rows_differ_reproducibly():
    assert row_seed(42, 0, 1) == 42
    rows = [row_seed(42, i, 4) for i in range(4)]
    assert len(set(rows)) == 4 and rows == [row_seed(42, i, 4) for i in range(4)]
    assert all(0 <= s <= SEED_MASK for s in rows)
    assert row_seed(1 << 40, 0, 1) <= SEED_MASK  # a seed beyond 31 bits is hashed, never truncated silently
    assert row_seed(1 << 40, 0, 1) != row_seed((1 << 40) + 1, 0, 1)


def test_seed_int_accepts_ints_and_arrays():
    assert seed_int(None) is None and seed_int(5) == 5 and seed_int(np.int64(6)) == 6
    assert seed_int(np.asarray([9])) == 9
    key = seed_int(np.asarray([0, 3], dtype=np.uint32))
    assert key == seed_int(np.asarray([0, 3], dtype=np.uint32)) != seed_int(np.asarray([0, 4], dtype=np.uint32))


def test_unpad_stops_at_eos_or_any_eos_token_and_keeps_it():
    prompts = np.asarray([[PAD, PAD, 5, 6], [PAD, 8, 9, 10]])
    comps = np.asarray([[11, EOS, PAD, PAD], [12, OTHER_STOP, PAD, PAD]])
    p, c, width = unpad_for_logps(prompts, comps, pad=PAD, stops=[EOS, OTHER_STOP])
    assert p == [[5, 6], [8, 9, 10]] and c == [[11, EOS], [12, OTHER_STOP]] and width == 4
    # without the second stop token the second row runs to its last non-pad token: the same here, but a
    # stop token followed by more tokens is where the rules differ
    comps2 = np.asarray([[11, OTHER_STOP, 13, PAD]])
    assert unpad_for_logps(prompts[:1], comps2, pad=PAD, stops=[EOS])[1] == [[11, OTHER_STOP, 13]]
    assert unpad_for_logps(prompts[:1], comps2, pad=PAD, stops=[EOS, OTHER_STOP])[1] == [[11, OTHER_STOP]]


def test_unpad_mask_and_ragged_lists_win():
    prompts = np.asarray([[PAD, 5, 6]])
    comps = np.asarray([[11, EOS, 13, PAD]])
    mask = np.asarray([[1, 1, 1, 0]])
    assert unpad_for_logps(prompts, comps, mask, pad=PAD, stops=[EOS])[1] == [[11, EOS, 13]]
    pm = np.asarray([[0, 0, 1]])
    assert unpad_for_logps(prompts, comps, pad=PAD, stops=[EOS], prompt_mask=pm)[0] == [[6]]
    p, c, width = unpad_for_logps([[PAD, 5]], [[PAD, PAD, 3]], pad=PAD, stops=[EOS])
    assert p == [[PAD, 5]] and c == [[PAD, PAD, 3]] and width == 3  # ragged: as given
    with pytest.raises(ValueError, match="2 prompt rows for 1 completion rows"):
        unpad_for_logps(np.zeros((2, 3)), np.zeros((1, 3)), pad=PAD, stops=[EOS])


def test_rollout_output_pads_tokens_right_and_prompts_left():
    cfg = RolloutConfig(max_tokens_to_generate=4, max_prompt_length=3)
    rows = [Row([5, 6], [11, EOS], "a", [-1.0, -2.0]), Row([8, 9, 10, 4], [12, 13, 14, 15], "b", [-1, -1, -1, -1])]
    out = rollout_output(rows, cfg, PAD)
    assert out.tokens.tolist() == [[11, EOS, PAD, PAD], [12, 13, 14, 15]]
    # the longest prompt (4) exceeds max_prompt_length (3): the next power of two, nothing truncated
    assert out.left_padded_prompt_tokens.tolist() == [[PAD, PAD, 5, 6], [8, 9, 10, 4]]
    assert [x.dtype for x in out.logprobs] == [np.float32] * 2 and out.text == ["a", "b"] and out.logits is None
    assert prompt_width(5, 64) == 64 and prompt_width(65, 64) == 128
    missing = rollout_output([Row([5], [6], "", None)], cfg, PAD)
    assert missing.logprobs is None  # an engine that returned none is not papered over with zeros


def test_to_hf_named_one_api_for_mappings_and_tunix_states():
    flat = {"a.w": np.ones(2), "b.w": np.zeros(2)}
    assert set(to_hf_named(flat)) == {"a.w", "b.w"}  # HF names already
    assert set(to_hf_named({"a": {"w": np.ones(2)}})) == {"a.w"}  # nested
    assert set(to_hf_named(flat, param_mapping={"a.w": "model.x", "b.w": None})) == {"model.x"}
    split = to_hf_named(flat, param_mapping=lambda n, v: [(n + ".0", v), (n + ".1", v)] if n == "a.w" else None)
    assert set(split) == {"a.w.0", "a.w.1"}
    assert set(to_hf_named(flat.items(), param_mapping=lambda n, v: "m." + n)) == {"m.a.w", "m.b.w"}
    with pytest.raises(ValueError, match="mapped every parameter to None"):
        to_hf_named(flat, param_mapping=lambda n, v: None)
    cfg = {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "hidden_size": 8,
           "num_hidden_layers": 1}
    rng = np.random.default_rng(0)
    hf = {"model.embed_tokens.weight": rng.normal(size=(16, 8)), "model.norm.weight": rng.normal(size=8)}
    p = "model.layers.0."
    for proj, rows in (("q_proj", 8), ("k_proj", 4), ("v_proj", 4)):
        hf[p + f"self_attn.{proj}.weight"] = rng.normal(size=(rows, 8))
    hf[p + "self_attn.o_proj.weight"] = rng.normal(size=(8, 8))
    for n in ("q_norm", "k_norm"):
        hf[p + f"self_attn.{n}.weight"] = rng.normal(size=4)
    for proj, shape in (("gate_proj", (6, 8)), ("up_proj", (6, 8)), ("down_proj", (8, 6))):
        hf[p + f"mlp.{proj}.weight"] = rng.normal(size=shape)
    for n in ("input_layernorm", "post_attention_layernorm"):
        hf[p + f"{n}.weight"] = rng.normal(size=8)
    back = to_hf_named(hf_to_tunix(hf, cfg))  # tunix names without a mapping: converted
    assert set(back) == set(hf) and all(np.allclose(back[k], hf[k]) for k in hf)
    assert set(tunix_to_hf(hf_to_tunix(hf, cfg))) == set(back)
