"""Inputs checked before anything runs (harness/inputs.py): model directories, weights, B against A, prompts."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from harness.inputs import InputError, check_models, check_prompts
from harness.model import ModelRef, embedded
from harness.suite import SuiteError, load_suite

ROOT = Path(__file__).parent.parent


def model_dir(d: Path, shapes: dict[str, list[int]], vocab: int = 384, context: int = 64) -> ModelRef:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"vocab_size": vocab, "max_position_embeddings": context,
                                               "hidden_size": 4, "num_hidden_layers": 1}))
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = 4
        for s in shape:
            n *= s
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return ModelRef(path=d, content_hash="x", name=d.name)


def test_embedded_model_passes():
    config = check_models({"A": embedded("A"), "B": embedded("B")})
    assert config["vocab_size"] == 384


def test_truncated_weights_named(tmp_path):
    m = model_dir(tmp_path / "a", {"w": [4, 4]})
    p = m.path / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(InputError, match=r"--model .*model\.safetensors: truncated: its header needs"):
        check_models({"A": m, "B": None})
    p.write_bytes(b"\x01\x02")
    with pytest.raises(InputError, match="truncated"):
        check_models({"A": m, "B": None})


def test_b_of_another_shape_refused(tmp_path):
    a = model_dir(tmp_path / "a", {"w": [4, 4], "v": [2]})
    b = model_dir(tmp_path / "b", {"w": [4, 8], "v": [2]})
    with pytest.raises(InputError, match=r"--model-b .*not the same shape.*w: \(4, 4\) vs \(4, 8\)"):
        check_models({"A": a, "B": b})
    c = model_dir(tmp_path / "c", {"w": [4, 4]})
    with pytest.raises(InputError, match=r"v: \(2,\) vs absent"):
        check_models({"A": a, "B": c})


def test_config_and_weights_required(tmp_path):
    m = model_dir(tmp_path / "a", {"w": [1]})
    (m.path / "model.safetensors").unlink()
    with pytest.raises(InputError, match="no weights"):
        check_models({"A": m, "B": None})
    (m.path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json unreadable"):
        check_models({"A": m, "B": None})


def test_missing_shard_named(tmp_path):
    m = model_dir(tmp_path / "a", {"w": [1]})
    (m.path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"w": "model.safetensors", "v": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(InputError, match=r"model-00002-of-00002.safetensors'\] named in .* missing"):
        check_models({"A": m, "B": None})


def test_prompts_against_vocab_and_context(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("suite: s\ncases:\n  - id: a\n    prompts: [{ids: [1, 2]}, {ids: [3, 500]}]\n")
    config = {"vocab_size": 384, "max_position_embeddings": 64}
    with pytest.raises(SuiteError, match=r"case 'a': field 'prompts.1': token id 500 >= vocab_size 384"):
        check_prompts(load_suite(suite), config)
    suite.write_text("suite: s\ncases:\n  - id: a\n    prompts: [{ids: [1, 2]}]\n    sampling: {max_tokens: 63}\n")
    with pytest.raises(SuiteError, match=r"2 prompt \+ 63 new tokens exceed the model's context of 64"):
        check_prompts(load_suite(suite), config)
    # text: the tokenizer lives in the backends' venvs; only a prompt that may not fit asks for it
    suite.write_text("suite: s\ncases:\n  - id: a\n    prompts: [hello]\n    sampling: {max_tokens: 8}\n")
    assert check_prompts(load_suite(suite), config) is False
    suite.write_text("suite: s\ncases:\n  - id: a\n    prompts: [" + "word " * 20 + "]\n")
    assert check_prompts(load_suite(suite), config) is True


@pytest.mark.parametrize("args, said", [
    (["--backends", "reference,reference"], "reference given more than once"),
    (["--model-b", "{b}"], "--model-b {b}"),
])
def test_cli_run_refuses_before_writing(tmp_path, args, said):
    b = model_dir(tmp_path / "b", {"w": [4, 4]})
    args = [a.replace("{b}", str(b.path)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(tmp_path / "r"), *args],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert said.replace("{b}", str(b.path)) in proc.stderr
    assert not (tmp_path / "r").exists()
