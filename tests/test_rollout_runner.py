"""The generic BaseRollout runner's own logic (harness/backends/rollout_runner.py) with a scripted rollout: what
it sends through the surface, how it reads RolloutOutput back, what it refuses. Real rollouts run in
tests/e2e/test_rollout_plugin.py."""

import dataclasses
import json

import numpy as np
import pytest

from harness.backends import rollout_runner
from harness.backends.base import Unsupported, is_backend, runner_class, venv_of
from harness.model import ModelRef
from harness.spec import SamplingSpec

PAD, EOS = 0, 1


@dataclasses.dataclass
class Out:
    text: list
    logits: object
    tokens: object
    left_padded_prompt_tokens: object
    logprobs: object


class Scripted:
    """Returns one scripted completion per row; records what it was sent."""

    completions = [[7, 8, EOS], [9, 9, 9, 9]]
    logprobs_none = False

    def __init__(self, rollout_config=None, model_path=None):
        self.calls = []
        self.model_path = model_path

    def generate(self, prompts, rollout_config, **kwargs):
        self.calls.append((prompts, rollout_config, kwargs))
        rows = len(prompts)
        width = max(rollout_config.max_prompt_length, max(len(p) for p in prompts))
        left = np.full((rows, width), PAD)
        tok = np.full((rows, rollout_config.max_tokens_to_generate), PAD)
        lps = []
        for r, p in enumerate(prompts):
            left[r, width - len(p):] = p
            c = self.completions[r % len(self.completions)][:rollout_config.max_tokens_to_generate]
            tok[r, :len(c)] = c
            lps.append(np.full(rollout_config.max_tokens_to_generate, -0.5, np.float32))  # padded: cut to the row
        return Out([""] * rows, None, tok, left, None if self.logprobs_none else lps)

    def get_per_token_logps(self, prompt_tokens, completion_tokens):  # no completion_mask, as tunix 0.1.7
        self.calls.append(("score", np.asarray(prompt_tokens), np.asarray(completion_tokens)))
        return np.full(np.asarray(completion_tokens).shape, -1.25)

    def update_params(self, params, filter_types=None):
        self.calls.append(("update", sorted(params)))

    def pad_id(self):
        return PAD

    def eos_id(self):
        return EOS


class IdsAndN(Scripted):
    parity_capabilities = {"token_ids", "n"}
    logprob_mode = "raw"

    def generate(self, prompts, rollout_config, n=1, **kwargs):
        out = super().generate([p for p in prompts for _ in range(n)], rollout_config, **kwargs)
        self.calls[-1] = (prompts, rollout_config, {"n": n, **kwargs} if n > 1 else kwargs)
        return out

    def parity_params(self, model_dir):  # what update_params gets instead of HF-named arrays
        return {"from": model_dir}


@pytest.fixture
def model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": EOS}))
    return ModelRef(path=tmp_path, content_hash="x", name="scripted")


def make(monkeypatch, model, cls, name="mine"):
    monkeypatch.setitem(globals(), cls.__name__, cls)
    monkeypatch.setenv(rollout_runner.spec_env(name), f"{__name__}:{cls.__name__}")
    assert is_backend(name) and venv_of(name) == "reference"
    return runner_class(name)(model, dtype="float32")


def test_token_ids_and_n_capabilities_drive_the_call(monkeypatch, model):
    r = make(monkeypatch, model, IdsAndN)
    assert r.rollout.model_path == str(model.path) and r.logprob_mode == "raw"
    out = r.generate([[5, 6], [7]], SamplingSpec(temperature=1.0, n=2, seed=4, max_tokens=4))
    prompts, cfg, kwargs = r.rollout.calls[0]
    assert prompts == [[5, 6], [7]] and kwargs == {"n": 2}
    assert (cfg.temperature, cfg.seed, cfg.top_p, cfg.top_k, cfg.return_logprobs) == (1.0, 4, None, None, True)
    # rows i*n+j; EOS kept, cut after it; the row without one runs to max_tokens
    assert [[s.completion_ids for s in p] for p in out] == [[[7, 8, EOS], [9, 9, 9, 9]], [[7, 8, EOS], [9, 9, 9, 9]]]
    assert [s.finish_reason for s in out[0]] == ["stop", "length"]
    assert out[0][0].completion_logprobs == [-0.5] * 3 and out[0][0].prompt_logprobs is None
    assert r.config()["capabilities_missing"].keys() == {"prompt_logprobs", "top_logprobs"}


def test_without_n_each_prompt_is_repeated_and_missing_logprobs_stay_missing(monkeypatch, model):
    class Plain(Scripted):
        parity_capabilities = {"token_ids"}
        logprobs_none = True

    r = make(monkeypatch, model, Plain)
    out = r.generate([[5, 6]], SamplingSpec(temperature=1.0, n=3, seed=1, max_tokens=4))
    assert r.rollout.calls[0][0] == [[5, 6]] * 3 and r.rollout.calls[0][2] == {}
    assert [s.completion_logprobs for s in out[0]] == [None] * 3  # never papered over: the checks fail it
    assert set(r.config()["capabilities_missing"]) == {"n", "prompt_logprobs", "top_logprobs"}
    assert r.config()["logprob_mode_declared"] is False


