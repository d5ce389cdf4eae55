"""Keep a backend's crash or hang to the case it happened in.

`parity record` runs the engine in a worker subprocess and watches the state
file in which the worker names the case in flight. If the worker dies (an
exception outside a case, SIGKILL from the engine itself or the kernel's OOM
killer) or a case runs past its timeout, the supervisor records that case as
an error with the reason, and starts a new worker, which skips every case
already recorded (records are written a case at a time). Nothing recorded is
lost, and the other cases still run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.records import CaseKey, ErrorRecord, RecordWriter, records_path

MAX_RESTARTS = 5


def _describe(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (SIGKILL: the engine killed its own process, or the kernel ran out of memory)" if code == -9 else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with code {code}"


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def supervise(worker_argv: list[str], *, run_dir: Path, backend: str, run_id: str, suite_name: str,
              case_timeout: float, poll: float = 0.25) -> int:
    state = Path(run_dir) / "state" / f"{backend}.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    restarts = 0
    while True:
        state.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "harness", *worker_argv, "--worker", "--state", str(state)],
                                start_new_session=True)
        reason = None
        try:
            while proc.poll() is None:
                time.sleep(poll)
                info = _read(state)
                if info and time.time() - info["started_at"] > case_timeout:
                    _kill(proc)
                    reason = f"case timed out after {case_timeout:.0f}s (worker killed)"
        except KeyboardInterrupt:
            _kill(proc)
            raise
        code = proc.returncode
        info = _read(state)
        if info is None:  # finished its phases (it clears the state file), or died before any case
            if code in (0, 2):
                return 2 if restarts else code
            _write_error(run_dir, backend, run_id, None, suite_name,
                         f"{_describe(code)} before its first case (engine start failed?)", "WorkerCrashed")
            return 2
        reason = reason or f"{_describe(code)} during this case"
        print(f"[supervisor] {backend} {info['phase']} case {info['case_id']}: {reason}; recorded as an error, "
              "continuing with the remaining cases", file=sys.stderr, flush=True)
        _write_error(run_dir, backend, run_id, info, suite_name, reason,
                     "CaseTimeout" if "timed out" in reason else "WorkerCrashed")
        restarts += 1
        if restarts > MAX_RESTARTS:
            _write_error(run_dir, backend, run_id, None, suite_name,
                         f"gave up after {MAX_RESTARTS} worker restarts", "TooManyRestarts")
            return 2


def _read(state: Path) -> dict | None:
    try:
        return json.loads(state.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_error(run_dir: Path, backend: str, run_id: str, info: dict | None, suite_name: str, reason: str,
                 error_type: str) -> None:
    phase = info["phase"] if info else "generate"
    key = None
    if info:
        key = CaseKey(suite=suite_name, case_id=info["case_id"], case_hash=info["case_hash"],
                      weights=info["weights"], prompt_index=-1)
    with RecordWriter(records_path(run_dir, backend, phase)) as w:
        w.write(ErrorRecord(run_id=run_id, backend=backend, phase=phase, key=key, reason=reason,
                            error_type=error_type, source_backend=(info or {}).get("source_backend") or None))
