"""Typed backend options (harness.backends.options): suite block, --backend-opt, profiles, deprecated variables."""

from __future__ import annotations

import warnings

import pytest

from harness.backends import options, registry
from harness.cli import main
from harness.suite import SuiteError, load_suite

SUITE = """suite: opts
backends:
{block}
cases:
  - id: one
    prompts: ["The robot"]
    sampling: {{temperature: 0, max_tokens: 2}}
"""


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for cls in (options.VllmHttpOptions, options.SglangJaxHttpOptions):
        for var in cls.ENV.values():
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(options, "_WARNED", set())


def _suite(tmp_path, block: str):
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(block=block))
    return path


def test_every_backend_has_an_options_model_with_defaults():
    for name in registry.BACKENDS:
        resolved = options.resolve(name)
        assert isinstance(resolved, options.BackendOptions), name
    assert options.resolve("vllm").logprobs_mode == "processed"


def test_suite_block_is_validated_and_loaded(tmp_path):
    suite = load_suite(_suite(tmp_path, "  vllm: {logprobs_mode: raw, block_size: 64}"))
    assert suite.backends == {"vllm": {"logprobs_mode": "raw", "block_size": 64}}
    assert options.resolve("vllm", suite.backends).model_dump() == {
        "logprobs_mode": "raw", "prompt_logprobs": "separate", "block_size": 64, "enforce_eager": True}


@pytest.mark.parametrize("block, words", [
    ("  vllm: {logprobs_mode: bogus}", ["backends: vllm", "'logprobs_mode'", "'processed' or 'raw'"]),
    ("  vllm: {no_such_option: 1}", ["backends: vllm", "'no_such_option'", "Extra inputs"]),
    ("  nobody: {x: 1}", ["backends: unknown backend 'nobody'", "known:"]),
    ("  vllm: {profile: nope}", ["backends: vllm", "'profile'", "unknown profile 'nope'"]),
    ("  sglang_jax: {engine: '{not json'}", ["backends: sglang_jax", "'engine'", "not a JSON object"]),
    ("  vllm: raw", ["backends: vllm", "a mapping of option -> value"]),
])
def test_bad_suite_block_names_file_backend_and_field(tmp_path, block, words):
    path = _suite(tmp_path, block)
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    for w in [str(path)] + words:
        assert w in str(e.value)


def test_bad_suite_block_is_exit_2_before_anything_runs(tmp_path, capsys):
    path = _suite(tmp_path, "  vllm: {block_size: -32}")
    out = tmp_path / "runs"
    assert main(["run", "--suite", str(path), "--out", str(out), "--backends", "reference,vllm"]) == 2
    assert "block_size" in capsys.readouterr().err and not out.exists()


def test_cli_wins_over_the_suite_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PARITY_VLLM_BLOCK_SIZE", "128")
    monkeypatch.setenv("PARITY_VLLM_LOGPROBS_MODE", "raw")
    block = {"vllm": {"block_size": 64}}
    cli = options.parse_cli(["vllm.block_size=96", "vllm.enforce_eager=false"])
    r = options.resolve("vllm", block, cli)
    assert (r.block_size, r.enforce_eager, r.logprobs_mode) == (96, False, "raw")  # env < suite < cli
    assert options.resolve("vllm", block).block_size == 64
    assert options.resolve("vllm").block_size == 128


def test_profile_sits_beneath_explicit_values_of_its_source():
    r = options.resolve("vllm", {"vllm": {"profile": "tunix", "prompt_logprobs": "separate"}})
    assert (r.logprobs_mode, r.prompt_logprobs) == ("processed", "separate")
    r = options.resolve("vllm", {"vllm": {"logprobs_mode": "processed"}}, options.parse_cli(["vllm.profile=raw"]))
    assert r.logprobs_mode == "raw"  # a later source's profile overrides an earlier source's value


