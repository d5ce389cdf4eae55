"""The embedded model is a pure function of code + corpus: same bytes every build."""

import hashlib
import json
import struct

import numpy as np

from harness.model import build, embedded


def test_build_twice_identical_bytes():
    a1, a2 = build.model_files("A"), build.model_files("A")
    assert a1.keys() == a2.keys()
    for name in a1:
        assert hashlib.sha256(a1[name]).hexdigest() == hashlib.sha256(a2[name]).hexdigest(), name


def test_weight_sets_differ_in_weights_not_in_shape():
    a, b = build.model_files("A"), build.model_files("B")
    assert a["config.json"] == b["config.json"] and a["tokenizer.json"] == b["tokenizer.json"]
    assert a["model.safetensors"] != b["model.safetensors"]
    assert len(a["model.safetensors"]) == len(b["model.safetensors"])


def _read_safetensors(blob: bytes) -> dict:
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__")
    data = blob[8 + n:]
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], "<f4").reshape(v["shape"])
            for k, v in header.items()}


def test_shape_fits_every_engine():
    cfg = json.loads(build.model_files("A")["config.json"])
    assert cfg["head_dim"] == 128  # sglang-jax 0.0.2 needs 128; vLLM CPU supports it
    assert cfg["hidden_size"] == cfg["num_attention_heads"] * cfg["head_dim"]
    assert cfg["tie_word_embeddings"] is False and cfg["torch_dtype"] == "float32"
    w = _read_safetensors(build.model_files("A")["model.safetensors"])
    assert w["lm_head.weight"].shape == (cfg["vocab_size"], cfg["hidden_size"])
    assert not np.array_equal(w["lm_head.weight"], w["model.embed_tokens.weight"])


def test_prng_is_plain_integer_arithmetic():
    # splitmix64's published first output for seed 0 (counter starts at 1 * golden gamma)
    assert int(build._splitmix64(0, 1)[0]) == 0xE220A8397B1DCDAF


def test_cache_reuses_and_hash_matches_content(tmp_path):
    m1 = embedded("A", cache=tmp_path)
    mtime = (m1.path / "model.safetensors").stat().st_mtime_ns
    m2 = embedded("A", cache=tmp_path)
    assert m1 == m2 and (m2.path / "model.safetensors").stat().st_mtime_ns == mtime
    assert m1.content_hash == build.content_hash({p.name: p.read_bytes() for p in m1.path.iterdir()
                                                  if p.name != "parity_model_card.json"})


def test_concurrent_builders_of_one_model_all_succeed_with_one_complete_copy(tmp_path):
    """Two sessions on a fresh cache build the same model at once: every builder returns the hash, the
    directory holds one complete copy, and no temporary directory is left."""
    from concurrent.futures import ThreadPoolExecutor

    dest = tmp_path / "models" / "A"
    dest.parent.mkdir(parents=True)
    with ThreadPoolExecutor(8) as ex:
        digests = list(ex.map(lambda _: build.write_model(dest, "A"), range(8)))
    assert len(set(digests)) == 1
    card = json.loads((dest / "parity_model_card.json").read_text())
    assert card["content_hash"] == digests[0]
    assert build.content_hash({p.name: p.read_bytes() for p in dest.iterdir() if p.name != "parity_model_card.json"}) == digests[0]
    assert [p.name for p in dest.parent.iterdir()] == ["A"]
