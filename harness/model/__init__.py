"""The embedded tiny model: built from code and a corpus, cached, or any local HF directory."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("PARITY_CACHE", Path.home() / ".cache" / "rollout-parity"))


@dataclass(frozen=True)
class ModelRef:
    """A model directory and what identifies its bytes."""

    path: Path
    content_hash: str
    name: str

    def as_dict(self) -> dict:
        return {"path": str(self.path), "content_hash": self.content_hash, "name": self.name}


def _dir_hash(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file() and p.name != "parity_model_card.json"):
        h = hashlib.sha256()
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest.update(f.name.encode() + b"\0" + h.digest())
    return digest.hexdigest()


def embedded(weight_set: str = "A", cache: Path | None = None) -> ModelRef:
    """The embedded tiny model's weight set A or B, built once into the cache and reused."""
    from harness.model import build

    root = (cache or DEFAULT_CACHE) / "models" / f"tiny-qwen3-{build.source_hash()}"
    dest = root / weight_set
    card = dest / "parity_model_card.json"
    if not card.exists():
        root.mkdir(parents=True, exist_ok=True)
        build.write_model(dest, weight_set)
    meta = json.loads(card.read_text())
    return ModelRef(path=dest, content_hash=meta["content_hash"], name=meta["name"])


def resolve(spec: str | None, weight_set: str = "A") -> ModelRef:
    """`None`/"embedded" -> the tiny model; otherwise a local HF directory (its B is itself)."""
    if spec in (None, "", "embedded"):
        return embedded(weight_set)
    path = Path(spec).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"--model {spec}: no config.json in {path}; give a local HuggingFace model directory "
            "(no hub access here) or omit --model for the embedded tiny model"
        )
    return ModelRef(path=path, content_hash=_dir_hash(path), name=path.name)
