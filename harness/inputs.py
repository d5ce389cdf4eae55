"""Inputs checked before anything runs: model directories, weight files, B against A, prompts against the model.

`parity run` and `parity record` call `check_models` and `check_prompts` before a
run directory is created or an engine starts, so a bad input is one clear error
(exit 2) instead of four backend processes failing, each with its own traceback.
Only the files' headers are read (safetensors keeps every tensor's dtype, shape
and byte range in a JSON header), so this needs no torch and costs milliseconds.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from harness.model import ModelRef

MAX_HEADER = 100 << 20  # a safetensors header longer than this is a corrupt length field


class InputError(ValueError):
    """A model directory or prompt that cannot work; the message names the file (or case) and what is wrong."""


def _safetensors_header(path: Path) -> dict:
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InputError(f"{path}: truncated ({size} bytes; not a safetensors file)")
        n = struct.unpack("<Q", head)[0]
        if n > MAX_HEADER or 8 + n > size:
            raise InputError(f"{path}: truncated or corrupt (header of {n} bytes in a file of {size} bytes)")
        try:
            header = json.loads(fh.read(n))
        except ValueError as e:
            raise InputError(f"{path}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + n + end > size:
        raise InputError(f"{path}: truncated: its header needs {8 + n + end} bytes, the file has {size} "
                         "(an interrupted download or copy?)")
    return header


def weight_shapes(model: ModelRef, flag: str) -> tuple[dict, dict[str, tuple[str, tuple[int, ...]]]]:
    """(config.json, {tensor name: (dtype, shape)}) of a model directory; raises InputError naming the file."""
    path = Path(model.path)
    cfg_path = path / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{flag} {path}: config.json unreadable: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("vocab_size"), int):
        raise InputError(f"{flag} {cfg_path}: no integer vocab_size (not a causal LM config?)")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            return config, {}  # pickled weights: readable only by torch; the engines check them
        raise InputError(f"{flag} {path}: no weights (*.safetensors or pytorch_model*.bin)")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            wanted = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{flag} {index}: unreadable shard index: {e}") from None
        missing = sorted(wanted - {f.name for f in files})
        if missing:
            raise InputError(f"{flag} {path}: shard(s) {missing} named in {index.name} are missing")
    shapes: dict[str, tuple[str, tuple[int, ...]]] = {}
    for f in files:
        try:
            header = _safetensors_header(f)
        except OSError as e:
            raise InputError(f"{flag} {f}: unreadable: {e}") from None
        except InputError as e:
            raise InputError(f"{flag} {e}") from None
        shapes.update({name: (t["dtype"], tuple(t["shape"])) for name, t in header.items()})
    return config, shapes


def check_models(models: dict[str, ModelRef | None]) -> dict:
    """Every weight set readable and complete, and B shaped as A (update_params swaps weights in place);
    returns A's config.json."""
    config_a, shapes_a = weight_shapes(models["A"], "--model")
    if models.get("B") is not None:
        config_b, shapes_b = weight_shapes(models["B"], "--model-b")
        if shapes_a and shapes_b and shapes_a != shapes_b:
            diff = [f"{k}: {shapes_a.get(k, ('-', 'absent'))[1]} vs {shapes_b.get(k, ('-', 'absent'))[1]}"
                    for k in sorted(set(shapes_a) | set(shapes_b))
                    if shapes_a.get(k, (None, None))[1] != shapes_b.get(k, (None, None))[1]]
            if diff:
                raise InputError(f"--model-b {models['B'].path}: not the same shape as --model {models['A'].path} "
                                 f"(update_params loads B into A's engine): {len(diff)} tensor(s) differ, e.g. "
                                 + "; ".join(diff[:3]))
        for key in ("vocab_size", "hidden_size", "num_hidden_layers"):
            if config_a.get(key) != config_b.get(key):
                raise InputError(f"--model-b {models['B'].path}: config {key} {config_b.get(key)} differs from "
                                 f"--model's {config_a.get(key)}")
    return config_a


def context_of(config: dict) -> int:
    return int(config.get("max_position_embeddings") or 1 << 30)


def check_prompts(suite, config: dict) -> bool:
    """Id prompts against the vocabulary and context, exactly (SuiteError naming file, case and field). Text
    prompts need the model's tokenizer, which lives in the backends' venvs: returns True when one of them may
    be too long (its UTF-8 bytes bound a byte-level BPE's token count), so that the caller has a backend
    tokenize and check it before anything runs."""
    from harness.recorder import validate_prompts

    ids = {c.id: [list(p.ids) if p.ids is not None else None for p in c.prompts] for c in suite.cases}
    validate_prompts(suite, ids, config["vocab_size"], context_of(config))
    return any(len(p.text.encode()) + c.sampling.max_tokens > context_of(config)
               for c in suite.cases for p in c.prompts if p.text is not None)
