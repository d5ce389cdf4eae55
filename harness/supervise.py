"""Keep a backend's crash or hang to the case it happened in.

`parity record` runs the engine in a worker subprocess and watches the state
file in which the worker names the case in flight. If the worker dies (an
exception outside a case, SIGKILL from the engine itself or the kernel's OOM
killer) or a case runs past its timeout, the supervisor records that case as
an error with the reason, and starts a new worker, which skips every case
already recorded (records are written a case at a time). Nothing recorded is
lost, and the other cases still run.

A new `parity record` on the same run directory repairs before it starts:
error records of earlier attempts are dropped (so those cases run again) and
so are the records of a case that was in flight when a process was killed
(its state file is left behind), so every case ends complete or absent. The
supervisor owns its worker's process tree (harness/proctree.py): a signal, or
the death of the driver that started it, kills the worker and the engine's
processes before the supervisor exits, and a lock refuses a second writer.

Held between the phases (`parity record --phase all --hold`, what `parity run`
asks for): one engine serves both phases. The score phase needs every
backend's generations, so after its generate phase the worker keeps its
engine and waits (no case in flight: the state file says `waiting`); the
supervisor then reports the generate phase's exit code in
state/<backend>.generated.json, and the driver starts the score phase by
creating state/<backend>.score-go once the other backends have generated.
When there is nothing left to generate (a resumed run), no engine starts
until the score phase has work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from harness import proctree
from harness.records import CaseKey, ErrorRecord, RecordWriter, prune_records, records_path

MAX_RESTARTS = 5


def generated_path(run_dir: Path, backend: str) -> Path:
    """Written by a holding supervisor when the generate phase is over: {"exit_code": N}."""
    return Path(run_dir) / "state" / f"{backend}.generated.json"


def score_gate(run_dir: Path, backend: str) -> Path:
    """Created by the driver when a holding backend may score (every backend's generations are recorded)."""
    return Path(run_dir) / "state" / f"{backend}.score-go"


def wait_for(path: Path, poll: float = 0.1) -> None:
    while not path.exists():
        time.sleep(poll)


def _describe(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (SIGKILL: the engine killed its own process, or the kernel ran out of memory)" if code == -9 else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with code {code}"


def _kill(proc: subprocess.Popen) -> None:
    """The worker, its process group and anything of it re-parented to this (subreaper) process."""
    proctree.kill_group(proc.pid)
    proc.wait()  # before kill_descendants, whose reaping would take its exit status
    proctree.kill_descendants()


class _Stopped(BaseException):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum, frame) -> None:
    raise _Stopped(signum)


def repair(run_dir: Path, backend: str, phases: list[str]) -> None:
    """Before a new attempt: drop error records (their cases run again) and the records of a case left in
    flight by a killed process (possibly cut short), so that every case ends complete or absent."""
    state = _read(Path(run_dir) / "state" / f"{backend}.json")
    for phase in phases:
        def stale(doc: dict) -> bool:
            if doc.get("kind") == "error":
                return True
            key = doc.get("key") or {}
            return bool(state) and not state.get("waiting") and state["phase"] == phase \
                and key.get("case_hash") == state["case_hash"] \
                and (doc.get("source_backend") or "") == (state.get("source_backend") or "")

        dropped = prune_records(records_path(run_dir, backend, phase), stale)
        if dropped:
            print(f"[supervisor] {backend} {phase}: {dropped} record(s) of failed or interrupted cases dropped; "
                  "those cases run again", file=sys.stderr, flush=True)
    if state and state["phase"] in phases:
        (Path(run_dir) / "state" / f"{backend}.json").unlink(missing_ok=True)


def take_lock(run_dir: Path, backend: str) -> int:
    """The backend's writer lock on this run (held by supervisor and worker): one writer per record file."""
    try:
        return proctree.exclusive(Path(run_dir) / "state" / f"{backend}.lock")
    except proctree.Busy as e:
        raise RuntimeError(f"another process is recording {backend} into {run_dir} ({e}); refusing to be a "
                           "second writer") from None


def supervise(worker_argv: list[str], *, lock: int, run_dir: Path, backend: str, run_id: str, suite_name: str,
              case_timeout: float, poll: float = 0.25, phase: str = "all", hold: bool = False,
              todo: Callable[[str], bool] | None = None) -> int:
    """Run the worker until every case is recorded (or given up on); `lock` is take_lock's, taken before the
    caller's repair(). `worker_argv` is the worker's `record` command line without --phase. With `hold` (both
    phases, one engine; the module docstring), `todo(phase)` says whether a phase has cases left."""
    state = Path(run_dir) / "state" / f"{backend}.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    proctree.become_subreaper()
    current: list[subprocess.Popen] = []

    def owner_gone() -> None:  # the driver died (even by SIGKILL): take the worker tree along
        for p in current:
            _kill(p)
        os._exit(2)

    proctree.watch_owner(proctree.owner_from_env(), owner_gone)
    old = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    run = lambda argv, hold_: _supervise(argv, state, lock, current, run_dir=run_dir, backend=backend,  # noqa: E731
                                         run_id=run_id, suite_name=suite_name, case_timeout=case_timeout,
                                         poll=poll, hold=hold_)
    try:
        if not hold:
            return run([*worker_argv, "--phase", phase], False)
        generated_path(run_dir, backend).unlink(missing_ok=True)  # an earlier attempt's report and go
        score_gate(run_dir, backend).unlink(missing_ok=True)
        if todo is None or todo("generate"):
            return run([*worker_argv, "--phase", "all", "--hold"], True)
        # a resumed run with every generation recorded: no engine until the score phase has work
        _report_generated(run_dir, backend, 0)
        print(f"[supervisor] {backend} generate: every case already recorded; waiting for the score phase",
              file=sys.stderr, flush=True)
        wait_for(score_gate(run_dir, backend))
        if not todo("score"):
            print(f"[supervisor] {backend} score: every case already recorded", file=sys.stderr, flush=True)
            return 0
        return run([*worker_argv, "--phase", "score"], False)
    except _Stopped as e:
        for sig in old:  # a second signal (nox follows Ctrl-C with SIGTERM) must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        for p in current:
            _kill(p)
        print(f"[supervisor] {backend}: stopped by {e}; the case in flight is not recorded (a resumed run "
              "records it)", file=sys.stderr, flush=True)
        return 2
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _report_generated(run_dir: Path, backend: str, code: int) -> None:
    path = generated_path(run_dir, backend)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"exit_code": code, "at": time.time()}) + "\n")
    tmp.replace(path)


