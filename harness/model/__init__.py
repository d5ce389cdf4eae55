"""The embedded tiny model: built from code and a corpus, cached, or any local HF directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness import paths



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

    root = (cache or paths.cache_dir()) / "models" / f"tiny-qwen3-{build.source_hash()}"
    dest = root / weight_set
    card = dest / "parity_model_card.json"
    if not card.exists():
        root.mkdir(parents=True, exist_ok=True)
        build.write_model(dest, weight_set)
    meta = json.loads(card.read_text())
    return ModelRef(path=dest, content_hash=meta["content_hash"], name=meta["name"])


def zoo_model(name: str, weight_set: str = "A", cache: Path | None = None) -> ModelRef:
    """A zoo model's weight set (harness/model/zoo.py), built once into the cache like the embedded one."""
    from harness.model import zoo as z

    z.zoo_name(z.PREFIX + name)
    dest = (cache or paths.cache_dir()) / "models" / f"zoo-{name}-{z.source_hash()}" / weight_set
    card = dest / "parity_model_card.json"
    if not card.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        z.write(name, weight_set, dest)
    meta = json.loads(card.read_text())
    return ModelRef(path=dest, content_hash=meta["content_hash"], name=meta["name"])


def is_built_in(spec: str | None) -> bool:
    """The embedded model or a zoo model: both come with their weight set B."""
    return spec in (None, "", "embedded") or str(spec).startswith("zoo:")


def resolve(spec: str | None, weight_set: str = "A") -> ModelRef:
    """`None`/"embedded" -> the tiny model; "zoo:NAME" -> a zoo model (harness/model/zoo.py);
    otherwise a local HF directory (its B is itself)."""
    from harness.model.zoo import zoo_name

    if spec in (None, "", "embedded"):
        return embedded(weight_set)
    name = zoo_name(spec)
    if name is not None:
        return zoo_model(name, weight_set)
    path = Path(spec).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"--model {spec}: no config.json in {path}; give a local HuggingFace model directory "
            "(no hub access here) or omit --model for the embedded tiny model"
        )
    return ModelRef(path=path, content_hash=_dir_hash(path), name=path.name)
