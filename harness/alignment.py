"""Which logit row scores which token: the one alignment rule every backend must follow.

For a sequence `prompt + completion` run teacher-forced, row r of the logits
predicts token r+1. So completion token i is scored by row len(prompt)-1+i,
and prompt token j (j >= 1) by row j-1; prompt token 0 has no score (None).
Worked example: prompt [0, 1, 2], greedy output [1, 4]: the last
prefill row scores the first output token, the first decode row the second.
"""

from __future__ import annotations

import numpy as np


def completion_rows(prompt_len: int, completion_len: int) -> list[int]:
    if prompt_len < 1:
        raise ValueError("a prompt has at least one token")
    return [prompt_len - 1 + i for i in range(completion_len)]


def prompt_rows(prompt_len: int) -> list[int | None]:
    return [None] + list(range(prompt_len - 1))


def pick(rows: np.ndarray, prompt: list[int], completion: list[int]) -> list[float]:
    """Values of `rows` (teacher-forced logits or logprobs over prompt+completion) at each
    completion token, aligned as above."""
    rows = np.asarray(rows)
    need = len(prompt) + len(completion) - 1
    if rows.shape[0] < need:
        raise ValueError(f"{rows.shape[0]} rows cannot score {len(completion)} tokens after a {len(prompt)}-token prompt")
    return [float(rows[r, t]) for r, t in zip(completion_rows(len(prompt), len(completion)), completion)]


def pick_prompt(rows: np.ndarray, prompt: list[int]) -> list[float | None]:
    rows = np.asarray(rows)
    return [None if r is None else float(rows[r, prompt[j]]) for j, r in enumerate(prompt_rows(len(prompt)))]
