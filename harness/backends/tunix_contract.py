"""tunix's `BaseRollout` contract, written once for every rollout of this package.

`SglangJaxRollout`, `VllmRollout` and the generic runner of any user rollout
(harness/backends/rollout_runner.py) share what the contract leaves to each
implementation, so that the rollouts differ only in their engine:

- the contract's classes: tunix's own `BaseRollout`, `RolloutConfig` and
  `RolloutOutput` when tunix is importable, else stand-ins with the same
  methods, fields and defaults (the parity venvs have no tunix);
- the row-seed rule (`row_seed`): one `RolloutConfig.seed` seeds a whole
  batch, and RLCluster's GRPO repeats each prompt `num_generations` times in
  it, so every row gets its own seed, the same on every call;
- the unpadding rule of `get_per_token_logps` (`unpad_for_logps`);
- padding the rows of one `generate` into a `RolloutOutput`
  (`rollout_output`).

Parameters in (`update_params`) go through `harness.rl.weights.to_hf_named`.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import zlib
from typing import Any, Optional, Sequence, Tuple

import numpy as np

SEED_MASK = 0x7FFFFFFF  # both engines keep sampling seeds as non-negative int32

try:  # subclass tunix's own classes where tunix is installed (the RL venvs)
    from tunix.rl.rollout.base_rollout import BaseRollout, RolloutConfig, RolloutOutput  # type: ignore

    TUNIX = True
except Exception:  # noqa: BLE001 - any import failure means: no tunix here
    TUNIX = False

    class BaseRollout(abc.ABC):  # type: ignore[no-redef]
        """Stand-in with tunix.rl.rollout.base_rollout.BaseRollout's methods."""

        @abc.abstractmethod
        def generate(self, prompts: list[str], rollout_config: Any, **kwargs: Any) -> Any:
            """Generates samples from the model."""

        @abc.abstractmethod
        def get_per_token_logps(self, prompt_tokens: Any, completion_tokens: Any,
                                completion_mask: Any | None = None) -> Any:
            """Returns per-token log probabilities from the model."""

        @abc.abstractmethod
        def update_params(self, params: Any, filter_types: Optional[Tuple[Any, ...]] = None) -> None:
            """Updates the rollout model parameters."""

        @abc.abstractmethod
        def pad_id(self) -> int:
            """Returns the pad id."""

        @abc.abstractmethod
        def eos_id(self) -> int:
            """Returns the eos id."""

        @abc.abstractmethod
        def model(self) -> Any:
            """Returns the rollout model."""

    @dataclasses.dataclass
    class RolloutOutput:  # type: ignore[no-redef]
        """Same fields as tunix's RolloutOutput."""

        text: list[str]
        logits: Any
        tokens: Any
        left_padded_prompt_tokens: np.ndarray
        logprobs: Any

    @dataclasses.dataclass
    class RolloutConfig:  # type: ignore[no-redef]
        """The fields of tunix 0.1.7's RolloutConfig that this package's rollouts read (same names, defaults)."""

        max_tokens_to_generate: int = 64
        temperature: float = 0.9
        top_p: float | None = 1.0
        top_k: int | None = None
        seed: Any = None
        max_prompt_length: int = 64
        kv_cache_size: int = 1024
        data_type: Any = None
        eos_tokens: list[int] | None = None
        return_logprobs: bool = False
        rollout_vllm_model_version: str = ""
        rollout_vllm_max_num_seqs: int | None = None
        rollout_vllm_max_num_batched_tokens: int | None = None
        rollout_vllm_logprobs_mode: str | None = None
        rollout_vllm_kwargs: dict = dataclasses.field(default_factory=dict)
        rollout_vllm_sampling_kwargs: dict = dataclasses.field(default_factory=dict)
        rollout_sglang_jax_model_version: str = ""
        rollout_sglang_jax_context_length: int | None = None
        rollout_sglang_jax_max_running_requests: int | None = None
        rollout_sglang_jax_precompile_bs_paddings: list[int] | None = None
        rollout_sglang_jax_precompile_token_paddings: list[int] | None = None
        rollout_sglang_jax_kwargs: dict = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------ seeds
