"""Suite files: every error names file, case and field, and says what is allowed."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from harness.suite import SuiteError, load_suite

ROOT = Path(__file__).parent.parent


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """
suite: s
cases:
  - id: one
    prompts: ["The robot"]
    sampling: {temperature: 0, max_tokens: 4}
"""


def test_default_suite_loads_with_stable_hashes():
    s1, s2 = load_suite(ROOT / "cases" / "default.yaml"), load_suite(ROOT / "cases" / "default.yaml")
    assert [c.content_hash() for c in s1.cases] == [c.content_hash() for c in s2.cases]
    assert len({c.id for c in s1.cases}) == len(s1.cases)


def test_hash_ignores_tolerances_but_not_sampling(tmp_path):
    base = load_suite(write(tmp_path, GOOD)).cases[0]
    tol = load_suite(write(tmp_path, GOOD.replace("max_tokens: 4}", "max_tokens: 4}\n    tolerances: {logprob_atol: 0.1}"))).cases[0]
    samp = load_suite(write(tmp_path, GOOD.replace("max_tokens: 4", "max_tokens: 5"))).cases[0]
    assert base.content_hash() == tol.content_hash() != samp.content_hash()


@pytest.mark.parametrize("body, expect", [
    ("suite: s\ncases: [ {id: a, prompts: [x]\n", ["suite.yaml", "not valid YAML", "line"]),
    (GOOD.replace("max_tokens: 4", "max_tokens: 4, temprature: 1"),
     ["case 'one'", "field 'sampling.temprature'", "allowed", "temperature"]),
    (GOOD.replace("max_tokens: 4", "max_tokens: four"), ["case 'one'", "field 'sampling.max_tokens'", "integer"]),
    (GOOD.replace("temperature: 0", "temperature: -1"), ["case 'one'", "field 'sampling.temperature'", "greater than"]),
    (GOOD.replace("temperature: 0", "top_k: 0"), ["case 'one'", "field 'sampling.top_k'", "top_k: null"]),
    (GOOD.replace("temperature: 0", "n: 0"), ["case 'one'", "field 'sampling.n'"]),
    (GOOD.replace('["The robot"]', '[""]'), ["case 'one'", "field 'prompts.0'", "empty prompt"]),
    (GOOD.replace('["The robot"]', "[]"), ["case 'one'", "field 'prompts'"]),
    (GOOD + "    checks: [no_such_check]\n", ["case 'one'", "field 'checks'", "unknown check", "greedy_tokens"]),
    (GOOD + "    colour: red\n", ["case 'one'", "field 'colour'", "allowed"]),
    (GOOD + "  - id: one\n    prompts: [a]\n", ["case 'one'", "duplicate"]),
    ("suite: s\ncases: []\n", ["'cases' must be a non-empty list"]),
    ("cases: [{id: a, prompts: [x]}]\n", ["'suite'", "required"]),
    (GOOD + "extra_top: 1\n", ["unknown top-level field", "extra_top"]),
])
def test_errors_name_file_case_field(tmp_path, body, expect):
    path = write(tmp_path, body)
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    msg = str(e.value)
    assert str(path) in msg
    for part in expect:
        assert part in msg, (part, msg)


def test_missing_file_says_where_suites_live(tmp_path):
    with pytest.raises(SuiteError, match="not found.*cases/"):
        load_suite(tmp_path / "nope.yaml")


@pytest.mark.parametrize("field, value, said", [
    ("seed", '"42"', "got the string '42'"),
    ("temperature", "true", "got True, a bool"),
    ("max_tokens", "4.0", "got 4.0, a float"),
    ("top_p", "1e-1", "write 1.0e-4"),  # YAML 1.1 reads 1e-1 as a string
])
def test_types_are_strict(tmp_path, field, value, said):
    with pytest.raises(SuiteError, match=rf"case 'one': field 'sampling\.{field}':.*{re.escape(said)}"):
        load_suite(write(tmp_path, GOOD.replace("max_tokens: 4", f"max_tokens: 4, {field}: {value}")
                         if field != "max_tokens" else GOOD.replace("max_tokens: 4", f"max_tokens: {value}")))


def test_every_error_reported_at_once(tmp_path):
    text = GOOD + """
  - id: two
    prompts: [{ids: [1, "2"]}]
    repeats: 0
    sampling: {bogus: 1}