def test_fields_tunix_cannot_express_skip_the_case(monkeypatch, model):
    r = make(monkeypatch, model, IdsAndN)
    for spec in (SamplingSpec(min_p=0.1, temperature=1.0), SamplingSpec(ignore_eos=True),
                 SamplingSpec(logit_bias={3: 1.0}), SamplingSpec(repetition_penalty=1.2)):
        with pytest.raises(Unsupported, match="tunix RolloutConfig has no field"):
            r.generate([[5]], spec)
    stop = r.native_params(SamplingSpec(stop_token_ids=(9,)))
    assert stop["eos_tokens"] == [EOS, 9]  # eos_tokens replaces EOS in tunix: the model's EOS stays a stop token


def test_a_rollout_that_generates_from_another_prompt_is_an_error(monkeypatch, model):
    class Shifted(IdsAndN):
        def generate(self, prompts, rollout_config, **kwargs):
            return super().generate([[p[0] + 1] + list(p[1:]) for p in prompts], rollout_config, **kwargs)

    r = make(monkeypatch, model, Shifted)
    with pytest.raises(RuntimeError, match=r"from prompt tokens \[6, 6\], not the \[5, 6\]"):
        r.generate([[5, 6]], SamplingSpec(max_tokens=2))


def test_score_pads_the_tunix_way_and_cuts_each_row(monkeypatch, model):
    r = make(monkeypatch, model, IdsAndN)
    got = r.score([[5, 6], [7]], [[8, EOS], []], SamplingSpec())
    _, p, c = r.rollout.calls[0]
    assert p.tolist() == [[5, 6]] and c.tolist() == [[8, EOS]]  # empty completions are not sent
    assert [s.logprobs for s in got] == [[-1.25, -1.25], []]
    r.set_weights(model)  # the rollout's parity_params hook decides what update_params gets
    assert r.rollout.calls[-1] == ("update", ["from"])


def test_entries_and_errors_name_what_is_wrong(monkeypatch, model):
    assert rollout_runner.parse_entry("mine=pkg.mod:Cls") == ("mine", "pkg.mod:Cls")
    for bad in ("Mine=pkg:Cls", "mine=pkg", "mine=http://x:1"):
        with pytest.raises(ValueError, match="--backends entry"):
            rollout_runner.parse_entry(bad)
    assert not rollout_runner.is_spec("http://127.0.0.1:8000")
    monkeypatch.setenv(rollout_runner.spec_env("gone"), "no_such_module_xyz:Cls")
    with pytest.raises(ImportError, match="cannot import 'no_such_module_xyz'.*PYTHONPATH"):
        runner_class("gone")(model)

    class Half:
        def __init__(self, rollout_config=None):
            pass

        def generate(self, prompts, rollout_config):
            pass

    monkeypatch.setitem(globals(), "Half", Half)
    monkeypatch.setenv(rollout_runner.spec_env("half"), f"{__name__}:Half")
    with pytest.raises(TypeError, match=r"lacks BaseRollout method\(s\) \['get_per_token_logps'"):
        runner_class("half")(model)
    assert venv_of("tunix_sglang_jax") == "rl_sglang" and is_backend("tunix_vllm")
    assert rollout_runner.rollout_spec("tunix_sglang_jax") == "harness.backends.tunix_upstream:TunixSglangJaxRollout"
    assert rollout_runner.rollout_spec("vllm") is None  # a built-in engine keeps its own runner


def test_installed_plugins_come_from_the_entry_point_group(monkeypatch, model):
    import importlib.metadata as md

    seen = []

    def entry_points(group=None):
        seen.append(group)
        return [md.EntryPoint(name="plug", value=f"{__name__}:IdsAndN", group=group)]

    monkeypatch.setattr(md, "entry_points", entry_points)
    monkeypatch.setitem(globals(), "IdsAndN", IdsAndN)
    assert rollout_runner.rollout_spec("plug") == f"{__name__}:IdsAndN" and seen == ["rollout_parity.backends"]
    assert is_backend("plug") and runner_class("plug")(model).capabilities == {"token_ids", "n"}


def test_a_really_installed_distribution_registers_its_rollout(tmp_path, monkeypatch):
    """tests/data/plugins built and installed by pip (offline, no dependencies) into a directory on sys.path:
    its entry point in `rollout_parity.backends` names a backend, as for any installed package."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    src = tmp_path / "src"
    shutil.copytree(Path(__file__).parent / "data" / "plugins", src)  # the build writes next to its sources
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--disable-pip-version-check", "--target", str(site), str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0 and "setuptools" in proc.stderr and "No module named" in proc.stderr:
        pytest.skip(f"this interpreter cannot build a distribution offline (no setuptools): {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr
    assert any(p.name.startswith("rollout_parity_hf_plugin-0.1.0") for p in site.glob("*.dist-info"))
    assert "hf_plugin" not in rollout_runner.installed()
    monkeypatch.syspath_prepend(str(site))
    assert rollout_runner.installed()["hf_plugin"] == "hf_rollout:HfRollout"
    assert rollout_runner.rollout_spec("hf_plugin") == "hf_rollout:HfRollout" and is_backend("hf_plugin")
    assert venv_of("hf_plugin") == "reference"  # a plugin runs in the reference's venv unless --backend-python
