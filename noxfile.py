"""Sessions of rollout-parity: one venv per backend, thin sessions over one implementation.

The engines cannot share a venv (vLLM CPU needs Python 3.11, sglang-jax needs
>= 3.12), so each backend session records into files and the driver session
compares them. Backends and venvs come from harness/backends/registry.py: one
venv per backend, shared by its record session (`nox -s NAME`) and its test
session (`nox -s NAME_tests`), and one driver venv for every session that
runs no engine. Venvs live in a cache outside the clone so that a second run,
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
import time
from pathlib import Path

import nox
import nox.command

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))
from harness import paths  # noqa: E402  (standard library only, like the registry below)

nox.options.envdir = str(paths.nox_envdir())
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["parity"]

# Backends and their venvs are listed once, in harness/backends/registry.py (standard library only, so nox's
# own interpreter imports it): the sessions below are generated from it.
sys.path.insert(0, str(ROOT))
from harness.backends import registry  # noqa: E402

# nox ends every run with a failed session with 1; a CI step gating on `nox -s compare` must see the harness's
# own 0 (pass) / 1 (a parity check failed) / 2 (harness or input error). Sessions that run the harness record
# its code, and nox's exit becomes the worst of them.
_HARNESS_CODES: list[int] = []


def run_harness(venv: "Venv", *args: str, **kwargs) -> None:
    """`python -m harness ARGS` in the session's venv; its exit code becomes nox's (see _exit_with_harness_code).
    On Ctrl-C the harness stops the processes it owns and records the interruption: nox gives it time to
    (its default is SIGKILL after half a second)."""
    kwargs.setdefault("interrupt_timeout", 60.0)
    kwargs.setdefault("terminate_timeout", 10.0)
    try:
        venv.run("python", "-m", "harness", *args, **kwargs)
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


# Each session's venv install and run time, printed together when the nox run ends (a `./dev tests` on a fresh
# machine: where its minutes went, from one run). [session, venv, started, install seconds or None (reused),
# ready], in run order; a session runs from its venv's start to the next session's (or the end of the run).
_TIMES: list[list] = []


@atexit.register  # (registered after _exit_with_harness_code, so it runs before that one exits)
def _print_times() -> None:
    if len(_TIMES) < 2:
        return  # one session: its own log says it
    end = time.monotonic()
    lines = ["[nox] time per session: install = venv creation and pip (reused: up to date), run = the rest",
             f"  {'session':22s} {'venv':14s} {'install':>9s} {'run':>9s}"]
    for i, (name, venv, started, install_s, ready) in enumerate(_TIMES):
        stop = _TIMES[i + 1][2] if i + 1 < len(_TIMES) else end
        inst = "reused" if install_s is None else f"{install_s:.0f} s"
        lines.append(f"  {name:22s} {venv:14s} {inst:>9s} {stop - ready:7.0f} s")
    total_install = sum(t[3] or 0.0 for t in _TIMES)
    lines.append(f"  {'all':22s} {'':14s} {total_install:7.0f} s {end - _TIMES[0][2] - total_install:7.0f} s")
    print("\n".join(lines), file=sys.stderr, flush=True)


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


class Venv:
    """A registry venv ($PARITY_CACHE/nox/<name>) as a session uses it. Several sessions share one (a backend's
    record and test sessions, every driver session), so the sessions are declared without a venv of their own
    (venv_backend="none") and this creates, installs and runs in the shared one: one install, one stamp."""

    def __init__(self, session: nox.Session, name: str):
        from nox.virtualenv import VirtualEnv

        self.session, self.spec = session, registry.VENVS[name]
        self.location = Path(session.cache_dir).parent / name  # the session's --envdir
        self.bin = self.location / "bin"
        try:
            req = self.spec.requirement_file()
        except ValueError as e:
            session.error(str(e))
        start = time.monotonic()
        VirtualEnv(str(self.location), interpreter=self.spec.python, reuse_existing=True).create()
        installed = self._install(ROOT / "requirements" / req)
        ready = time.monotonic()
        if installed:
            session.log(f"venv {name}: installed in {ready - start:.0f} s")
        else:
            session.log(f"venv {name}: reused ({self.location})")
        _TIMES.append([session.name, name, start, ready - start if installed else None, ready])

    def run(self, *args: str, **kwargs):
        """`session.run` in this venv: its bin first on PATH, `python` its interpreter."""
        env = {"VIRTUAL_ENV": str(self.location), "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
               **(kwargs.pop("env", None) or {})}
        if args and args[0] == "python":
            args = (str(self.bin / "python"), *args[1:])
        return self.session.run(*args, env=env, external=True, **kwargs)

    def _install(self, req: Path) -> bool:
        """The requirement file, the flavour's post-install steps and the harness (editable), once per change
        of any of them."""
        stamp = _stamp(_requirement_closure(req) + [ROOT / "pyproject.toml"])
        marker = self.location / ".parity-stamp"
        if marker.exists() and marker.read_text() == stamp:
            return False
        self.run("python", "-m", "pip", "install", "-r", str(req))
        for cmd in self.spec.post_install():
            self.run(*cmd)
        self.run("python", "-m", "pip", "install", "--no-deps", "-e", str(ROOT))
        marker.write_text(stamp)
        return True


def driver(session: nox.Session) -> Venv:
    """The driver venv: compare, report and the harness's own tests."""
    return Venv(session, "parity")


