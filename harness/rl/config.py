"""What one training run is: algorithm, engine, seed and the hyperparameters every engine shares."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from harness.backends import registry

ALGOS = ("grpo", "ppo")
#: engine name -> venv (nox session) it runs in: the baselines (tunix's VanillaRollout), then every backend of
#: the registry that names a rollout class (harness.backends.registry)
ENGINES = {name: e.venv for name, e in registry.rl_engines().items()}
DEFAULT_ENGINES = tuple(registry.rl_engines(defaults_only=True))
#: actor learning rate per algorithm (SGD, clipped at global norm 1): the reward rises over ~30 steps
ALGO_LR = {"grpo": 0.05, "ppo": 0.02}

#: rl.curve_parity's metrics: one number per training run (seed), compared between engines
PARITY_METRICS = {
    "auc": "reward over all steps",
    "final": "reward over the last {window} steps",
    "length": "completion length (tokens)",
    "mismatch_k3": "trainer-vs-rollout k3",
}
#: Equivalence margins per algorithm and metric: the largest difference between two engines' per-seed means
#: that counts as the same. Each is what its tier's design detects with >= 80% power at the seed-to-seed
#: spread measured in the committed power study (studies/rl-power/power.json; docs/rl.md, "Equivalence
#: and power"); tests/rl/test_power.py checks them against it.
DEFAULT_MARGINS = {  # GRPO 8, PPO 4 seeds per engine
    "grpo": {"auc": 0.16, "final": 0.25, "length": 0.21, "mismatch_k3": 1e-3},
    "ppo": {"auc": 0.17, "final": 0.28, "length": 0.8, "mismatch_k3": 1e-3},
}
LONG_MARGINS = {  # GRPO 16, PPO 10 seeds per engine
    "grpo": {"auc": 0.11, "final": 0.16, "length": 0.14, "mismatch_k3": 1e-3},
    "ppo": {"auc": 0.07, "final": 0.115, "length": 0.33, "mismatch_k3": 1e-3},
}
#: `run --tier`: seeds per engine for each algorithm, and margins, of a design (explicit --seeds / --margin
#: override them). GRPO's per-seed spread is about twice PPO's on this task (its curves end anywhere between
#: 0.17 and 0.72; pooled sd of the reward auc 0.070 against PPO's 0.033), so it needs about twice the seeds
#: for margins of the same size.
#: default: what `nox -s rl` runs on a 2-core CPU machine in under 30 minutes; long: the nightly tier.
TIERS = {
    "default": {"seeds": {"grpo": 8, "ppo": 4}, "margins": DEFAULT_MARGINS},
    "long": {"seeds": {"grpo": 16, "ppo": 10}, "margins": LONG_MARGINS},
}


def seeds_for(seeds: int | dict, algo: str) -> int:
    """Seeds per engine of an algorithm: `seeds` is one count for every algorithm or {algo: count}."""
    return int(seeds[algo]) if isinstance(seeds, dict) else int(seeds)


def describe_seeds(seeds: int | dict) -> str:
    return ", ".join(f"{a} {n}" for a, n in seeds.items()) if isinstance(seeds, dict) else str(seeds)


def margins_for(margins: dict, algo: str) -> dict[str, float]:
    """{algo: {metric: margin}} or a flat {metric: margin} for every algorithm -> the algorithm's margins."""
    if any(isinstance(v, dict) for v in margins.values()):
        return dict(margins.get(algo) or {})
    return dict(margins)


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
    # Test hooks (injected rollout defects): a real engine whose update_params is swallowed (stale
    # weights), or that samples at temperature_scale x the configured temperature (the trainer keeps it).
    stale_weights: bool = False
    temperature_scale: float = 1.0
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
        temp = f"-temp{self.temperature_scale:g}" if self.temperature_scale != 1.0 else ""
        return f"{self.engine}{'-stale' if self.stale_weights else ''}{temp}"

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
    def from_label(cls, label: str, **kwargs) -> "RunConfig":
        """'vllm', 'vanilla-stale', 'vllm-temp1.1' (engine, then the injected defects) -> a RunConfig."""
        engine, *hooks = label.split("-")
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {label!r}: choose from {sorted(ENGINES)}, optionally with -stale "
                             "and/or -temp<scale> (e.g. vanilla-stale, vllm-temp1.1)")
        opts: dict = {}
        for h in hooks:
            if h == "stale":
                opts["stale_weights"] = True
            elif h.startswith("temp"):
                try:
                    opts["temperature_scale"] = float(h[4:])
                except ValueError:
                    raise ValueError(f"{label!r}: -temp needs a number, e.g. -temp1.1") from None
                if not opts["temperature_scale"] > 0:
                    raise ValueError(f"{label!r}: the temperature scale must be > 0")
            else:
                raise ValueError(f"{label!r}: unknown suffix -{h} (known: -stale, -temp<scale>)")
        cfg = cls(engine=engine, **opts, **kwargs)
        if cfg.label != label:
            raise ValueError(f"{label!r}: write it as {cfg.label!r}")
        return cfg

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls(**json.loads(text))