"""
    with pytest.raises(SuiteError) as e:
        load_suite(write(tmp_path, text))
    msg = str(e.value)
    assert msg.startswith("3 errors:"), msg
    for field in ("prompts.0.ids.1", "repeats", "sampling.bogus"):
        assert f"case 'two': field '{field}'" in msg, msg


@pytest.mark.parametrize("checks, extra, said", [
    ("[seed_determinism]", "", "needs repeats >= 2"),
    ("[batch_invariance]", "", "needs alone: true"),
    ("[sampling_distribution]", "", "needs temperature > 0"),
    ("[sampling_effects]", "\n    sampling: {temperature: 0.5, seed: 1}", "needs temperature 0"),
])
def test_check_prerequisites_refused_at_load(tmp_path, checks, extra, said):
    text = f"suite: s\ncases:\n  - id: one\n    prompts: [x]\n    checks: {checks}{extra}\n"
    with pytest.raises(SuiteError, match=f"case 'one': field 'checks': check .*{said}"):
        load_suite(write(tmp_path, text))


def test_cli_malformed_suite_exits_2_and_writes_nothing(tmp_path):
    path = write(tmp_path, GOOD.replace("max_tokens: 4", "max_tokens: 4, bogus: 1"))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "harness", "record", "--backend", "reference", "--suite", str(path),
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "case 'one'" in proc.stderr and "sampling.bogus" in proc.stderr and str(path) in proc.stderr
    assert not out.exists()


def test_cli_run_malformed_suite_exits_2_and_writes_nothing(tmp_path):
    path = write(tmp_path, "suite: s\ncases: [ {id: a\n")
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--suite", str(path), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_cli_missing_model_dir_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--model", str(tmp_path / "none"),
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "no config.json" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_cli_unknown_backend_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backends", "reference,tgi",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "tgi" in proc.stderr
    assert not (tmp_path / "r").exists()


# Anything YAML can hold either loads or fails with a SuiteError naming the file: never a traceback.
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(
        ["id", "prompts", "sampling", "checks", "temperature", "top_k", "n", "ids", "text", "weights", "x"]), kids,
        max_size=4),
    max_leaves=12,
)


@given(doc=st.fixed_dictionaries({"suite": st.just("s")}, optional={"cases": yaml_values, "defaults": yaml_values}))
def test_loader_fuzz_fails_cleanly(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("fz") / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        load_suite(path)
    except SuiteError as e:
        assert str(path) in str(e)


PER_CHECK = """
suite: s
defaults:
  tolerances: {logprob_atol: 2.0e-4, replay: {logprob_atol: 3.0e-2}}
cases:
  - id: a
    prompts: ["x"]
    checks: [replay, completion_logprobs]
  - id: b
    prompts: ["x"]
    tolerances: {replay: {logprob_quantile: 0.9}, completion_logprobs: {logprob_atol: 1.0e-3}}
"""


def test_per_check_tolerances_loosen_one_check_only(tmp_path):
    a, b = load_suite(write(tmp_path, PER_CHECK)).cases
    assert a.tolerance("logprob_atol", "replay") == 3e-2
    assert a.tolerance("logprob_atol", "completion_logprobs") == 2e-4
    assert a.tolerance("logprob_atol", "self_consistency") == 2e-4
    assert b.tolerance("logprob_atol", "replay") == 3e-2  # suite default per check, merged under the case's
    assert b.tolerance("logprob_quantile", "replay") == 0.9
    assert b.tolerance("logprob_quantile", "completion_logprobs") == 1.0  # catalog: float32 gates the max
    assert b.tolerance("logprob_atol", "completion_logprobs") == 1e-3


@pytest.mark.parametrize("tol, bad", [("{replay: {bogus: 1}}", "replay.bogus"),
                                      ("{nocheck: {logprob_atol: 1}}", "nocheck.logprob_atol")])
def test_unknown_per_check_tolerance_names_file_case_field(tmp_path, tol, bad):
    path = write(tmp_path, f"suite: s\ncases:\n  - id: a\n    prompts: [x]\n    tolerances: {tol}\n")
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    assert str(path) in str(e.value) and "case 'a'" in str(e.value) and "tolerances" in str(e.value)
    assert bad in str(e.value)


def test_profile_sits_between_suite_and_catalog(tmp_path, monkeypatch):
    from harness.checks import profiles

    (tmp_path / "bfloat16.yaml").write_text(
        "dtype: bfloat16\ncalibrated: true\ntolerances: {logprob_atol: 0.05, k3_max: 0.01, "
        "replay: {logprob_atol: 0.07}}\nmeasured_only: {batch_invariance: [sglang_jax]}\n")
    monkeypatch.setattr(profiles, "PROFILE_DIR", tmp_path)
    profiles.profile.cache_clear()
    try:
        a, b = load_suite(write(tmp_path, PER_CHECK)).with_profile("bfloat16").cases
        assert a.tolerance("logprob_atol", "replay") == 3e-2  # the suite's own setting wins
        assert a.tolerance("k3_max", "mismatch") == 0.01  # the profile's, where the suite says nothing
        assert b.tolerance("logprob_atol", "completion_logprobs") == 1e-3
        plain = load_suite(ROOT / "cases" / "default.yaml")
        c = plain.with_profile("bfloat16").cases[0]
        assert c.tolerance("logprob_atol", "replay") == 0.07 and c.tolerance("logprob_atol", "weight_update") == 0.05
        assert plain.cases[0].tolerance("logprob_atol", "replay") == 1e-4  # float32 unchanged
        p = profiles.profile("bfloat16")
        assert not p.gated("batch_invariance", ["sglang_jax"]) and p.gated("batch_invariance", ["vllm"])
        assert not profiles.profile("float16").calibrated and profiles.profile("float32").calibrated
    finally:
        profiles.profile.cache_clear()
