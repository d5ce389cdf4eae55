"""Where the harness keeps what it builds: the one definition of the cache directory and the venvs in it.

    $PARITY_CACHE (default ~/.cache/rollout-parity)
        nox/<venv>/          one virtualenv per registry venv (harness/backends/registry.py), made by nox
        models/...           the embedded model, built once (harness/model)
        jax-cache/py<MM>/    XLA's persistent compilation cache, per Python version (jax_cache_dir): the RL
                             trainer and the sglang-jax engine process load their compiled programs from it
                             instead of recompiling them in every process; PARITY_JAX_CACHE=off disables it,
                             PARITY_JAX_CACHE=<dir> moves it (`parity bench` turns it off: it measures compiles)

$PARITY_NOX_ENVDIR moves the venvs alone (a CI runner's own cache). Every variable is read at each call, so
a test or a tool that sets it in the environment is obeyed. Standard library only at import time: noxfile.py
imports it in nox's own interpreter (enable_jax_compile_cache imports jax when called).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("PARITY_CACHE") or Path.home() / ".cache" / "rollout-parity")


def nox_envdir() -> Path:
    envdir = os.environ.get("PARITY_NOX_ENVDIR")
    return Path(envdir) if envdir else cache_dir() / "nox"


def venv_dir(venv: str) -> Path:
    return nox_envdir() / venv


def venv_python(venv: str) -> Path:
    """The interpreter of the venv named `venv` (a registry venv name; registry.venv_python takes backends)."""
    return venv_dir(venv) / "bin" / "python"


def jax_cache_dir() -> Path | None:
    """Where XLA's persistent compilation cache lives: $PARITY_JAX_CACHE when set ("off": None, no cache),
    else $PARITY_CACHE/jax-cache/py<major><minor> (one per interpreter version: each venv's jax is its own;
    jax keys every entry by its own version, the backend and the program, so sharing a directory is safe)."""
    where = os.environ.get("PARITY_JAX_CACHE", "").strip()
    if where.lower() == "off":
        return None
    if where:
        return Path(where).expanduser()
    return cache_dir() / "jax-cache" / f"py{sys.version_info[0]}{sys.version_info[1]}"


def enable_jax_compile_cache(min_compile_secs: float = 0.1) -> Path | None:
    """Turn on jax's persistent compilation cache at jax_cache_dir() (None, and nothing done, when off).

    Call it before the process's first jit compile: jax decides whether to use the cache at its first
    compile. Programs that took at least `min_compile_secs` to compile are written (any size), and every
    compile of this process looks its program up first, so a second process with the same programs loads
    them. 0.1 s: the sglang-jax engine's forward compiles once per batch/padding shape in 0.3-0.8 s each on
    2 cores (about 36 of them in a GRPO run: half would be left out at 0.5 s); below 0.1 s a load saves
    nothing. Imports jax, so only where jax is."""
    root = jax_cache_dir()
    if root is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    import jax

    jax.config.update("jax_compilation_cache_dir", str(root))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return root
