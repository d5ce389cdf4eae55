"""`python -m harness.backends.http.leash -- ARGV...`: run a server that cannot outlive its owner.

The owner (harness.backends.http.server.Server) starts this process in a new
session, so it leads a process group of its own, and holds the write end of
its stdin. The server (ARGV) is started as a child in the same group, and
every process the server spawns (vLLM's engine core, tokenizer workers) stays
in it. The group is killed with SIGKILL when

- stdin reaches end of file: the owner closed it, or died in any way at all
  (the kernel closes a dead process's pipes, SIGKILL included), or
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


def _kill_group() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)  # this process included: nothing is left to clean up
    except ProcessLookupError:
        pass


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
    code = proc.wait()
    print(f"[leash] server exited with status {code}", file=sys.stderr, flush=True)
    _kill_group()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
