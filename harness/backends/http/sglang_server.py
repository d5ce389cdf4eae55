"""`python -m harness.backends.http.sglang_server CONFIG_JSON`: sglang-jax's own HTTP server, with the compat
workarounds the in-process engine gets.

sglang-jax 0.0.2 does not run on CPU without them (harness.backends.sglang_jax.compat, docs/sglang_jax.md):
the env-phase ones must be set before flax is imported and the patch-phase ones replace sampler, logprob and
model functions in the process that runs the scheduler. `launch_server` with `enable_single_process` runs the
scheduler as threads of this process, so applying them here, before sgl_jax is imported, gives the server the
engine LocalEngine builds. Then sgl_jax's `launch_server` serves `/generate` on CONFIG's host and port.

CONFIG: {"model_path", "host", "port", "engine_kwargs" (ServerArgs fields over engine.CPU_ENGINE_DEFAULTS),
"compat_off" (workaround names)}.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    from harness.backends.sglang_jax import compat
    from harness.backends.sglang_jax.engine import CPU_ENGINE_DEFAULTS

    kwargs = {**CPU_ENGINE_DEFAULTS, **(cfg.get("engine_kwargs") or {})}
    if kwargs.get("device") == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    c = compat.CompatConfig.from_env(cfg.get("compat_off"))
    env_done = compat.apply_env(c)
    patched = compat.apply_patches(c)
    from harness import paths

    cache = paths.enable_jax_compile_cache()  # as LocalEngine (PARITY_JAX_CACHE=off disables)
    print(f"[sglang_server] compat env {env_done}, patches {patched}, jax compile cache {cache}",
          file=sys.stderr, flush=True)

    from sgl_jax.srt.entrypoints.http_server import launch_server
    from sgl_jax.srt.server_args import ServerArgs

    args = ServerArgs(model_path=cfg["model_path"], host=cfg["host"], port=int(cfg["port"]), **kwargs)
    launch_server(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
