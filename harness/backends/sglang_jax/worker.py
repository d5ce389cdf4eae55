"""The engine process: `python -m harness.backends.sglang_jax.worker`, driven by engine.EngineProcess.

Protocol on stdin/stdout: length-prefixed pickles. The first message is
("init", {model_path, engine_kwargs, compat_off}); then ("<op>", kwargs) calls
LocalEngine.<op>(**kwargs) and answers ("ok", result) or ("err", (type, message,
traceback)); ("exit", {}) ends the process. Anything the engine or its
libraries print goes to stderr: fd 1 is pointed at fd 2 before the engine is
imported, and the protocol keeps a private duplicate of the original stdout.
Nothing here imports flax/jax before the compat env workarounds are set.
"""

from __future__ import annotations

import os
import sys
import traceback


def main() -> int:
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    sys.stdout = sys.stderr
    proto_in = sys.stdin.buffer

    from harness.backends.sglang_jax.engine import LocalEngine, recv_msg, send_msg

    engine = None
    while True:
        try:
            op, kwargs = recv_msg(proto_in)
        except EOFError:
            break
        if op == "exit":
            break
        try:
            if op == "init":
                engine = LocalEngine(**kwargs)
                result = engine.info()
            elif engine is None:
                raise RuntimeError("engine not initialised")
            else:
                result = getattr(engine, op)(**kwargs)
            send_msg(proto_out, ("ok", result))
        except Exception as e:  # noqa: BLE001 - reported to the parent, engine stays up
            send_msg(proto_out, ("err", (type(e).__name__, str(e), traceback.format_exc(limit=20))))
            if op == "init":
                break
    proto_out.flush()
    # Engine.shutdown() would kill this process's children (there are none in single-process
    # mode) and atexit hooks may hang on engine threads: leave at once.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