def _supervise(worker_argv: list[str], state: Path, lock: int, current: list, *, run_dir: Path, backend: str,
               run_id: str, suite_name: str, case_timeout: float, poll: float, hold: bool) -> int:
    restarts = 0  # in the phase under way: a holding worker's generate restarts are the generate phase's code
    total = 0
    reported = not hold
    while True:
        state.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "harness", *worker_argv, "--worker", "--state", str(state)],
                                start_new_session=True, pass_fds=(lock,))
        current[:] = [proc]
        reason = None
        while proc.poll() is None:
            time.sleep(poll)
            info = _read(state)
            if info and info.get("waiting"):  # between the phases, engine kept: no case, so no case timeout
                if not reported:
                    _report_generated(run_dir, backend, 2 if info.get("generate_errors") or restarts else 0)
                    reported, restarts = True, 0
                continue
            if info and time.time() - info["started_at"] > case_timeout:
                _kill(proc)
                reason = f"case timed out after {case_timeout:.0f}s (worker killed)"
        _kill(proc)  # engine processes the worker left behind
        current.clear()
        code = proc.returncode
        info = _read(state)
        if info is None:  # finished its phases (it clears the state file), or died before any case
            if code in (0, 2):
                return 2 if restarts else code
            _write_error(run_dir, backend, run_id, None, suite_name,
                         f"{_describe(code)} before its first case (engine start failed?)", "WorkerCrashed",
                         phase="score" if reported and hold else "generate")
            return 2
        if info.get("waiting"):
            if not reported:  # it had finished generating
                _report_generated(run_dir, backend, 2 if info.get("generate_errors") or restarts else 0)
                reported, restarts = True, 0
            reason = f"{_describe(code)} while it held the engine between the phases (no case in flight)"
            print(f"[supervisor] {backend}: {reason}; recorded as an error, starting a new worker",
                  file=sys.stderr, flush=True)
            _write_error(run_dir, backend, run_id, None, suite_name, reason, "WorkerCrashed", phase="score")
        else:
            reason = reason or f"{_describe(code)} during this case"
            print(f"[supervisor] {backend} {info['phase']} case {info['case_id']}: {reason}; recorded as an error, "
                  "continuing with the remaining cases", file=sys.stderr, flush=True)
            _write_error(run_dir, backend, run_id, info, suite_name, reason,
                         "CaseTimeout" if "timed out" in reason else "WorkerCrashed")
        restarts += 1
        total += 1
        if total > MAX_RESTARTS:
            _write_error(run_dir, backend, run_id, None, suite_name,
                         f"gave up after {MAX_RESTARTS} worker restarts", "TooManyRestarts",
                         phase="score" if reported and hold else "generate")
            return 2


def _read(state: Path) -> dict | None:
    try:
        return json.loads(state.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_error(run_dir: Path, backend: str, run_id: str, info: dict | None, suite_name: str, reason: str,
                 error_type: str, phase: str = "generate") -> None:
    phase = info["phase"] if info else phase
    key = None
    if info:
        key = CaseKey(suite=suite_name, case_id=info["case_id"], case_hash=info["case_hash"],
                      weights=info["weights"], prompt_index=-1)
    path = records_path(run_dir, backend, phase)
    if info:  # whatever of the crashed case reached the file (a write cut short) goes: complete or absent
        prune_records(path, lambda d: (d.get("key") or {}).get("case_hash") == info["case_hash"]
                      and (d.get("source_backend") or "") == (info.get("source_backend") or ""))
    with RecordWriter(path) as w:
        w.write(ErrorRecord(run_id=run_id, backend=backend, phase=phase, key=key, reason=reason,
                            error_type=error_type, source_backend=(info or {}).get("source_backend") or None))
