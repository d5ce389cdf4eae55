"""`parity run`: record every backend in its own process and venv, then compare and report.

The engines cannot share an interpreter (vLLM CPU: Python 3.11; sglang-jax:
>= 3.12), and sglang-jax kills its host process on failure, so each backend
is a subprocess, by default through its nox session (which installs its venv on
first use). Results cross as record files. A backend that fails is recorded as
an error and reported loudly; the others go on.

Each backend starts once per run (one engine start and compile): its process
records the generate phase, then holds its engine (`parity record --hold`,
harness/supervise.py) until every backend has generated, and scores when the
driver lets it. Backends generate in the order given and score in reverse, so
the last to generate never waits. A backend whose process failed in the
generate phase, or died holding, gets a process of its own for the score phase.

The driver owns every process of the run (harness/proctree.py): SIGINT, SIGTERM
or SIGHUP stop every backend process (each supervisor kills its worker and the
engine's processes), anything left below the driver is killed and reaped,
run.json records the interruption, and the exit code is 2. Nothing half-written
is kept: a case's records are complete or absent, and `--resume` records what
is missing, re-runs what failed, and appends to each phase's log.

run.json (the run's manifest, read by compare and report):
    run_id, suite (path), suite_name, backends (requested, in order), model, model_b,
    dtype (the engines' dtype), dtype_requested (auto, or --dtype / the suite's), checkpoint_dtype
    (model A's config.json torch_dtype, or null), git_revision, started_at, finished_at, argv,
    backend_status: {name: {phases: {generate|score: {exit_code, wall_s, log, timed_out}}}},
    interrupted: null, or {signal, at, backend, phase} when this attempt was stopped by a signal,
    interruptions: every earlier interruption of this run (kept across --resume),
    backend_options: {name: its resolved typed options} (harness.backends.options: suite `backends:` block,
    --backend-opt, deprecated PARITY_* variables)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness import proctree
from harness.cli import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, HarnessError
from harness.rundir import RunDirError, read_manifest_dict, write_manifest

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("generate", "score")
STOP_GRACE_S = 15.0  # a signalled supervisor kills its worker tree and exits; then whatever is left is killed
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A stop signal reached the driver (raised from the signal handler, so every wait ends)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal = signal.Signals(signum).name


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rollout_python(backend: str, launcher: str) -> tuple[str | None, str | None]:
    """How a rollout backend (harness/backends/rollout_runner.py) is started: (nox session, None) when it runs
    in a backend's venv and the launcher is nox (the session installs it), else (None, interpreter path)."""
    from harness.backends import registry
    from harness.backends.base import venv_of

    where = venv_of(backend)
    if where in registry.BACKENDS and launcher == "nox" and where in registry.record_sessions():
        return where, None
    if where in registry.BACKENDS or where in registry.VENVS:
        python = registry.venv_python(where)
        if launcher == "direct" and where == registry.reference() and not python.exists():
            return None, sys.executable  # the driver's own interpreter, as every other backend under --launcher direct
    else:
        path = Path(where)
        python = path / "bin" / "python" if path.is_dir() else path
    if not python.exists():
        raise HarnessError(f"backend {backend!r} runs in {where}, where there is no Python ({python}): install that "
                           f"venv (`./dev nox -s {where}` for a named one) or pass --backend-python "
                           f"{backend}=VENV_OR_PYTHON")
    return None, str(python)


def backend_command(backend: str, launcher: str, record_args: list[str]) -> list[str]:
    from harness.backends.base import _rollout, venv_of

    session = None
    if _rollout(backend) is not None:
        session, python = rollout_python(backend, launcher)
        if python is not None:
            return [python, "-m", "harness", "record", "--backend", backend, *record_args]
    if launcher == "nox" or session is not None:
        return [sys.executable, "-m", "nox", "--no-error-on-missing-interpreters", "-f", str(ROOT / "noxfile.py"),
                "-s", session or venv_of(backend), "--", "record", "--backend", backend, *record_args]
    return [sys.executable, "-m", "harness", "record", "--backend", backend, *record_args]


