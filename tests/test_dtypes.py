"""The run's dtype: requested (--dtype, a suite's dtype), resolved against the checkpoint, checked, reported."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import dtypes
from harness.backends import registry
from harness.backends.base import BACKENDS, Runner
from harness.cli import main
from harness.suite import SuiteError, load_suite

ROOT = Path(__file__).parent.parent


def model_dir(tmp_path: Path, **cfg) -> Path:
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"vocab_size": 384, **cfg}))
    return d


@pytest.mark.parametrize("text, name", [("torch.bfloat16", "bfloat16"), ("bf16", "bfloat16"), ("float16", "float16"),
                                        ("cpu (cpu), float32", "float32"), ("cpu (float64)", "float64"),
                                        ("half", "float16"), ("int8", None), ("", None)])
def test_canonical_names(text, name):
    assert dtypes.canonical(text) == name


def test_auto_is_the_checkpoints_dtype(tmp_path):
    assert dtypes.resolve("auto", model_dir(tmp_path, torch_dtype="bfloat16")) == "bfloat16"
    assert dtypes.resolve(None, model_dir(tmp_path, dtype="float16")) == "float16"  # newer transformers' key
    assert dtypes.resolve("auto", model_dir(tmp_path)) == "float32"  # none declared: as transformers loads it
    assert dtypes.resolve("float32", model_dir(tmp_path, torch_dtype="bfloat16")) == "float32"
    with pytest.raises(ValueError, match="float64"):
        dtypes.resolve("auto", model_dir(tmp_path, torch_dtype="float64"))
    with pytest.raises(ValueError, match="choose one of"):
        dtypes.resolve("bf16", model_dir(tmp_path))


def test_embedded_model_is_float32():
    from harness.model import embedded

    assert dtypes.resolve("auto", embedded("A").path) == "float32"


def test_an_engine_in_another_dtype_is_an_error():
    assert dtypes.require("vllm", "bfloat16", "torch.bfloat16") == "bfloat16"
    with pytest.raises(dtypes.DtypeMismatch, match="vllm runs in 'float32', not the requested bfloat16"):
        dtypes.require("vllm", "bfloat16", "float32")


def test_checkpoint_dtype_other_than_the_runs_is_a_warning():
    assert dtypes.mismatch_warning("float32", "float32") is None
    assert dtypes.mismatch_warning("float32", None) is None
    w = dtypes.mismatch_warning("float32", "bfloat16", "the checkpoint Qwen3-0.6B")
    assert "Qwen3-0.6B is stored in bfloat16" in w and "computed in float32" in w


SUITE = """
suite: s
{dtype}
cases:
  - id: one
    prompts: [{{ids: [3, 5, 9]}}]
    sampling: {{temperature: 0, max_tokens: 2}}
"""


def test_suite_dtype_field(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(SUITE.format(dtype="dtype: bfloat16"))
    assert load_suite(p).dtype == "bfloat16"
    p.write_text(SUITE.format(dtype=""))
    assert load_suite(p).dtype is None
    p.write_text(SUITE.format(dtype="dtype: bf16"))
    with pytest.raises(SuiteError, match=r"s.yaml: field 'dtype': 'bf16' is not one of"):
        load_suite(p)


def test_flag_over_suite_over_checkpoint(tmp_path):
    from types import SimpleNamespace

    from harness.cli import run_dtype
    from harness.model import ModelRef

    m = ModelRef(model_dir(tmp_path, torch_dtype="bfloat16"), "h", "m")
    p = tmp_path / "s.yaml"
    p.write_text(SUITE.format(dtype="dtype: float16"))
    with_dtype = load_suite(p)
    p.write_text(SUITE.format(dtype=""))
    plain = load_suite(p)
    assert run_dtype(SimpleNamespace(dtype="float32"), with_dtype, m) == "float32"
    assert run_dtype(SimpleNamespace(dtype=None), with_dtype, m) == "float16"
    assert run_dtype(SimpleNamespace(dtype=None), plain, m) == "bfloat16"


def test_cli_rejects_an_unknown_dtype(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness", "run", "--dtype", "bf16", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "--dtype" in r.stderr and "bfloat16" in r.stderr
    assert not list(tmp_path.iterdir())


class StuckInFloat32(Runner):
    """An engine that ignores the dtype it is given (what vLLM did before the runner passed it on)."""

    name = "stuck"

    def versions(self):
        return {}

    def device(self):
        return "cpu"

    def dtype(self):
        return "float32"

    def native_params(self, spec):
        return {}

    def generate(self, prompts, spec):
        raise AssertionError("must not be reached: the dtype check comes first")

    def score(self, prompts, completions, spec):
        raise AssertionError("must not be reached")

    def set_weights(self, model):
        pass


def test_record_refuses_an_engine_that_cannot_honour_the_dtype(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, "stuck", registry.Backend("stuck", f"{__name__}:StuckInFloat32", "parity"))
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.format(dtype=""))
    out = tmp_path / "run"
    code = main(["record", "--backend", "stuck", "--no-isolate", "--suite", str(suite), "--out", str(out),
                 "--dtype", "bfloat16", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "stuck runs in 'float32', not the requested bfloat16" in err and "no silent fallback" in err
    assert not (out / "records").exists() or not any((out / "records").iterdir())
    # the same engine in the dtype it does run in records normally (up to its first call)
    code = main(["record", "--backend", "stuck", "--no-isolate", "--suite", str(suite), "--out", str(out),
                 "--dtype", "float32", "--quiet"])
    assert code == 2 and "must not be reached" in (out / "records" / "stuck.generate.jsonl").read_text()