def test_served_variant_starts_from_its_engines_options():
    block = {"vllm": {"logprobs_mode": "raw"}, "vllm_http": {"block_size": 64}}
    r = options.resolve("vllm_http", block)
    assert (r.logprobs_mode, r.block_size) == ("raw", 64)
    assert options.resolve("vllm", block).block_size == 32  # the served block stays with the served backend


@pytest.mark.parametrize("item, words", [
    ("vllm.logprobs_mode", ["BACKEND.FIELD=VALUE"]),
    ("logprobs_mode=raw", ["BACKEND.FIELD=VALUE"]),
    ("nobody.x=1", ["unknown backend 'nobody'"]),
    ("vllm.block_size=big", ["--backend-opt vllm", "'block_size'"]),
])
def test_bad_cli_option_names_the_flag_and_field(item, words):
    with pytest.raises(options.OptionsError) as e:
        options.check_cli(options.parse_cli([item]))
    for w in words:
        assert w in str(e.value)


def test_bad_cli_option_is_exit_2(tmp_path, capsys):
    path = _suite(tmp_path, "  vllm: {}")
    out = tmp_path / "runs"
    code = main(["run", "--suite", str(path), "--out", str(out), "--backends", "reference,vllm",
                 "--backend-opt", "vllm.logprobs_mode=sampled"])
    assert code == 2 and "logprobs_mode" in capsys.readouterr().err and not out.exists()


def test_deprecated_variable_still_works_and_warns_once(monkeypatch, capsys):
    monkeypatch.setenv("PARITY_SGLANG_COMPAT_OFF", "top_p_renormalised,logit_bias_applied")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = options.resolve("sglang_jax")
        second = options.resolve("sglang_jax_http")
    assert first.compat_off == second.compat_off == ["top_p_renormalised", "logit_bias_applied"]
    dep = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(dep) == 1 and "PARITY_SGLANG_COMPAT_OFF" in str(dep[0].message)
    assert "sglang_jax.compat_off" in str(dep[0].message)
    assert capsys.readouterr().err.count("PARITY_SGLANG_COMPAT_OFF is deprecated") == 1


def test_vllm_spelling_of_the_mode_is_accepted():
    assert options.resolve("vllm", None, options.parse_cli(["vllm.logprobs_mode=raw_logprobs"])).logprobs_mode == "raw"


def test_describe_lists_fields_defaults_and_variables():
    rows = {r["name"]: r for r in options.describe("vllm")}
    assert rows["logprobs_mode"]["default"] == "processed"
    assert rows["logprobs_mode"]["env"] == "PARITY_VLLM_LOGPROBS_MODE" and rows["logprobs_mode"]["description"]


def test_served_backends_take_their_http_settings_as_typed_options(monkeypatch, capsys, tmp_path):
    """fanout, timeouts and in-flight limit: options of the served backends only; PARITY_HTTP_* still honoured."""
    monkeypatch.setenv("PARITY_HTTP_START_TIMEOUT", "5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        served = options.resolve("vllm_http", None, options.parse_cli(["vllm_http.fanout=3", "vllm.block_size=64"]))
    assert (served.fanout, served.start_timeout, served.block_size, served.max_inflight) == (3, 5.0, 64, 8)
    dep = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(dep) == 1 and "--backend-opt vllm_http.start_timeout=" in dep[0]  # the served backend's own option
    assert "fanout" not in options.options_class("vllm").model_fields  # the in-process engine has no servers
    with pytest.raises(options.OptionsError, match="fanout"):
        options.validate("sglang_jax", {"fanout": 2}, "suite")
    with pytest.raises(options.OptionsError, match="fanout"):
        options.validate("sglang_jax_http", {"fanout": 0}, "suite")
    from harness.backends.http.options import HttpOptions

    http = HttpOptions.read("vllm_http", {}, served)
    assert (http.fanout, http.urls, http.start_timeout) == (3, None, 5.0)
    http = HttpOptions.read("vllm_http", {"url": "http://127.0.0.1:1,http://127.0.0.1:2"}, served)
    assert http.fanout == 2 and http.urls == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
