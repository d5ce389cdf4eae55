"""The model zoo: tiny models in real checkpoints' shapes, built from code like the embedded model."""

import hashlib
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from harness.model import build, resolve, zoo
from test_model_build import _read_safetensors

ROOT = Path(__file__).parent.parent


@lru_cache(maxsize=None)
def files(name: str, ws: str = "A") -> dict:
    m = zoo.ZOO[name]
    return build.model_files(ws, m.shape, m.recipe(ws))


def config(name: str) -> dict:
    return json.loads(files(name)["config.json"])


def weights(name: str, ws: str = "A") -> dict:
    return _read_safetensors(files(name, ws)["model.safetensors"])


def tokens(name: str) -> list[str]:
    vocab = json.loads(files(name)["tokenizer.json"])["model"]["vocab"]
    return sorted(vocab, key=vocab.get)


@pytest.mark.parametrize("name", ["qwen3-gqa-tied", "qwen2-bias"])
def test_same_bytes_every_build(name):
    again = build.model_files("A", zoo.ZOO[name].shape, zoo.ZOO[name].recipe("A"))
    assert {k: hashlib.sha256(v).hexdigest() for k, v in again.items()} == \
        {k: hashlib.sha256(v).hexdigest() for k, v in files(name).items()}


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_every_zoo_model_fits_both_engines_and_has_a_b_set(name):
    cfg = config(name)
    assert cfg["head_dim"] == 128 and cfg["num_hidden_layers"] == 2
    assert cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0
    if cfg["model_type"] == "qwen2":  # vLLM's Qwen2 takes head size = hidden / heads
        assert cfg["hidden_size"] == cfg["num_attention_heads"] * 128
    a, b = weights(name, "A"), weights(name, "B")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert all(np.isfinite(v).all() for v in a.values())
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    assert any(".mlp." in k for k in differ)
    assert files(name, "A")["config.json"] == files(name, "B")["config.json"]
    assert len(tokens(name)) <= cfg["vocab_size"]


def test_the_zoo_covers_the_shapes_of_real_rl_checkpoints():
    tied = config("qwen3-gqa-tied")
    assert tied["tie_word_embeddings"] and tied["num_key_value_heads"] < tied["num_attention_heads"]
    assert tied["vocab_size"] > len(tokens("qwen3-gqa-tied"))  # rows past the tokenizer, as Qwen3's
    assert "lm_head.weight" not in weights("qwen3-gqa-tied")  # as a tied checkpoint: no head tensor
    # B's embedding (= its output head) differs from A's, so a stale head after an update shows
    assert not np.array_equal(weights("qwen3-gqa-tied", "A")["model.embed_tokens.weight"],
                              weights("qwen3-gqa-tied", "B")["model.embed_tokens.weight"])
    llama = config("llama-untied")
    assert llama["model_type"] == "llama" and not llama["tie_word_embeddings"]
    assert "lm_head.weight" in weights("llama-untied")
    assert not any("q_norm" in k for k in weights("llama-untied"))
    assert config("qwen2-bias")["model_type"] == "qwen2"
    assert {"q_proj", "k_proj", "v_proj"} <= {k.split(".")[-2] for k in weights("qwen2-bias") if k.endswith(".bias")}
    special = config("qwen3-special")
    gen = json.loads(files("qwen3-special")["generation_config.json"])
    toks = tokens("qwen3-special")
    assert isinstance(gen["eos_token_id"], list) and len(gen["eos_token_id"]) == 2
    assert [toks[i] for i in gen["eos_token_id"]] == ["<|im_end|>", "<|endoftext|>"]
    assert gen["pad_token_id"] not in gen["eos_token_id"] and special["eos_token_id"] == gen["eos_token_id"][0]
    assert min(gen["eos_token_id"]) > len(toks) - 4  # Qwen's layout: the specials after the words


def test_each_eos_ends_corpus_lines_so_both_are_generated():
    """qwen3-special's corpus lines end with <|im_end|> and <|endoftext|> in turn: the bigram scores
    give each EOS as the likeliest successor of some token."""
    m = zoo.ZOO["qwen3-special"]
    lines = build.corpus_lines()
    vocab = build.build_vocab(lines, m.shape.n_tokens, m.shape.specials, m.shape.tail_specials)
    scores = build.successor_scores(lines, build.padded_rows(vocab, m.shape), m.recipe("A"), m.shape.eos_tokens)
    best = set(scores.argmax(axis=1).tolist())
    assert {vocab.index("<|im_end|>"), vocab.index("<|endoftext|>")} <= best


def test_zoo_spec_resolves_with_its_b_set(tmp_path):
    a, b = resolve("zoo:llama-untied", "A"), resolve("zoo:llama-untied", "B")
    assert a.name == "llama-untied-A" and b.name == "llama-untied-B" and a.content_hash != b.content_hash
    assert a.content_hash == build.content_hash(files("llama-untied"))
    with pytest.raises(FileNotFoundError, match="zoo:qwen3-gqa-tied"):
        resolve("zoo:nope")


def test_cli_names_the_zoo_on_an_unknown_model(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness", "run", "--model", "zoo:nope", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "no zoo model 'nope'" in r.stderr and "zoo:llama-untied" in r.stderr


def test_byte_level_pieces_follow_qwen2s_split():
    from harness.model import bpe

    assert bpe.pieces("The robot said .") == ["The", "Ġrobot", "Ġsaid", "Ġ."]
    assert bpe.pieces("it's 42\n") == ["it", "'s", "Ġ", "4", "2", "Ċ"]
