"""A byte-level BPE tokenizer over the corpus, in Qwen2's exact pipeline, for zoo models that need one.

transformers 5 loads every `model_type: qwen2` directory with its own
Qwen2Tokenizer, whatever tokenizer_config.json names: it rebuilds the
tokenizer from the vocabulary and merges with Qwen2's pre-tokenizer (a split
regex, then byte-level), so a word-level table comes back as a tokenizer that
turns every text prompt into []. A Qwen2 zoo model therefore carries a real
byte-level BPE whose tokenizer.json has that same pipeline: Qwen2Tokenizer
(transformers 5) and PreTrainedTokenizerFast (transformers 4, reading
tokenizer.json as it is) then tokenize identically.

The vocabulary: the special tokens, every printable ASCII byte (so any ASCII
text tokenizes to something), and, for each pre-tokenized piece of the corpus
(" robot" -> "Ġrobot"), the chain of merges that builds it from its bytes, so
each corpus piece is one token. `encode` restates the tokenizer for the
corpus statistics, with no tokenizers import; tests check it against the
tokenizers library on the corpus and the suites.
"""

from __future__ import annotations

import re
from functools import lru_cache

#: Qwen2's pre-tokenizer split (transformers' models/qwen2/tokenization_qwen2.py)
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
# The same on ASCII text (\p{L} = letters, \p{N} = digits), which is all the corpus holds: the stdlib
# re module has no \p{...} classes.
_ASCII_SPLIT = re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]| ?[^\sA-Za-z0-9]+[\r\n]*|"
                          r"\s*[\r\n]+|\s+(?!\S)|\s+")


@lru_cache(maxsize=1)
def byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character table (space -> 'Ġ', newline -> 'Ċ'), as ByteLevel uses."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def pieces(text: str) -> list[str]:
    """Pre-tokenized, byte-mapped pieces of ASCII text ("The robot" -> ["The", "Ġrobot"])."""
    if not text.isascii():
        raise ValueError("the builder's restatement of the split covers ASCII text only")
    chars = byte_chars()
    return ["".join(chars[b] for b in p.encode()) for p in _ASCII_SPLIT.findall(text) if p]


def build_vocab(lines: list[str], size: int, specials: tuple[str, ...], tail: tuple[str, ...]
                ) -> tuple[list[str], list[tuple[str, str]]]:
    """(vocabulary of `size` tokens, merges in rank order) covering every piece of the corpus."""
    counts: dict[str, int] = {}
    for ln in lines:
        for p in pieces(ln):
            counts[p] = counts.get(p, 0) + 1
    chars = byte_chars()
    base = [chars[b] for b in range(0x20, 0x7F)] + [chars[ord("\n")], chars[ord("\t")]]
    merges: dict[tuple[str, str], int] = {}
    # Shorter products first, so that a piece's chain is never cut by a later merge of its tail.
    for p in sorted(counts, key=lambda p: (len(p), -counts[p], p)):
        for i in range(2, len(p) + 1):
            merges.setdefault((p[:i - 1], p[i - 1]), len(merges))
    ordered = sorted(merges, key=merges.get)
    products = list(dict.fromkeys(a + b for a, b in ordered))
    vocab = list(specials) + base + [t for t in products if t not in base]
    if len(vocab) + len(tail) > size:
        raise ValueError(f"the corpus needs {len(vocab) + len(tail)} byte-level tokens, more than {size}")
    vocab += [f"<|reserved_{i}|>" for i in range(size - len(vocab) - len(tail))]
    return vocab + list(tail), ordered


def _merge(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    while len(parts) > 1:
        rank, i = min((ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(parts, parts[1:])))
        if rank == len(ranks):
            break
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    return parts


def encode(text: str, vocab: list[str], merges: list[tuple[str, str]]) -> list[int]:
    ids = {t: i for i, t in enumerate(vocab)}
    ranks = {m: r for r, m in enumerate(merges)}
    out: list[int] = []
    for p in pieces(text):
        out += [ids[t] for t in _merge(list(p), ranks) if t in ids]  # BPE without unk drops unknown bytes
    return out


def tokenizer_json(vocab: list[str], merges: list[tuple[str, str]]) -> dict:
    ids = {tok: i for i, tok in enumerate(vocab)}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": ids[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t in vocab if t.startswith("<|")],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": ids, "merges": [[a, b] for a, b in merges]},
    }
