"""What one training run is: algorithm, engine, seed and the hyperparameters every engine shares."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

ALGOS = ("grpo", "ppo")
#: engine name -> venv (nox session) it runs in
ENGINES = {"vanilla": "rl_sglang", "sglang_jax": "rl_sglang", "vllm": "rl_vllm"}
DEFAULT_ENGINES = ("vanilla", "sglang_jax", "vllm")
#: actor learning rate per algorithm (SGD, clipped at global norm 1): the reward rises over ~30 steps
ALGO_LR = {"grpo": 0.05, "ppo": 0.02}


@dataclass
class RunConfig:
    """Everything that decides a run's numbers. Identical across engines except `engine`."""

    algo: str = "grpo"
    engine: str = "vanilla"
    seed: int = 0
    steps: int = 30
    # GRPO: prompts_per_step prompts x num_generations samples; PPO: ppo_batch prompts, one sample each.
    prompts_per_step: int = 4
    num_generations: int = 4
    ppo_batch: int = 16
    max_tokens: int = 12
    max_prompt_length: int = 8
    temperature: float = 1.0  # 1.0 and no top-k/top-p: every engine's logprob mode means the same thing
    # Plain SGD on a clipped gradient: Adam's per-parameter normalisation blows tiny, noisy gradients
    # (the ~130 reserved tokens' lm_head columns) up to full-size steps and the policy drifts into them;
    # unclipped SGD collapses on the occasional huge gradient. Measured on the embedded model, 30 steps.
    optimizer: str = "sgd"  # sgd | adam
    actor_lr: float | None = None  # None: ALGO_LR[algo]
    critic_lr: float = 0.05
    adam_eps: float = 1e-8
    grad_clip: float | None = 1.0  # global-norm clipping before the optimizer
    beta: float = 0.0  # no reference model (saves a forward pass; KL is not what is compared)
    epsilon: float = 0.2
    weights: str = "A"  # embedded model weight set
    model: str | None = None  # or a local HF directory of a Qwen3 model
    # The test hook: a real engine whose update_params is swallowed (stale weights).
    stale_weights: bool = False
    # Also score the rollout's samples with the engine's get_per_token_logps (teacher forcing).
    score_with_engine: bool = True
    # tunix 0.1.7's Qwen3 ignores config.rope_theta (see harness.rl.train.patch_tunix_rope)
    fix_tunix_rope: bool = True
    # GRPO groups on sglang_jax/vllm: "n" asks for n samples per distinct prompt (distinct seeds),
    # "repeat" passes RLCluster's repeated prompts through unchanged (see harness.rl.engines).
    group_mode: str = "n"
    engine_options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.engine}{'-stale' if self.stale_weights else ''}"

    @property
    def lr(self) -> float:
        return self.actor_lr if self.actor_lr is not None else ALGO_LR[self.algo]

    @property
    def batch_size(self) -> int:
        """Samples per step."""
        return self.prompts_per_step * self.num_generations if self.algo == "grpo" else self.ppo_batch

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls(**json.loads(text))
