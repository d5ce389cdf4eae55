"""One process tree per run, owned by the driver: nothing a run starts outlives it, nothing writes twice.

A backend phase is a chain of processes: the driver (`parity run`), the backend's
nox session, the supervisor (`parity record`), its worker, and the engine's own
processes (vLLM's engine core, sglang-jax's scheduler). Several of these start
their own sessions, so a terminal's Ctrl-C reaches none of them, and a process
whose parent is killed is re-parented and keeps running. Three rules keep the
tree whole:

- the driver and each supervisor are child subreapers (Linux prctl): an orphan
  below them is re-parented to them, so `descendants()` still finds it and
  `kill_descendants()` reaps it;
- every process watches its owner (`watch_owner`): the supervisor the driver
  (PARITY_OWNER in its environment, else its parent), the worker its supervisor;
  when the owner is gone it kills what it owns and exits, so a SIGKILL anywhere
  in the chain takes everything below with it within a poll interval;
- `exclusive()` locks a file for the life of a writer (inherited by its worker),
  so a second writer on the same records is refused, not interleaved.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

PR_SET_CHILD_SUBREAPER = 36
OWNER_ENV = "PARITY_OWNER"
POLL_S = 0.5


def become_subreaper() -> bool:
    """Orphans below this process are re-parented to it (Linux); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the name (state, ppid, pgrp, ...) of a live process; None when gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name may contain spaces and parentheses
    return None if fields[0] in ("Z", "X") else fields


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, None when it is gone or a zombie."""
    fields = _fields(pid)
    return None if fields is None else (int(fields[1]), int(fields[19]))


def identity(pid: int | None = None) -> str:
    """"pid:start-time": a process, not a pid number the kernel may give to another one later."""
    pid = os.getpid() if pid is None else pid
    st = _stat(pid)
    return f"{pid}:{st[1] if st else 0}"


def alive(ident: str) -> bool:
    pid, start = (int(x) for x in ident.split(":"))
    st = _stat(pid)
    return st is not None and (start == 0 or st[1] == start)


def descendants(root: int | None = None) -> list[int]:
    """Every live process below `root` (default: this one), children before their children."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(0), []):
            out.append(c)
            todo.append(c)
    return out


def reap() -> None:
    """Collect exited children (orphans re-parented to a subreaper become its children)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_descendants(root: int | None = None, sig: int = signal.SIGKILL, spare: set[int] = frozenset()) -> list[int]:
    """Signal every process below `root` but those in `spare` (processes that were there before, which are not
    ours to kill); repeated until none is left (a dying process may fork)."""
    killed: list[int] = []
    for _ in range(20):
        pids = [p for p in descendants(root) if p not in spare]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
        if root in (None, os.getpid()):
            reap()
    return killed


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (zombies have ended)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _fields(int(entry))
            if fields is not None and int(fields[2]) == pgid:
                out.append(int(entry))
    return out


def wait_group_gone(pgid: int, within: float = 30.0) -> None:
    """Return once no member of a SIGKILLed group is left: the signal is delivered at once, but a process
    with a large address space (a JAX or torch engine) takes a while to be torn down. A member still
    there is killed again (by pid, in case it left the group)."""
    if not os.path.isdir("/proc"):  # no procfs: nothing to wait on
        return
    end = time.monotonic() + within
    while (left := group_members(pgid)) and time.monotonic() < end:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)


def watch_owner(owner: str, on_gone: Callable[[], None], poll: float = POLL_S) -> threading.Thread:
    """Call `on_gone` (which should end this process) once the owner process is gone."""
    def loop() -> None:
        while alive(owner):
            time.sleep(poll)
        on_gone()

    t = threading.Thread(target=loop, name="owner-watch", daemon=True)
    t.start()
    return t


def owner_from_env() -> str:
    """The process this one belongs to: PARITY_OWNER (the driver), else the parent."""
    return os.environ.get(OWNER_ENV) or identity(os.getppid())


class Busy(RuntimeError):
    """Another live process holds the lock."""


def exclusive(path: Path) -> int:
    """Hold an exclusive lock on `path` until this process (and every child it passes the fd to) ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        raise Busy(f"{path} is held by process {holder or '?'}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