def _record_args(args, run_dir: Path, run_id: str, phase: str) -> list[str]:
    from harness.model import is_built_in

    record_args = ["--suite", str(Path(args.suite).resolve()), "--out", str(run_dir), "--phase", phase,
                   "--run-id", run_id]
    for flag, spec in (("--model", args.model), ("--model-b", args.model_b)):
        if spec:
            record_args += [flag, spec if is_built_in(spec) else str(Path(spec).resolve())]
    if args.quiet:
        record_args.append("--quiet")
    record_args += ["--dtype", args.dtype]  # resolved by run_all: every backend runs the same one
    record_args += [a for o in getattr(args, "backend_opt", None) or [] for a in ("--backend-opt", o)]  # resolved alike in each backend
    if phase == "all":
        record_args.append("--hold")
    return record_args


class BackendProcess:
    """One backend's `parity record` process (nox session, supervisor, worker, engine), its output teed to
    logs/<backend>.<phase>.log of the phase it is in.

    Started for `--phase all --hold` (the default), it records the generate phase, reports it
    (state/<backend>.generated.json) and keeps its engine until release() lets it score: one engine start
    and compile per backend and run. Started for one phase, it is one phase's process."""

    def __init__(self, backend: str, phase: str, args, run_dir: Path, run_id: str, spare: Callable[[], set[int]]):
        self.backend, self.args, self.run_dir, self.run_id = backend, args, run_dir, run_id
        self.held = phase == "all"
        self.spare = spare  # processes that are not this one's (the caller's own, other backends' held trees)
        self.fh = None
        self.phase = None
        self.t0 = 0.0
        self.mutex = threading.Lock()
        first = "generate" if self.held else phase
        if self.held:
            from harness.supervise import generated_path, score_gate

            generated_path(run_dir, backend).unlink(missing_ok=True)  # an earlier attempt's
            score_gate(run_dir, backend).unlink(missing_ok=True)
        self._open(first)
        cmd = backend_command(backend, args.launcher, _record_args(args, run_dir, run_id, phase))
        print(f"[parity] {backend} {first}: {' '.join(cmd[2:6])} ... "
              f"(log {self._log(first).relative_to(run_dir.parent)})", file=sys.stderr, flush=True)
        env = {**os.environ, proctree.OWNER_ENV: proctree.identity()}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env=env)
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _log(self, phase: str) -> Path:
        return self.run_dir / "logs" / f"{self.backend}.{phase}.log"

    def _open(self, phase: str) -> None:
        """Start `phase`: its log (appended: the log of a crashed attempt is what explains it) gets this attempt's
        header and the output from now on; an earlier attempt's "process failed" record is stale."""
        from harness.records import prune_records, records_path

        prune_records(records_path(self.run_dir, self.backend, phase),
                      lambda d: d.get("kind") == "error" and d.get("error_type") == "BackendProcessFailed")
        log = self._log(phase)
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = log.open("a")
        fh.write(f"===== {self.backend} {phase}: attempt started {datetime.now(timezone.utc).isoformat()} =====\n")
        fh.flush()
        with self.mutex:
            old, self.fh, self.phase = self.fh, fh, phase
        if old is not None:
            old.close()
        self.t0 = time.monotonic()

    def _note(self, text: str) -> None:
        with self.mutex:
            self.fh.write(f"===== {self.backend} {self.phase}: {text} =====\n")
            self.fh.flush()

    def _pump(self) -> None:  # a thread, so a silent hang cannot block the timeout
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.mutex:
                self.fh.write(line)
                self.fh.flush()
            if not self.args.quiet and (line.startswith("[") or "error" in line.lower()):
                try:
                    sys.stderr.write(f"    {line}")
                except (OSError, ValueError):
                    pass

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _wait(self, report: Path | None) -> tuple[int | None, bool]:
        """Until the process exits or (holding) reports its generate phase over: (exit code, timed out)."""
        deadline = self.t0 + self.args.timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                return code, False
            if report is not None and report.exists():
                try:
                    return int(json.loads(report.read_text())["exit_code"]), False
                except (OSError, ValueError, KeyError, TypeError):
                    pass  # written atomically; a reader may still race a replace on some filesystems
            if time.monotonic() > deadline:
                return None, True
            time.sleep(0.1)

    def generate(self) -> dict:
        """The generate phase (a held process: until it reports it; else until it exits)."""
        from harness.supervise import generated_path

        code, timed_out = self._wait(generated_path(self.run_dir, self.backend) if self.held else None)
        if timed_out:
            self.stop(grace=0)
            code = self.proc.wait()
        elif self.alive:
            self._note("done; the engine is kept for the score phase")
        else:
            self._finished()
        return self._status(code, timed_out)

    def score(self) -> dict:
        """Let a held process score (it waited for every backend's generations), or a score-only one go on; wait
        for its end."""
        from harness.supervise import score_gate

        if self.held:
            self._open("score")
            score_gate(self.run_dir, self.backend).touch()
        code, timed_out = self._wait(None)
        if timed_out:
            self.stop(grace=0)
            code = self.proc.wait()
        else:
            self._finished()
        return self._status(code, timed_out)

    def _finished(self) -> None:
        self.proc.wait()  # before kill_descendants, whose reaping would take its exit status
        proctree.kill_descendants(spare=self.spare())  # whatever of it outlived it (re-parented to the driver)
        self.reader.join(timeout=10)

    def stop(self, grace: float) -> None:
        """Its process group (nox, supervisor) gets SIGTERM and `grace` seconds to take its worker tree down;
        then everything of it still alive is killed."""
        _stop_all([self], grace, self.spare())
        self.reader.join(timeout=5)

    def _status(self, code: int | None, timed_out: bool) -> dict:
        from harness.records import ErrorRecord, RecordWriter, records_path

        wall = time.monotonic() - self.t0
        phase, log = self.phase, self._log(self.phase)
        status = {"exit_code": code, "wall_s": round(wall, 2), "log": str(log.relative_to(self.run_dir)),
                  "timed_out": timed_out}
        if code != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
            reason = f"timed out after {self.args.timeout:.0f}s" if timed_out else f"exited with code {code}"
            with RecordWriter(records_path(self.run_dir, self.backend, phase)) as w:
                w.write(ErrorRecord(run_id=self.run_id, backend=self.backend, phase=phase,
                                    error_type="BackendProcessFailed", reason=f"{self.backend} {phase} {reason}",
                                    detail=tail))
            print(f"[parity] {self.backend} {phase} FAILED ({reason}); last lines:\n{tail}", file=sys.stderr,
                  flush=True)
        else:
            print(f"[parity] {self.backend} {phase} done in {wall:.1f}s", file=sys.stderr, flush=True)
        return status


