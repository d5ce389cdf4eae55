"""The model zoo: tiny models in the shapes real RL checkpoints have, built from code like the embedded one.

Each is built by harness.model.build (same corpus, PRNG and exactly rounded
arithmetic, so the same bytes on every machine) with weight sets A and B of
one shape; `--model zoo:NAME` selects set A and, for update_params cases,
set B. What each exercises:

- `qwen3-gqa-tied`: Qwen3 with grouped-query attention (4 query heads over 2
  KV heads), tied word embeddings (the checkpoint has no `lm_head.weight`) and
  a model vocabulary of 512 rows over a 384-token tokenizer, as Qwen3-0.6B's
  151936 rows over 151669 tokens;
- `llama-untied`: Llama (no q/k norms), 4 heads, an untied output head;
- `qwen2-bias`: Qwen2 with its q/k/v projection biases, GQA 8:2, tied, and a
  byte-level BPE tokenizer in Qwen2's pipeline (harness/model/bpe.py: transformers
  5 loads any qwen2 directory with Qwen2Tokenizer, which would turn a word-level
  table into a tokenizer returning [] for text); 896 rows over 880 tokens.
  vLLM's Qwen2 ignores `head_dim` (head size = hidden / heads), so hidden = 8 x 128;
- `qwen3-special`: Qwen3 with Qwen's special-token layout: the specials after
  the words (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`), an EOS list in
  generation_config.json (`<|im_end|>`, `<|endoftext|>`, both generated: corpus
  lines end with each in turn), a pad token that is not an EOS, 448 rows.

Every head is 128 wide (sglang-jax pads head_dim to 128; vLLM's CPU attention
supports it) and every model has 2 layers, so CPU runs stay short.
"""

from __future__ import annotations

import dataclasses
import json

from harness.model import build
from harness.model.build import EOS, PAD, UNK, RECIPES, Shape, WeightRecipe

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

PREFIX = "zoo:"


@dataclasses.dataclass(frozen=True)
class ZooModel:
    name: str
    shape: Shape
    #: per zoo model: its own seeds (no two zoo models share layer weights), and the scale of what the
    #: layers write into the residual, chosen so that context moves the logprobs (measured in
    #: tests/backends/test_reference.py) while top-1 stays well above ties
    seed_offset: int
    out_std: float = 0.003

    def recipe(self, weight_set: str) -> WeightRecipe:
        base = RECIPES[weight_set]
        # a tied model's B has half-height embedding rows, so that B's layers under A's output head
        # (a stale head after update_params) give other logits than B itself
        return dataclasses.replace(base, seed=base.seed + self.seed_offset, out_std=self.out_std,
                                   embed_scale=0.5 if weight_set == "B" else 1.0)


ZOO: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("qwen3-gqa-tied", Shape(
        architecture="qwen3", vocab_size=512, tokenizer_size=384, hidden_size=640, intermediate_size=768,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True), seed_offset=0x1000, out_std=0.006),
    ZooModel("llama-untied", Shape(
        architecture="llama", vocab_size=384, hidden_size=512, intermediate_size=512,
        num_attention_heads=4, num_key_value_heads=4), seed_offset=0x2000),
    ZooModel("qwen2-bias", Shape(
        architecture="qwen2", vocab_size=896, tokenizer_size=880, hidden_size=1024, intermediate_size=1024,
        num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True, tokenizer="byte_bpe"),
        seed_offset=0x3000),
    ZooModel("qwen3-special", Shape(
        architecture="qwen3", vocab_size=448, tokenizer_size=384, hidden_size=512, intermediate_size=512,
        num_attention_heads=4, num_key_value_heads=2, specials=(PAD, UNK), tail_specials=(EOS, IM_START, IM_END),
        eos_tokens=(IM_END, EOS), pad_token=PAD), seed_offset=0x4000),
)}


def zoo_name(spec: str | None) -> str | None:
    """'zoo:NAME' -> NAME (checked), anything else -> None."""
    if not spec or not spec.startswith(PREFIX):
        return None
    name = spec[len(PREFIX):]
    if name not in ZOO:
        raise FileNotFoundError(f"--model {spec}: no zoo model {name!r}; the zoo has "
                                f"{', '.join(PREFIX + n for n in ZOO)}")
    return name


def source_hash() -> str:
    """What decides a zoo model's bytes: the builder (harness.model.build.source_hash) and this file."""
    import hashlib
    from pathlib import Path

    return hashlib.sha256(build.source_hash().encode() + Path(__file__).read_bytes()).hexdigest()[:16]


def write(name: str, weight_set: str, dest) -> str:
    m = ZOO[name]
    return build.write_model(dest, weight_set, m.shape, m.recipe(weight_set), name=name)


def describe() -> str:
    return json.dumps({n: dataclasses.asdict(m.shape) for n, m in ZOO.items()}, indent=1)
