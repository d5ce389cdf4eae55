"""`python -m harness.backends.http.leash -- ARGV...`: run a server that cannot outlive its owner.

The owner (harness.backends.http.server.Server) starts this process in a new
session, so it leads a process group of its own, and holds the write end of
its stdin. The server (ARGV) is started as a child in the same group, and
every process the server spawns (vLLM's engine core, tokenizer workers) stays
in it. The group is killed with SIGKILL when

- stdin reaches end of file: the owner closed it, or died in any way at all
  (the kernel closes a dead process's pipes, SIGKILL included), or
- any process of the owner's ancestry (PARITY_LEASH_ANCESTORS, "pid:starttime"
  pairs from /proc, so a reused pid does not count) is gone: Ctrl-C of the
  `parity run` driver ends the servers even while the processes between it
  and the owner (nox, the record supervisor, its worker) are still alive, or
- the server exits by itself (its status becomes this process's status), or
- this process gets SIGTERM/SIGINT/SIGHUP.

So no server process survives the recording process that started it, whatever
ends that process: a normal close, an exception, a supervisor's timeout kill,
Ctrl-C of the driver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time


def _kill_group() -> None:
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)  # this process included: nothing is left to clean up
    except ProcessLookupError:
        pass


def start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), None when it has ended."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has ended, reaped or not


def ancestry(pid: int | None = None) -> list[tuple[int, str]]:
    """(pid, start time) of `pid` (default: this process) and each of its ancestors below init."""
    out: list[tuple[int, str]] = []
    pid = pid or os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            break
        out.append((pid, fields[19]))
        pid = int(fields[1])
    return out


def _watch_ancestors(spec: str, poll: float = 0.5) -> None:
    pairs = [(int(p), t) for p, t in (x.split(":") for x in spec.split(",") if x)]
    while True:
        if any(start_time(pid) != t for pid, t in pairs):
            _kill_group()
        time.sleep(poll)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: python -m harness.backends.http.leash -- ARGV...", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: _kill_group())
    proc = subprocess.Popen(argv[1:], stdin=subprocess.DEVNULL)

    def watch_owner() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            _kill_group()

    threading.Thread(target=watch_owner, daemon=True).start()
    if os.environ.get("PARITY_LEASH_ANCESTORS"):
        threading.Thread(target=_watch_ancestors, args=(os.environ["PARITY_LEASH_ANCESTORS"],), daemon=True).start()
    code = proc.wait()
    print(f"[leash] server exited with status {code}", file=sys.stderr, flush=True)
    _kill_group()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
