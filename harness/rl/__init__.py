"""RL reward curves per rollout engine: tunix GRPO/PPO trained through each engine."""
