"""sglang-jax backend: SglangJaxRollout (tunix BaseRollout) on the real sglang-jax Engine.

- rollout.py: SglangJaxRollout and its batch API (generate_batch, score_batch, get_per_token_logps)
- runner.py: SglangJaxRunner, the harness Runner
- engine.py: the Engine in-process (LocalEngine) or in its own process (EngineProcess)
- worker.py: the engine process
- compat.py: every runtime workaround for sglang-jax 0.0.2 defects, individually switchable

Importing this package imports neither jax, flax nor sgl_jax: the engine's process
must set compat env variables before flax is first imported.
"""
