"""Build the embedded tiny model: a Qwen3 causal LM whose weights are computed, not trained.

Why constructed instead of trained: training on CPU is not bit-reproducible
across machines (BLAS kernels differ by SIMD width), and the harness needs
"same bytes on every machine" so that a model hash recorded on one runner
means the same model on another. Every number here comes from integer
arithmetic (a splitmix64 counter PRNG) and the IEEE-exact operations + - * /
and sqrt on float64, then one rounding to float32. No exp/log/matmul, whose
last bits depend on the CPU's vector library.

Why it is still a meaningful model: hidden size >= vocabulary size, so token
embeddings are scaled one-hot vectors, and the untied lm_head encodes bigram
scores counted from the corpus (weight set A) or skip-gram scores (weight set
B, so that a stale-weight bug changes the greedy text). The two transformer
layers carry small random weights: attention and RoPE perturb the bigram
logits by context, so a position or KV-cache bug moves the logprobs, while the
next-token distribution stays peaked (the reference reports mean top-1
probability) and greedy decoding is not decided by ties.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

CORPUS = Path(__file__).parent / "corpus" / "corpus.txt"
BUILDER_VERSION = "1"

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"
SPECIALS = [PAD, EOS, UNK]
WORD_RE = re.compile(r"\w+|[^\w\s]+")  # the same split as tokenizers' Whitespace pre-tokenizer


@dataclass(frozen=True)
class Shape:
    vocab_size: int = 384
    hidden_size: int = 384
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 3
    num_key_value_heads: int = 3
    head_dim: int = 128  # sglang-jax 0.0.2 pads head_dim to 128 and fails on 16; vLLM CPU supports 128
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    # The architecture and the token layout (the model zoo, harness/model/zoo.py, varies them):
    architecture: str = "qwen3"  # qwen3 (q_norm/k_norm) | qwen2 (q/k/v biases) | llama
    tokenizer_size: int | None = None  # tokens the tokenizer knows; None = vocab_size (no padded rows)
    tie_word_embeddings: bool = False
    specials: tuple[str, ...] = (PAD, EOS, UNK)  # the first ids of the tokenizer
    tail_specials: tuple[str, ...] = ()  # special tokens after the words and reserved ids (Qwen's layout)
    eos_tokens: tuple[str, ...] = (EOS,)  # generation_config's EOS list; corpus lines end with them in turn
    pad_token: str = PAD
    tokenizer: str = "word"  # word (a word-level table) | byte_bpe (harness/model/bpe.py, Qwen2's pipeline)

    @property
    def n_tokens(self) -> int:
        return self.tokenizer_size or self.vocab_size


@dataclass(frozen=True)
class WeightRecipe:
    """What distinguishes weight set A from B."""

    name: str
    seed: int
    successor_gap: int  # 1: bigram (A); 2: skip-gram (B)
    peak: float = 7.0  # logit of the most frequent successor
    tie_break: float = 0.6  # random per-(token, successor) offset in [0, tie_break)
    in_std: float = 0.02  # v, gate, up projections
    out_std: float = 0.003  # o and down projections: small, so the bigram dominates the residual
    qk_std: float = 0.02  # q and k (their scale is mostly undone by q_norm/k_norm)
    embed_scale: float = 1.0  # tied models: the height of the embedding (= output head) rows


RECIPES = {
    "A": WeightRecipe(name="A", seed=0x5EED_000A, successor_gap=1),
    "B": WeightRecipe(name="B", seed=0x5EED_000B, successor_gap=2),
}


# ---------------------------------------------------------------- randomness
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(seed: int, n: int) -> np.ndarray:
    """n uint64 values of splitmix64 over a counter: exact integer arithmetic, any platform."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _uniform(seed: int, n: int) -> np.ndarray:
    """U[0,1) from the top 53 bits: the conversion and scaling are exact in float64."""
    return (_splitmix64(seed, n) >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def _gaussianish(seed: int, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Irwin-Hall(4), centred and scaled to `std`: bell-shaped with only + - * and sqrt."""
    n = int(np.prod(shape))
    u = _uniform(seed, 4 * n).reshape(4, n)
    s = ((u[0] + u[1]) + (u[2] + u[3])) - 2.0  # variance 1/3
    return (s * (std * np.sqrt(3.0))).reshape(shape)


# ---------------------------------------------------------------- tokenizer
def corpus_lines() -> list[str]:
    return [ln.strip() for ln in CORPUS.read_text(encoding="utf-8").splitlines() if ln.strip()]


def build_vocab(lines: list[str], size: int, specials: tuple[str, ...] = tuple(SPECIALS),
                tail: tuple[str, ...] = ()) -> list[str]:
    counts: dict[str, int] = {}
    for ln in lines:
        for w in WORD_RE.findall(ln):
            counts[w] = counts.get(w, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    vocab = list(specials) + words
    if len(vocab) + len(tail) > size:
        raise ValueError(f"corpus has {len(vocab) + len(tail)} token types, more than vocab_size {size}")
    # Reserved ids fill the table so the highest id (vocab_size-1) exists: sglang-jax 0.0.2
    # misreports that id in prompt logprobs (sglang-jax defect no. 11, docs/sglang_jax.md), and prompts in the suite use it.
    vocab += [f"<|reserved_{i}|>" for i in range(size - len(vocab) - len(tail))]
    return vocab + list(tail)


def tokenizer_json(vocab: list[str]) -> dict:
    ids = {tok: i for i, tok in enumerate(vocab)}
    added = [
        {"id": ids[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t in vocab if t.startswith("<|")
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": ids, "unk_token": UNK},
    }


def encode(text: str, vocab: list[str]) -> list[int]:
    """The tokenizer's own rule, restated for the corpus statistics (no tokenizers import needed)."""
    ids = {tok: i for i, tok in enumerate(vocab)}
    return [ids.get(w, ids[UNK]) for w in WORD_RE.findall(text)]


# ---------------------------------------------------------------- weights
def successor_scores(lines: list[str], vocab: list[str], recipe: WeightRecipe,
                     ends: tuple[str, ...] = (EOS,), encoder: Callable[[str], list[int]] | None = None
                     ) -> np.ndarray:
    """[V, V] scores: row t = logits of the next token given current token t."""
    v = len(vocab)
    counts = np.zeros((v, v), dtype=np.int64)
    for i, ln in enumerate(lines):
        # A document starts after EOS and ends with it, so the model learns to stop (with several
        # EOS tokens, line i uses the i-th in turn: each one is generated somewhere).
        eos = vocab.index(ends[i % len(ends)])
        seq = [eos] + (encoder(ln) if encoder else encode(ln, vocab)) + [eos]
        for a, b in zip(seq, seq[recipe.successor_gap:]):
            counts[a, b] += 1
    peak = counts.max(axis=1, keepdims=True)
    seen = peak[:, 0] > 0
    scores = np.zeros((v, v), dtype=np.float64)
    scores[seen] = counts[seen].astype(np.float64) / peak[seen].astype(np.float64) * recipe.peak
    jitter = _uniform(recipe.seed ^ 0x7135, v * v).reshape(v, v) * recipe.tie_break
    # Tokens the corpus never produces (reserved ids, pad, unk) stay possible but rare, so
    # sampled text reads like the corpus instead of a spray of reserved ids.
    never = counts.sum(axis=0) == 0
    scores[:, never] -= recipe.peak
    return scores + jitter


def padded_rows(vocab: list[str], shape: Shape) -> list[str]:
    """The tokenizer's tokens plus placeholders for the model's rows past it (a vocab padded like
    Qwen's 151936 over 151669 tokens): the corpus never produces them, so they score as never-seen."""
    return vocab + [f"<|row_{i}|>" for i in range(len(vocab), shape.vocab_size)]


#: how strongly the lookup MLP of a tied model is driven (silu(16) = 16 to 7 digits: a linear lookup)
_LOOKUP_DRIVE = 16.0


def build_weights(shape: Shape, recipe: WeightRecipe, vocab: list[str], lines: list[str],
                  encoder: Callable[[str], list[int]] | None = None) -> dict[str, np.ndarray]:
    h, v, i_sz, hd = shape.hidden_size, shape.vocab_size, shape.intermediate_size, shape.head_dim
    if h < v:
        raise ValueError("the construction needs hidden_size >= vocab_size (one-hot embeddings)")
    q_out, kv_out = shape.num_attention_heads * hd, shape.num_key_value_heads * hd
    embed = np.zeros((v, h), dtype=np.float64)
    embed[np.arange(v), np.arange(v)] = 1.0
    scores = successor_scores(lines, padded_rows(vocab, shape), recipe, shape.eos_tokens, encoder)
    w: dict[str, np.ndarray] = {"model.embed_tokens.weight": embed, "model.norm.weight": np.ones(h)}
    if not shape.tie_word_embeddings:
        # The final RMSNorm turns a one-hot of size 1 into sqrt(h) * one-hot, so dividing by
        # sqrt(h) makes lm_head @ norm(embed[t]) equal the score row of t.
        lm_head = np.zeros((v, h))
        lm_head[:, :v] = scores.T / np.sqrt(float(h))
        w["lm_head.weight"] = lm_head
    seed = recipe.seed
    for layer in range(shape.num_hidden_layers):
        p = f"model.layers.{layer}."
        shapes = {
            "self_attn.q_proj.weight": (q_out, h),
            "self_attn.k_proj.weight": (kv_out, h),
            "self_attn.v_proj.weight": (kv_out, h),
            "self_attn.o_proj.weight": (h, q_out),
            "mlp.gate_proj.weight": (i_sz, h),
            "mlp.up_proj.weight": (i_sz, h),
            "mlp.down_proj.weight": (h, i_sz),
        }
        for name, shp in shapes.items():
            seed += 1
            # Attention patterns depend on content and position (so RoPE/KV bugs show), while
            # the writes back into the residual (o, down) stay small so the bigram dominates.
            if name.startswith(("self_attn.q", "self_attn.k")):
                std = recipe.qk_std
            elif name.startswith(("self_attn.o", "mlp.down")):
                std = recipe.out_std
            else:
                std = recipe.in_std
            w[p + name] = _gaussianish(seed, shp, std)
        for name in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            w[p + name] = np.ones(h)
        if shape.architecture == "qwen3":
            for name in ("self_attn.q_norm.weight", "self_attn.k_norm.weight"):
                w[p + name] = np.ones(hd)
        if shape.architecture == "qwen2":  # Qwen2's q/k/v projections always carry a bias
            for j, (name, n) in enumerate((("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out))):
                w[f"{p}self_attn.{name}.bias"] = _gaussianish(recipe.seed ^ (0xB1A5 + 16 * layer + j), (n,),
                                                              recipe.in_std)
    if shape.tie_word_embeddings:
        _tied_lookup(w, shape, scores, recipe.embed_scale)
    return {k: val.astype(np.float32) for k, val in w.items()}


def _tied_lookup(w: dict[str, np.ndarray], shape: Shape, scores: np.ndarray, scale: float) -> None:
    """With tied embeddings the output head is the embedding itself, so the bigram cannot sit in
    lm_head: the last layer's MLP looks it up instead.

    Every embedding row is one-hot plus 1 on a shared coordinate `on` past the vocabulary (a shared
    coordinate shifts every logit alike: the softmax does not see it). Intermediate unit t reads
    coordinate t minus half of `on` (and nothing else), so it fires only for current token t and stays
    at silu(-16) ~ 0 for every other token whatever the context adds; its down column writes score row t minus the
    one-hot into the residual, plus a last coordinate that gives every row the same norm R. The final
    RMSNorm (weight R / (scale sqrt(h)) on the vocabulary's coordinates) then hands the head the score
    row. `scale`, the rows' height, differs between weight sets, so that a stale output head (the
    embedding of the other set) gives other logits: a scaled copy of the live ones."""
    h, v = shape.hidden_size, shape.vocab_size
    if h < v + 2 or shape.intermediate_size < v:
        raise ValueError("a tied model needs hidden_size >= vocab_size + 2 and intermediate_size >= vocab_size")
    on, last = h - 2, h - 1
    w["model.embed_tokens.weight"][:, on] = 1.0
    w["model.embed_tokens.weight"] *= scale
    target = np.zeros((v, h))
    target[:, :v] = scores - scale * np.eye(v)
    # exactly rounded sums (math.fsum), so that no summation order of a vector library decides the bytes
    norms = np.sqrt(np.array([math.fsum(row) + scale * scale for row in (scores * scores).tolist()]))
    radius = float(norms.max()) * 1.01
    target[:, last] = np.sqrt(radius * radius - norms * norms)
    p = f"model.layers.{shape.num_hidden_layers - 1}.mlp."
    height = np.sqrt(h / 2.0)  # a row of two ones after RMSNorm
    drive = 2.0 * _LOOKUP_DRIVE / height
    idx = np.arange(v)
    for name in ("gate_proj.weight", "up_proj.weight"):  # lookup units read nothing else (no random part)
        w[p + name][:v] = 0.0
    w[p + "gate_proj.weight"][idx, idx] = drive
    w[p + "gate_proj.weight"][idx, on] = -drive / 2.0
    w[p + "up_proj.weight"][idx, idx] = 1.0 / height
    w[p + "down_proj.weight"][:, :v] += target.T / _LOOKUP_DRIVE
    w["model.norm.weight"][:v] = radius / (scale * np.sqrt(float(h)))


# ---------------------------------------------------------------- files
def safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """The safetensors format written by hand: sorted names, fixed metadata, 8-byte aligned."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype="<f4")
        blob = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


_ARCHITECTURES = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}


def hf_config(shape: Shape, vocab: list[str]) -> dict:
    eos = [vocab.index(t) for t in shape.eos_tokens]
    cfg = {
        "architectures": [_ARCHITECTURES[shape.architecture]],
        "model_type": shape.architecture,
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": shape.max_position_embeddings,
        "rope_theta": shape.rope_theta,
        "rope_scaling": None,
        "rms_norm_eps": shape.rms_norm_eps,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": shape.num_hidden_layers,
        "tie_word_embeddings": shape.tie_word_embeddings,
        "torch_dtype": "float32",
        "bos_token_id": vocab.index(EOS),
        "eos_token_id": eos[0],
        "pad_token_id": vocab.index(shape.pad_token),
        "initializer_range": 0.02,
        "use_cache": True,
    }
    if shape.architecture == "qwen2":  # its q/k/v biases are always there; sglang-jax loads them only if it says so
        cfg["attention_bias"] = True
    if shape.architecture == "llama":
        for k in ("use_sliding_window", "sliding_window", "max_window_layers"):
            del cfg[k]
        cfg.update(mlp_bias=False, pretraining_tp=1)
    return cfg


def model_files(recipe_name: str, shape: Shape = Shape(), recipe: WeightRecipe | None = None) -> dict[str, bytes]:
    """Every file of one weight set's HF directory, as bytes (pure function of code + corpus)."""
    lines = corpus_lines()
    if shape.tokenizer == "byte_bpe":
        from harness.model import bpe

        vocab, merges = bpe.build_vocab(lines, shape.n_tokens, shape.specials, shape.tail_specials)
        tok_json = bpe.tokenizer_json(vocab, merges)
        encoder: Callable[[str], list[int]] | None = lambda text: bpe.encode(text, vocab, merges)  # noqa: E731
    else:
        vocab = build_vocab(lines, shape.n_tokens, shape.specials, shape.tail_specials)
        tok_json, encoder = tokenizer_json(vocab), None
    weights = build_weights(shape, recipe or RECIPES[recipe_name], vocab, lines, encoder)
    eos = [vocab.index(t) for t in shape.eos_tokens]
    bos, pad = vocab.index(EOS), vocab.index(shape.pad_token)
    eos_token = shape.eos_tokens[0]

    def js(obj: dict) -> bytes:
        return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()

    return {
        "config.json": js(hf_config(shape, vocab)),
        # Only ids, no sampling defaults: both engines apply generation_config fields to
        # unset sampling parameters, and the default suite should not depend on that.
        "generation_config.json": js({"bos_token_id": bos, "eos_token_id": eos[0] if len(eos) == 1 else eos,
                                      "pad_token_id": pad}),
        "model.safetensors": safetensors_bytes(weights),
        "tokenizer.json": js(tok_json),
        "tokenizer_config.json": js({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": eos_token, "pad_token": shape.pad_token, "unk_token": UNK, "bos_token": None,
            "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": shape.max_position_embeddings,
        }),
        "special_tokens_map.json": js({"eos_token": eos_token, "pad_token": shape.pad_token, "unk_token": UNK}),
    }


def content_hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def source_hash() -> str:
    """What decides the output: this file, the corpus and the builder version."""
    digest = hashlib.sha256(BUILDER_VERSION.encode())
    digest.update(Path(__file__).read_bytes())
    digest.update(CORPUS.read_bytes())
    return digest.hexdigest()[:16]


def write_model(dest: Path, recipe_name: str, shape: Shape = Shape(), recipe: WeightRecipe | None = None,
                name: str = "tiny-qwen3") -> str:
    """Write one weight set into `dest` atomically; return its content hash.

    Safe when several processes build the same model at once (two test sessions or runs on a fresh
    cache): each writes its own temporary directory and renames it into place; a builder that finds
    `dest` already complete with the same content keeps it (a reader may have it open) and drops its own."""
    import os
    import shutil
    import threading

    recipe = recipe or RECIPES[recipe_name]
    files = model_files(recipe_name, shape, recipe)
    digest = content_hash(files)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for fname, data in files.items():
        (tmp / fname).write_bytes(data)
    card = {"name": f"{name}-{recipe_name}", "content_hash": digest, "builder": source_hash(),
            "shape": asdict(shape), "recipe": asdict(recipe)}
    (tmp / "parity_model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    for _ in range(3):
        try:
            tmp.rename(dest)  # atomic; refused when dest is a non-empty directory
            return digest
        except OSError:
            pass
        try:
            done = json.loads((dest / "parity_model_card.json").read_text()).get("content_hash") == digest
        except (OSError, ValueError):
            done = False
        if done:  # another builder won the race with the same bytes
            shutil.rmtree(tmp, ignore_errors=True)
            return digest
        shutil.rmtree(dest, ignore_errors=True)  # a broken or stale leftover
    raise OSError(f"could not move the built model into {dest}")