# ---------------------------------------------------------------- one session per backend, from the registry
def _record_session(backend: registry.Backend) -> None:
    def session_fn(session: nox.Session) -> None:
        venv = Venv(session, backend.venv)
        if session.posargs:
            chosen = [] if "--backend" in session.posargs else ["--backend", backend.name]
            run_harness(venv, *session.posargs, *chosen)

    session_fn.__doc__ = backend.doc or f"{backend.name}: `nox -s {backend.name} -- record --suite S --out D`."
    session_fn.__name__ = backend.name
    nox.session(name=backend.name, venv_backend="none")(session_fn)


def _test_session(backend: registry.Backend) -> None:
    def session_fn(session: nox.Session) -> None:
        venv = Venv(session, backend.venv)  # the record session's venv: its requirements carry pytest
        files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "backends").glob(f"test_{backend.name}*.py"))
        venv.run("python", "-m", "pytest", *files, f"--junitxml=reports/tests/{backend.name}.xml", *session.posargs)

    session_fn.__doc__ = backend.test_doc
    session_fn.__name__ = f"{backend.name}_tests"
    nox.session(name=f"{backend.name}_tests", venv_backend="none", tags=["tests", "tests-engines"])(session_fn)


# `nox -s NAME -- ARGS` runs `parity ARGS --backend NAME` in NAME's venv; ARGS may name another backend of that
# venv (`nox -s vllm -- record --backend vllm_http ...`, the served engine).
for _b in registry.BACKENDS.values():
    if _b.name in registry.record_sessions():
        _record_session(_b)


@nox.session(venv_backend="none")
def parity(session: nox.Session) -> None:
    """Main job: record every backend, compare, report into reports/<run-id>/ and reports/latest/."""
    run_harness(driver(session), "run", *session.posargs)


@nox.session(venv_backend="none")
def compare(session: nox.Session) -> None:
    """Checks + report over a run directory recorded elsewhere: `nox -s compare -- --run DIR`."""
    venv = driver(session)
    if "--run" not in session.posargs:
        _HARNESS_CODES.append(2)
        session.error("usage: nox -s compare -- --run DIR [--suite FILE]")
    # one command: the report is written even when checks fail or error, and its verdict is the exit code
    run_harness(venv, "compare", "--report", *session.posargs)


@nox.session(venv_backend="none", tags=["tests", "tests-harness"])
def e2e(session: nox.Session) -> None:
    """The main job end to end: `parity run` over every backend's real engine, then its report is checked."""
    driver(session).run("python", "-m", "pytest", "tests/e2e", "--junitxml=reports/tests/e2e.xml", *session.posargs)