def seed_int(seed: Any) -> int | None:
    """RolloutConfig.seed as an int: tunix allows an int or an array (a jax PRNG key); an array of
    one integer is that integer, any other array the CRC-32 of its bytes (31 bits)."""
    if seed is None:
        return None
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    arr = np.asarray(seed)
    if arr.size == 1 and arr.dtype.kind in "iu":
        return int(arr.reshape(()))
    return zlib.crc32(np.ascontiguousarray(arr).tobytes()) & SEED_MASK


def row_seed(seed: int, row: int, rows: int) -> int:
    """The seed of row `row` of a `generate` batch of `rows` prompts that shares RolloutConfig.seed `seed`.

    One row: `seed` itself (hashed as below when it does not fit 31 bits). Several rows: the first 31
    bits of blake2b("rollout-row:{seed}:{row}"), so that a prompt repeated in the batch (RLCluster's
    GRPO groups) gets distinct samples, the same ones on every call, machine and engine. (tunix 0.1.7's
    SglangJaxSampler gives every row the same seed: its list-of-seeds test `type(seed) is List` is never
    true; its VllmSampler sets one seed on the shared SamplingParams: identical samples for a group.)
    """
    seed = int(seed)
    if rows == 1 and 0 <= seed <= SEED_MASK:
        return seed
    digest = hashlib.blake2b(f"rollout-row:{seed}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & SEED_MASK


# ------------------------------------------------------------------ get_per_token_logps inputs
def _rows(x: Any) -> list[list[int]]:
    if isinstance(x, (list, tuple)):
        return [list(map(int, np.asarray(r).reshape(-1))) for r in x]
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"expected [batch, length] tokens, got shape {a.shape}")
    return [list(map(int, r)) for r in a]


def unpad_for_logps(prompt_tokens: Any, completion_tokens: Any, completion_mask: Any | None = None, *,
                    pad: int, stops: Sequence[int], prompt_mask: Any | None = None
                    ) -> tuple[list[list[int]], list[list[int]], int]:
    """tunix's padded `get_per_token_logps` inputs -> (prompts, completions, width), unpadded.

    Arrays follow tunix's layout: prompts [batch, P] left-padded with `pad`, completions [batch, C]
    right-padded with `pad`; ragged lists of lists are taken as given. A prompt is `prompt_mask`'s
    tokens when given, else what follows its leading pad run. A completion is:
    `completion_mask`'s tokens up to its last 1 when given; else, for an array, up to and including
    its first stop token (`stops`: the rollout's EOS and RolloutConfig.eos_tokens, the tokens that can
    end a completion), else up to its last non-pad token. (tunix's own `make_completion_mask` cuts at
    its single `eos_id` only, so a completion ended by another eos_tokens entry keeps its padding.)
    `width` is C: the caller returns [batch, width] with 0 at padded positions.
    """
    p_rows, c_rows = _rows(prompt_tokens), _rows(completion_tokens)
    if len(p_rows) != len(c_rows):
        raise ValueError(f"{len(p_rows)} prompt rows for {len(c_rows)} completion rows")
    pm = _rows(prompt_mask) if prompt_mask is not None else None
    cm = _rows(completion_mask) if completion_mask is not None else None
    stop_set = {int(s) for s in stops}
    ragged_p, ragged_c = isinstance(prompt_tokens, (list, tuple)), isinstance(completion_tokens, (list, tuple))
    prompts, completions = [], []
    for r, (p, c) in enumerate(zip(p_rows, c_rows)):
        if pm is not None:
            p = [t for t, m in zip(p, pm[r]) if m]
        elif not ragged_p:
            p = p[next((i for i, t in enumerate(p) if t != pad), len(p)):]
        if cm is not None:
            n = max((i + 1 for i, v in enumerate(cm[r]) if v), default=0)
        elif ragged_c:
            n = len(c)
        else:
            n = next((i + 1 for i, t in enumerate(c) if t in stop_set), None)
            if n is None:
                n = max((i + 1 for i, t in enumerate(c) if t != pad), default=0)
        prompts.append(p)
        completions.append(c[:n])
    width = max((len(c) for c in c_rows), default=0)
    return prompts, completions, width


