"""The verifiable task: say the story's characters.

The embedded model is a bigram model of a children's story corpus, so its
samples already mention the characters now and then ("the girl", "the robot",
"the cat"). The reward is the fraction of the completion's word slots that
name one of them: hits / max_tokens, a dense reward whose base rate under the
initial weights is about 0.1 and which the policy can raise by shifting
probability mass onto a handful of lm_head rows. The denominator is the
generation budget, not the completion length, so stopping early cannot game
it (one "girl" then EOS scores 1/max_tokens, not 1.0).

What tunix receives is the hit count itself (0..max_tokens, integer-valued),
and the curves report hits / max_tokens. The count is not a choice of taste:
tunix 0.1.7's PPOLearner builds its token-level reward tensor with
`jnp.zeros_like(completion_ids)` (int32) and scatter-adds the score into it,
so any fractional reward is truncated to 0 and PPO never learns. GRPO's
group-normalised advantage does not care about the scale.

Pure Python: the driver (no jax) and every engine venv import this.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

TARGET_WORDS = frozenset({"girl", "robot", "cat"})

#: Sentence openings from the corpus; every run draws its per-step prompts from these.
PROMPTS = (
    "The robot", "The girl", "The cat", "The ship", "The captain", "The river",
    "The sun", "The bird", "The book", "In the kitchen", "After breakfast", "At noon",
    "The old man", "They walked", "She said", "It found",
)

_WORD = re.compile(r"\w+")


def hits(completion: str, max_tokens: int) -> int:
    words = _WORD.findall(completion.lower())
    return min(max_tokens, sum(w in TARGET_WORDS for w in words))


def reward_one(completion: str, max_tokens: int) -> float:
    """The reward as the curves report it: the fraction of the generation budget naming a character."""
    return hits(completion, max_tokens) / float(max_tokens)


def make_reward_fn(max_tokens: int, sink: list | None = None):
    """tunix reward_fn(prompts, completions, **kw) -> hit counts (integer-valued floats, see above);
    each call's fractional rewards go to `sink`."""

    def character_reward(prompts: Sequence[str], completions: Sequence[str], **kwargs) -> list[float]:
        counts = [hits(c, max_tokens) for c in completions]
        if sink is not None:
            sink.append({"prompts": list(prompts), "completions": list(completions),
                         "rewards": [c / float(max_tokens) for c in counts],
                         "mode": str(kwargs.get("mode", "train"))})
        return [float(c) for c in counts]

    return character_reward


def step_prompts(seed: int, step: int, n: int) -> list[str]:
    """The `n` prompts of `step` for `seed`: the same on every engine (a pure function of seed and step)."""
    rng = np.random.default_rng([seed, step, 0x7A5C])
    idx = rng.choice(len(PROMPTS), size=n, replace=False)
    return [PROMPTS[i] for i in idx]


def rollout_seed(seed: int, step: int) -> int:
    """The sampling seed handed to the engine at `step` (tunix never advances RolloutConfig.seed itself)."""
    return int(np.random.default_rng([seed, step, 0x5EED]).integers(0, 2**31 - 1))
