"""Where the harness keeps what it builds: the one definition of the cache directory and the venvs in it.

    $PARITY_CACHE (default ~/.cache/rollout-parity)
        nox/<venv>/          one virtualenv per registry venv (harness/backends/registry.py), made by nox
        models/...           the embedded model, built once (harness/model)

$PARITY_NOX_ENVDIR moves the venvs alone (a CI runner's own cache). Both are read at each call, so a test
or a tool that sets them in the environment is obeyed. Standard library only: noxfile.py imports it in
nox's own interpreter.
"""

from __future__ import annotations

import os
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