def scores_to_array(scored: Sequence[Sequence[float]], rows: int, width: int) -> np.ndarray:
    """Per-row unpadded logprobs -> float32 [rows, width], 0 at padded positions."""
    out = np.zeros((rows, width), dtype=np.float32)
    for r, lps in enumerate(scored):
        out[r, :len(lps)] = lps
    return out


# ------------------------------------------------------------------ generate outputs
def prompt_width(longest: int, max_prompt_length: int | None) -> int:
    """Width of `left_padded_prompt_tokens`: RolloutConfig.max_prompt_length, or the next power of two of
    the longest prompt when that is longer (tunix's samplers' rule): nothing is truncated."""
    plen = int(max_prompt_length or longest)
    return plen if plen >= longest else 1 << max(0, int(longest - 1).bit_length())


@dataclasses.dataclass
class Row:
    """One generated row, unpadded: its prompt, tokens (EOS/stop token included), text and logprobs."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    logprobs: Sequence[float] | None


def rollout_output(rows: Sequence[Row], rollout_config: Any, pad: int) -> Any:
    """Rows -> tunix RolloutOutput: `tokens` right-padded with `pad` to max_tokens_to_generate (int32),
    `left_padded_prompt_tokens` left-padded to `prompt_width`, `logprobs` one unpadded float32 array per
    row (None when the engine returned none for some row), `logits` None."""
    width = int(rollout_config.max_tokens_to_generate)
    longest = max((len(r.prompt_ids) for r in rows), default=1)
    plen = prompt_width(longest, getattr(rollout_config, "max_prompt_length", None))
    tok = np.full((len(rows), width), pad, dtype=np.int32)
    left = np.full((len(rows), plen), pad, dtype=np.int32)
    for i, r in enumerate(rows):
        t = list(r.token_ids)[:width]
        tok[i, :len(t)] = t
        if r.prompt_ids:
            left[i, plen - len(r.prompt_ids):] = r.prompt_ids
    lps = None if any(r.logprobs is None for r in rows) else \
        [np.asarray(list(r.logprobs)[:width], dtype=np.float32) for r in rows]
    return RolloutOutput(text=[r.text for r in rows], logits=None, tokens=tok, left_padded_prompt_tokens=left,
                         logprobs=lps)



def _own_arrays(state: Any) -> Any:
    """`state` with a copy of every jax array in it (other leaves as they are)."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, state)


def model_view(actor: Any) -> Any:
    """What `model()` returns for a rollout given a `rollout_actor`: a module of the actor's structure holding
    its own arrays. tunix's learners compare `rollout.model()` with the actor by array identity
    (`tunix.rl.utils.is_sharing_weights`: every leaf `x is y`) and skip `sync_weights`, so `update_params`
    never runs, when they match. `nnx.clone` alone is not enough: it rebuilds the module around the very
    same (immutable) jax arrays, so the clone "shares" every weight with the actor."""
    from flax import nnx

    graphdef, state = nnx.split(actor)
    return nnx.merge(graphdef, _own_arrays(state))


def update_view(view: Any, params: Any) -> None:
    """Keep `model_view`'s module in step with an `update_params` given an nnx state of the actor's structure,
    with copies: the trainer's own arrays in the view would make the next sync look unnecessary to tunix.
    Best effort (another structure leaves the view as it was): the engine holds the weights that count."""
    if view is None or isinstance(params, (str, bytes)) or hasattr(params, "__fspath__"):
        return
    from flax import nnx

    try:
        nnx.update(view, _own_arrays(params))
    except Exception:  # noqa: BLE001 - see the docstring
        pass
