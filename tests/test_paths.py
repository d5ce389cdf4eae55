"""harness/paths.py: the cache directories and XLA's persistent compilation cache switch."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from harness import paths


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    # set then deleted, so that teardown restores each (a value the code under test sets with
    # os.environ.setdefault included)
    for name in ("PARITY_CACHE", "PARITY_NOX_ENVDIR", "PARITY_JAX_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_cache_dir_default_and_override(clean_env, tmp_path):
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "rollout-parity"
    clean_env.setenv("PARITY_CACHE", str(tmp_path / "c"))
    assert paths.cache_dir() == tmp_path / "c"
    assert paths.venv_python("rl_sglang") == tmp_path / "c" / "nox" / "rl_sglang" / "bin" / "python"
    clean_env.setenv("PARITY_NOX_ENVDIR", str(tmp_path / "envs"))
    assert paths.venv_dir("parity") == tmp_path / "envs" / "parity"


def test_jax_cache_dir_default_is_per_python_under_the_cache(clean_env, tmp_path):
    clean_env.setenv("PARITY_CACHE", str(tmp_path / "c"))
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    assert paths.jax_cache_dir() == tmp_path / "c" / "jax-cache" / py
    clean_env.setenv("PARITY_JAX_CACHE", "")  # empty = unset
    assert paths.jax_cache_dir() == tmp_path / "c" / "jax-cache" / py


@pytest.mark.parametrize("value", ["off", "OFF", " off "])
def test_jax_cache_dir_off(clean_env, value):
    clean_env.setenv("PARITY_JAX_CACHE", value)
    assert paths.jax_cache_dir() is None


def test_jax_cache_dir_explicit(clean_env, tmp_path):
    clean_env.setenv("PARITY_JAX_CACHE", str(tmp_path / "xla"))
    assert paths.jax_cache_dir() == tmp_path / "xla"


class FakeConfig:
    def __init__(self):
        self.values: dict = {}

    def update(self, name, value):
        self.values[name] = value


@pytest.fixture
def fake_jax(monkeypatch):
    jax = types.ModuleType("jax")
    jax.config = FakeConfig()
    monkeypatch.setitem(sys.modules, "jax", jax)
    return jax


def test_enable_jax_compile_cache_sets_jax_config(clean_env, tmp_path, fake_jax):
    clean_env.setenv("PARITY_JAX_CACHE", str(tmp_path / "xla" / "sub"))
    got = paths.enable_jax_compile_cache()
    assert got == tmp_path / "xla" / "sub" and got.is_dir()
    assert fake_jax.config.values == {
        "jax_compilation_cache_dir": str(tmp_path / "xla" / "sub"),
        "jax_persistent_cache_min_compile_time_secs": 0.1,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    paths.enable_jax_compile_cache(min_compile_secs=0)
    assert fake_jax.config.values["jax_persistent_cache_min_compile_time_secs"] == 0.0


def test_enable_jax_compile_cache_off_touches_nothing(clean_env, tmp_path, fake_jax):
    clean_env.setenv("PARITY_CACHE", str(tmp_path / "c"))
    clean_env.setenv("PARITY_JAX_CACHE", "off")
    assert paths.enable_jax_compile_cache() is None
    assert fake_jax.config.values == {}
    assert not (tmp_path / "c").exists()


def test_paths_imports_only_the_standard_library():
    """noxfile.py imports harness.paths in nox's own interpreter: importing it must not pull in jax (or anything
    outside the standard library)."""
    code = ("import sys; before = set(sys.modules); import harness.paths; "
            "new = sorted(m.split('.')[0] for m in set(sys.modules) - before); "
            "std = sys.stdlib_module_names | {'harness'}; "
            "print(','.join(sorted({m for m in new if m not in std and not m.startswith('_')})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_bench_worker_turns_the_cache_off_unless_set(clean_env, monkeypatch, tmp_path):
    """`parity bench` measures cold compiles: its workers (and the engine processes they start, which inherit
    the environment) run with PARITY_JAX_CACHE=off unless the caller chose a value."""
    from harness import bench_worker

    seen = []

    def fake_measure(*a, **k):
        import os

        seen.append(os.environ.get("PARITY_JAX_CACHE"))
        return {"backend": "x"}

    monkeypatch.setattr(bench_worker, "measure", fake_measure)
    out = tmp_path / "w.json"
    assert bench_worker.main(["--backend", "x", "--json", str(out)]) == 0
    assert seen == ["off"] and '"jax_compile_cache": "off"' in out.read_text()
    clean_env.setenv("PARITY_JAX_CACHE", str(tmp_path / "mine"))
    assert bench_worker.main(["--backend", "x", "--json", str(out)]) == 0
    assert seen[-1] == str(tmp_path / "mine")
