"""rollout-parity: conformance and parity harness for RL rollout engines."""