@nox.session(venv_backend="none", tags=["tests", "tests-harness"])
def unit(session: nox.Session) -> None:
    """Harness logic: suites, records, model build, alignment, checks, reports. The check tests inject defects
    into a real clean run recorded with the reference venv, which `nox -s venvs` (run first by `./dev tests`)
    or e2e (defined, and run by `-t tests`, before this session) builds on a fresh machine; missing, they skip
    locally and fail in CI."""
    driver(session).run("python", "-m", "pytest", "tests", "--ignore=tests/backends", "--ignore=tests/e2e",
                        "--junitxml=reports/tests/unit.xml", *session.posargs)


# each backend's tests (tests/backends/test_NAME*.py) in that backend's venv
for _b in registry.BACKENDS.values():
    if _b.test_doc:
        _test_session(_b)


# ---------------------------------------------------------------- rl: tunix GRPO/PPO reward curves
# Each training run is its own subprocess of an engine venv (sglang-jax SIGKILLs its host on
# failure and its shutdown kills the caller's children). The driver session `rl` starts them
# through the engine sessions below, then compares the curves in the driver venv. The venvs
# (tunix + an engine, the learner pinned alike) are the registry's rl_sglang and rl_vllm.
@nox.session(name="rl_sglang", venv_backend="none")
def rl_sglang(session: nox.Session) -> None:
    """tunix + sglang-jax venv: `nox -s rl_sglang -- train --engine sglang_jax --algo grpo --seed 0 --out D`."""
    venv = Venv(session, "rl_sglang")
    if session.posargs:
        venv.run("python", "-m", "harness.rl", *session.posargs)


@nox.session(name="rl_vllm", venv_backend="none")
def rl_vllm(session: nox.Session) -> None:
    """tunix + vLLM venv: `nox -s rl_vllm -- train --engine vllm --algo grpo --seed 0 --out D`."""
    venv = Venv(session, "rl_vllm")
    if session.posargs:
        venv.run("python", "-m", "harness.rl", *session.posargs)


@nox.session(venv_backend="none")
def rl(session: nox.Session) -> None:
    """GRPO and PPO curves per engine and seed, compared: `nox -s rl -- --steps 40 --seeds 3 --engines vanilla,sglang_jax,vllm`."""
    start = time.monotonic()
    venv = driver(session)
    try:
        venv.run("python", "-m", "harness.rl", "run", *session.posargs)
    finally:
        session.log(f"rl session wall time: {time.monotonic() - start:.1f} s")


@nox.session(name="rl_tests", venv_backend="none", tags=["tests", "tests-engines"])
def rl_tests(session: nox.Session) -> None:
    """Stale-weight detection on a real engine (update_params disabled) plus the curve statistics."""
    Venv(session, "rl_sglang").run("python", "-m", "pytest", "tests/rl", "--junitxml=reports/tests/rl.xml",
                                   *session.posargs)


# ---------------------------------------------------------------- venvs: everything the test sessions use
#: the venvs of `nox -t tests`: the driver's, each tested backend's, the RL one
TEST_VENVS = ["parity", *dict.fromkeys(b.venv for b in registry.BACKENDS.values() if b.test_doc), "rl_sglang"]


@nox.session(venv_backend="none")
def venvs(session: nox.Session) -> None:
    """Create or update every venv the test sessions use, one after the other. `./dev tests` runs it before
    its two lanes of sessions, so that no two sessions ever install into the same venv at once."""
    for name in TEST_VENVS:
        Venv(session, name)


# ---------------------------------------------------------------- selftest: detection power of the checks
@nox.session(venv_backend="none", tags=["tests", "tests-harness"])
def selftest(session: nox.Session) -> None:
    """Known defects injected into copies of the committed golden run must each be caught, the clean run raise no alarm."""
    venv = driver(session)
    args = session.posargs or ["--out", "reports/selftest"]
    run_harness(venv, "selftest", *args)


# ---------------------------------------------------------------- bench: what each engine costs
@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Throughput (logprobs on/off), score, update_params, start/compile, recompiles per backend, side by side,
    plus compare+report time over 100k synthetic records: `nox -s bench -- [--backends ...] [--out DIR]`.
    Each backend is measured in its own venv's python (installed through its session when missing)."""
    venv = driver(session)
    env = {"PARITY_NOX_ENVDIR": str(Path(session.cache_dir).parent)}
    run_harness(venv, "bench", *session.posargs, env=env)
