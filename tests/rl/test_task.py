"""The verifiable task and the per-step determinism every engine shares."""

import subprocess
import sys

from harness.rl import task
from harness.rl.config import RunConfig


def test_reward_counts_characters_against_the_budget():
    assert task.reward_one("the girl and the robot said", 12) == 2 / 12
    assert task.reward_one("Girl girl GIRL", 3) == 1.0
    assert task.reward_one("<|endoftext|>", 12) == 0.0
    assert task.reward_one("", 12) == 0.0


def test_reward_fn_gives_tunix_integer_counts():
    # tunix 0.1.7 PPO adds the score into an int32 tensor: fractions would become 0
    sink = []
    fn = task.make_reward_fn(12, sink)
    out = fn(["p", "q"], ["the girl girl", "nothing here"], mode="train")
    assert out == [2.0, 0.0]
    assert sink[0]["rewards"] == [2 / 12, 0.0] and sink[0]["mode"] == "train"


def test_prompts_and_seeds_are_pure_functions_of_seed_and_step():
    assert task.step_prompts(0, 3, 4) == task.step_prompts(0, 3, 4)
    assert task.step_prompts(0, 3, 4) != task.step_prompts(1, 3, 4)
    assert len(set(task.step_prompts(2, 0, 4))) == 4
    assert task.rollout_seed(0, 1) == task.rollout_seed(0, 1) != task.rollout_seed(0, 2)


def test_run_config_round_trip_and_labels():
    cfg = RunConfig(algo="ppo", engine="vllm", seed=2, stale_weights=True)
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert cfg.label == "vllm-stale" and cfg.batch_size == cfg.ppo_batch
    assert RunConfig(algo="grpo").lr == 0.05 and RunConfig(algo="ppo").lr == 0.02


def test_cli_help():
    for args in ([], ["run"], ["train"], ["compare"]):
        proc = subprocess.run([sys.executable, "-m", "harness.rl", *args, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "usage" in proc.stdout
