"""Fixtures for tests/test_checks*.py: a real recorded run, and clean synthetic engines built from it.

- `recorded_run`: the reference recorded on the default suite (generate + score), once per
  session, by the reference's own interpreter in a subprocess (the driver venv has no torch).
  PARITY_CHECKS_RUN=DIR reuses a recorded run directory instead (copied, never modified).
  PARITY_CHECKS_ENGINES=vllm,sglang_jax also records those engines (each with its nox venv's
  interpreter), generate phases before score phases, as `parity run` does.
- `t2_values`: the reference's sampled completions rescored with the temperature applied twice
  (needs the model, so it is computed by the reference interpreter too).
- `clean_run`: `recorded_run` plus three correct synthetic engines (harness.checks.inject) that
  declare raw, processed and temperature logprobs, with float32-sized noise (sd 2e-6).
- `run_copy()`: a fresh copy of `clean_run` to inject a defect into.

Import them into a test module: `from checks_fixtures import *  # noqa: F401,F403`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.backends import registry
from harness.golden import reference_python  # the reference interpreter, as `parity golden` finds it

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "cases" / "default.yaml"
CLONES = {"clone_raw": "raw", "clone_processed": "processed", "clone_temperature": "temperature"}
CLONE_NOISE = 2e-6

__all__ = ["ROOT", "SUITE", "CLONES", "CLONE_NOISE", "recorded_run", "t2_values", "clean_run", "run_copy",
           "reference_python", "engine_backends"]


def engine_backends() -> list[str]:
    return [b.strip() for b in os.environ.get("PARITY_CHECKS_ENGINES", "").split(",") if b.strip()]


def _run(cmd: list[str], what: str, timeout: float = 1800) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def _record(python: str, backend: str, out: Path, phase: str) -> None:
    _run([python, "-m", "harness", "record", "--backend", backend, "--suite", str(SUITE), "--out", str(out),
          "--phase", phase, "--quiet"], f"recording {backend} {phase}")


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory) -> Path:
    from harness.checks.inject import write_manifest

    out = tmp_path_factory.mktemp("parity") / "recorded"
    given = os.environ.get("PARITY_CHECKS_RUN")
    if given:
        shutil.copytree(given, out)
        if not (out / "run.json").exists():
            write_manifest(out, ["reference"], str(SUITE))
        return out
    py = reference_python()
    if py is None:
        # in CI a skip here would report the defect-injection tests as not failing without running them
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "no interpreter with torch+transformers for the reference (build it: `nox -s reference`, "
            "or set PARITY_REFERENCE_PYTHON / PARITY_CHECKS_RUN)")
    engines = engine_backends()
    pythons = {"reference": py} | {e: str(registry.venv_python(e)) for e in engines}
    # the reference alone: both phases through one process (`--phase all`, one model load); with engines, every
    # backend generates before any scores, so the reference scores the engines' completions too
    for phase in ("generate", "score") if engines else ("all",):
        for backend, python in pythons.items():
            _record(python, backend, out, phase)
    write_manifest(out, list(pythons), str(SUITE))
    return out


@pytest.fixture(scope="session")
def t2_values(recorded_run, tmp_path_factory) -> dict:
    py = reference_python()
    if py is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "temperature-twice values need the model: no reference interpreter")
    path = tmp_path_factory.mktemp("t2") / "t2.json"
    _run([py, "-m", "harness.checks.inject", "t2", str(recorded_run), str(path)], "rescoring at T^2", 900)
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def clean_run(recorded_run, tmp_path_factory) -> Path:
    from harness.checks.inject import add_clones, write_manifest

    out = tmp_path_factory.mktemp("parity") / "clean"
    # the reference's records only: real engines (if recorded) cannot replay the clones' tokens
    (out / "records").mkdir(parents=True)
    shutil.copy(recorded_run / "records" / "reference.generate.jsonl", out / "records")
    rows = [line for line in (recorded_run / "records" / "reference.score.jsonl").read_text().splitlines()
            if line.strip() and json.loads(line).get("source_backend") in (None, "reference")]
    (out / "records" / "reference.score.jsonl").write_text("".join(r + "\n" for r in rows))
    write_manifest(out, ["reference"], str(SUITE))
    add_clones(out, CLONES, noise=CLONE_NOISE, suite=str(SUITE))
    return out


@pytest.fixture
def run_copy(clean_run, tmp_path):
    """run_copy(name="x") -> a fresh copy of the clean run (checks.json removed)."""
    def make(name: str = "run") -> Path:
        d = tmp_path / name
        shutil.copytree(clean_run, d)
        (d / "checks.json").unlink(missing_ok=True)
        return d
    return make