def _stop_all(procs: list[BackendProcess], grace: float, spare: set[int]) -> None:
    """Each live process group (nox, supervisor) gets SIGTERM and, together, `grace` seconds to take its worker
    tree down; then everything below the driver but `spare` is killed."""
    live = [p for p in procs if p.proc.poll() is None]
    for p in live:
        proctree.kill_group(p.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    # not proc.wait(): nox dies at once, the supervisor (re-parented here when it does) takes a moment
    while time.monotonic() < deadline and any(q not in spare for q in proctree.descendants()):
        time.sleep(0.1)
    for p in procs:
        proctree.kill_group(p.proc.pid, signal.SIGKILL)
        p.proc.wait()  # before kill_descendants, whose reaping would take its exit status
    proctree.kill_descendants(spare=spare)


def _selftest_into(run_dir: Path) -> None:
    """The detection matrix of the committed golden run, so the report shows that these checks
    catch each known defect (`parity selftest` is the gate; this is the reviewer's copy)."""
    from harness.golden import GoldenError, default_golden
    from harness.selftest import SelftestError, run_selftest, write_result

    print("[parity] self-test: injecting known defects into the golden run ...", file=sys.stderr, flush=True)
    try:
        result = run_selftest(Path(default_golden()), repeats=1)
    except (GoldenError, SelftestError) as e:
        print(f"[parity] self-test not run: {e}", file=sys.stderr, flush=True)
        return
    write_result(run_dir, result)
    print(f"[parity] self-test: {'every defect caught' if result['passed'] else 'DETECTION GAPS: see the report'}",
          file=sys.stderr, flush=True)


def _bench_into(run_dir: Path, out: Path) -> None:
    """The last `parity bench` figures (OUT/bench/bench.json), so the report shows what each engine costs
    next to whether it agrees; the figures keep their own note (suite, repeats, load) and date."""
    src = out / "bench" / "bench.json"
    if not src.is_file():
        return
    try:
        doc = json.loads(src.read_text())
    except (OSError, ValueError) as e:
        print(f"[parity] {src} not shown in the report: {e}", file=sys.stderr, flush=True)
        return
    when = datetime.fromtimestamp(src.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc["note"] = f"from `parity bench` ({src}, {when}): " + str(doc.get("note", ""))
    (run_dir / "bench.json").write_text(json.dumps(doc, indent=1) + "\n")


def _check_inputs(args, suite, models: dict, backend: str) -> None:
    """Models and prompts, before a run directory exists (harness/inputs.py). Text prompts that may not fit
    the context are tokenized by one backend's `parity record --check-only` (the tokenizer lives there)."""
    from harness.inputs import InputError, check_models, check_prompts
    from harness.model import is_built_in

    try:
        config = check_models(models)
        if not check_prompts(suite, config):
            return
    except InputError as e:
        raise HarnessError(str(e)) from None
    record_args = ["--suite", str(Path(args.suite).resolve()), "--out", os.devnull, "--check-only",
                   "--dtype", args.dtype]
    if args.model:  # a zoo:NAME or embedded spec is not a path
        record_args += ["--model", args.model if is_built_in(args.model) else str(Path(args.model).resolve())]
    proc = subprocess.run(backend_command(backend, args.launcher, record_args), cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("parity record: error: ")]
        tail = f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        raise HarnessError(lines[0].split("error: ", 1)[-1] if lines else
                           f"checking the prompts in {backend}'s venv failed:\n{tail}")


def _served_backends(args) -> list[str]:
    """Backend names from --backends; NAME=URL entries (running servers) are exported to the recording
    processes (harness.backends.http.external), --fanout to the served backends."""
    from harness.backends.base import BACKENDS
    from harness.backends.http import external
    from harness.backends.http.server import ServerError

    from harness.backends import rollout_runner

    names = []
    for entry in (b.strip() for b in args.backends.split(",")):
        if "=" in entry and rollout_runner.is_spec(entry.partition("=")[2].strip()):
            try:  # a tunix BaseRollout of the user's: its recording process finds it in PARITY_ROLLOUT_<NAME>
                name, spec = rollout_runner.parse_entry(entry)
            except ValueError as e:
                raise HarnessError(str(e)) from None
            if name in BACKENDS:
                raise HarnessError(f"--backends entry {entry!r}: {name!r} is a built-in backend; choose another name")
            os.environ[rollout_runner.spec_env(name)] = spec
            names.append(name)
            continue
        if "=" in entry:
            try:
                name, url, kind = external.parse(entry)
                if name in BACKENDS:
                    raise ValueError(f"--backends entry {entry!r}: {name!r} is a built-in backend; choose another name")
                external.export(name, url, kind or external.detect(url))
            except (ValueError, ServerError) as e:
                raise HarnessError(str(e)) from None
            entry = name
        if entry:
            names.append(entry)
    for entry in getattr(args, "backend_python", None) or []:
        name, _, where = entry.partition("=")
        name, where = name.strip(), where.strip()
        if name not in names or rollout_runner.rollout_spec(name) is None or not where:
            raise HarnessError(f"--backend-python {entry!r}: NAME=WHERE for a rollout backend of --backends "
                               f"(NAME=module.path:Class, tunix_sglang_jax, tunix_vllm)")
        from harness.backends import registry

        if where not in registry.BACKENDS and where not in registry.VENVS and not Path(where).exists():
            raise HarnessError(f"--backend-python {entry!r}: {where} is neither a backend, a venv of the registry, "
                               f"nor an existing venv directory or interpreter")
        os.environ[rollout_runner.python_env(name)] = where
    if getattr(args, "fanout", None) is not None:
        if args.fanout < 1:
            raise HarnessError(f"--fanout {args.fanout}: at least 1")
        from harness.backends.options import options_class

        # the served backends' typed option (harness.backends.options.ServedOptions), resolved like --backend-opt
        args.backend_opt = list(getattr(args, "backend_opt", None) or []) + [
            f"{n}.fanout={args.fanout}" for n in names if "fanout" in options_class(n).model_fields]
    return names


def run_all(args) -> int:
    from harness.backends.base import BACKENDS, is_backend
    from harness.model import is_built_in, resolve
    from harness.suite import load_suite

    t_start = time.monotonic()
    # Configuration errors first: nothing is written for a bad suite, model or backend list.
    suite = load_suite(args.suite)
    backends = _served_backends(args)
    unknown = [b for b in backends if not is_backend(b)]
    if unknown or not backends:
        raise HarnessError(f"--backends {args.backends!r}: unknown {unknown}; choose from {sorted(BACKENDS)}, "
                           "tunix_sglang_jax, tunix_vllm, NAME=module.path:Class (any tunix BaseRollout) or NAME=URL")
    from harness.backends.base import _rollout

    for b in backends:  # a rollout backend's interpreter must exist before anything is written
        if _rollout(b) is not None:
            rollout_python(b, args.launcher)
    twice = sorted({b for b in backends if backends.count(b) > 1})
    if twice:
        raise HarnessError(f"--backends {args.backends!r}: {', '.join(twice)} given more than once (one record "
                           "file per backend and phase)")
    try:
        model = resolve(args.model, "A")
        model_b = resolve(args.model_b, "B") if args.model_b else (
            resolve(args.model, "B") if is_built_in(args.model) else None)
    except FileNotFoundError as e:
        raise HarnessError(str(e)) from None
    from harness.cli import run_dtype
    from harness.dtypes import checkpoint_dtype

    from harness.cli import backend_options

    options = {b: backend_options(b, suite, getattr(args, "backend_opt", None) or []) for b in backends}
    requested = args.dtype or suite.dtype or "auto"
    args.dtype = run_dtype(args, suite, model)
    _check_inputs(args, suite, {"A": model, "B": model_b}, backends[0])

    run_id = args.run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out)
    run_dir = out / run_id
    if run_dir.exists() and not args.resume:
        raise HarnessError(f"{run_dir} exists; pass --resume to continue it or choose another --run-id")
    if args.resume and not run_dir.exists():
        raise HarnessError(f"--resume: {run_dir} does not exist")
    try:
        old = read_manifest_dict(run_dir) if args.resume else {}
    except RunDirError as e:
        raise HarnessError(f"--resume: {e}") from None
    if old.get("dtype", args.dtype) != args.dtype:
        raise HarnessError(f"--resume: {run_dir} was recorded in {old['dtype']}, not {args.dtype}; records of "
                           f"two dtypes cannot be compared as one run (pass --dtype {old['dtype']})")
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = proctree.exclusive(run_dir / "state" / "run.lock")
    except proctree.Busy as e:
        raise HarnessError(f"{run_dir}: another `parity run` is writing this run ({e})") from None
    manifest = {
        "run_id": run_id, "suite": str(Path(args.suite).resolve()), "suite_name": suite.suite,
        "backends": backends, "model": model.as_dict(), "model_b": model_b.as_dict() if model_b else None,
        "dtype": args.dtype, "dtype_requested": requested, "checkpoint_dtype": checkpoint_dtype(model.path),
        "git_revision": git_revision(), "started_at": time.time(), "finished_at": None, "argv": sys.argv[1:],
        "backend_status": {b: {"phases": {}} for b in backends}, "interrupted": None, "interruptions": [],
        "backend_options": options,
    }
    if old:
        manifest["started_at"] = old.get("started_at", manifest["started_at"])
        manifest["interruptions"] = list(old.get("interruptions") or [])
    write_manifest(run_dir, manifest)
    print(f"[parity] run {run_id}: suite {suite.suite} ({len(suite.cases)} cases), backends {backends}, "
          f"model {model.name} {model.content_hash[:12]}, dtype {args.dtype}", file=sys.stderr, flush=True)

    proctree.become_subreaper()  # orphans of backend processes come back to this process, which kills them
    handlers = {sig: signal.signal(sig, _raise_interrupted) for sig in STOP_SIGNALS}
    before = set(proctree.descendants())
    where = {"backend": None, "phase": None}
    procs: dict[str, BackendProcess] = {}

    def spare_of(backend: str):
        """The driver's own children and every other backend's live process tree: not this backend's to kill."""
        def spare() -> set[int]:
            out = set(before)
            for other, q in procs.items():
                if other != backend and q.alive:
                    out |= {q.proc.pid, *proctree.descendants(q.proc.pid)}
            return out
        return spare

    try:
        # One process, so one engine start and compile, per backend: it generates, then holds its engine until
        # every backend has generated (the score phase scores them all).
        for b in backends:
            where.update(backend=b, phase="generate")
            procs[b] = BackendProcess(b, "all", args, run_dir, run_id, spare=spare_of(b))
            manifest["backend_status"][b]["phases"]["generate"] = procs[b].generate()
            write_manifest(run_dir, manifest)
        # Last to generate, first to score: that engine never waits, and the engines that do wait idle the
        # shortest time in total.
        for b in reversed(backends):
            where.update(backend=b, phase="score")
            if not procs[b].alive:  # it failed to generate, or died holding: a process of its own scores
                procs[b].stop(grace=0)
                procs[b] = BackendProcess(b, "score", args, run_dir, run_id, spare=spare_of(b))
            manifest["backend_status"][b]["phases"]["score"] = procs[b].score()
            write_manifest(run_dir, manifest)
        where.update(backend=None, phase="compare")
        return _compare_and_report(args, run_dir, out, manifest, summary_start=t_start)
    except Interrupted as e:
        for sig in STOP_SIGNALS:  # the cleanup below is bounded; a second Ctrl-C must not cut it short
            signal.signal(sig, signal.SIG_IGN)
        live = [p for p in procs.values() if p.alive]
        _stop_all(live, STOP_GRACE_S, before)
        for p in live:
            p.reader.join(timeout=5)
            p._note(f"stopped by {e.signal}")
        proctree.kill_descendants(spare=before)
        stop = {"signal": e.signal, "at": time.time(), **where}
        manifest["interrupted"] = stop
        manifest["interruptions"].append(stop)
        write_manifest(run_dir, manifest)
        print(f"[parity] run {run_id} INTERRUPTED by {e.signal} during {where['backend'] or ''} {where['phase']}: "
              f"every process of the run stopped; records so far kept in {run_dir} "
              f"(continue with --run-id {run_id} --resume)", file=sys.stderr, flush=True)
        return EXIT_ERROR
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
        os.close(lock)


def _compare_and_report(args, run_dir: Path, out: Path, manifest: dict, summary_start: float) -> int:
    from harness.compare import compare
    from harness.report import write_reports

    manifest["finished_at"] = time.time()  # the backends' work is done; the report shows this time
    write_manifest(run_dir, manifest)
    try:
        compared = compare(run_dir, args.suite)
        if not args.no_selftest:
            _selftest_into(run_dir)
        _bench_into(run_dir, out)
        summary = write_reports(run_dir, compared)
    except Exception as e:  # the records stay; say where they are
        raise HarnessError(f"compare/report failed on {run_dir}: {type(e).__name__}: {e}") from e
    latest = out / "latest"
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.exists():
        shutil.rmtree(latest)
    shutil.copytree(run_dir, latest, ignore=shutil.ignore_patterns("state"))
    wall = time.monotonic() - summary_start
    print(f"[parity] verdict {summary['verdict'].upper()}: {summary['counts']}  wall {wall:.0f}s\n"
          f"[parity] report: {latest / 'index.html'}  summary: {latest / 'summary.json'}", file=sys.stderr)
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL}.get(summary["verdict"], EXIT_ERROR)
