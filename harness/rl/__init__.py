"""RL reward curves per rollout engine (issue 7): tunix GRPO/PPO trained through each engine."""
