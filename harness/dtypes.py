"""The dtype a run's engines compute in: requested (`--dtype`, a suite's `dtype`), resolved, checked.

`auto` means the checkpoint's own dtype (config.json `torch_dtype`, or `dtype`
in newer transformers). The exact reference always computes in float64,
whatever the run's dtype: it is the yardstick, not a participant. An engine
that cannot run in the requested dtype is an error (`DtypeMismatch`), never a
silent fallback, since every tolerance is chosen for the dtype the engines
claim to run in.
"""

from __future__ import annotations

import json
from pathlib import Path

#: what `--dtype` and a suite's `dtype` accept
CHOICES = ("auto", "float32", "bfloat16", "float16")
ENGINE_DTYPES = CHOICES[1:]
REFERENCE_DTYPE = "float64"
DEFAULT = "auto"

#: spellings found in configs, device strings and engine objects -> canonical name (longest first)
_SPELLINGS = (("bfloat16", "bfloat16"), ("bf16", "bfloat16"), ("float16", "float16"), ("fp16", "float16"),
              ("half", "float16"), ("float32", "float32"), ("fp32", "float32"), ("float64", "float64"),
              ("fp64", "float64"), ("double", "float64"))


class DtypeMismatch(RuntimeError):
    """An engine runs in another dtype than the one requested."""


def canonical(text: object) -> str | None:
    """'torch.bfloat16', 'bf16', 'cpu (float32)', numpy/jax dtypes -> 'bfloat16' / 'float32' / ...; None if none."""
    for candidate in (getattr(text, "name", None), text):
        t = str(candidate or "").lower()
        for needle, name in _SPELLINGS:
            if needle in t:
                return name
    return None


def checkpoint_dtype(model_dir: str | Path) -> str | None:
    """The dtype a HuggingFace checkpoint declares in config.json, canonical; None when it declares none."""
    cfg_path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return None
    for key in ("torch_dtype", "dtype"):
        name = canonical(cfg.get(key)) if cfg.get(key) else None
        if name is not None:
            return name
    return None


def resolve(requested: str | None, model_dir: str | Path) -> str:
    """The engines' dtype for a run: the requested one, or with `auto`/None the checkpoint's
    (float32 when the checkpoint declares none, as transformers loads it)."""
    req = requested or DEFAULT
    if req not in CHOICES:
        raise ValueError(f"dtype {req!r}: choose one of {', '.join(CHOICES)}")
    if req != "auto":
        return req
    found = checkpoint_dtype(model_dir)
    if found is None:
        return "float32"
    if found not in ENGINE_DTYPES:
        raise ValueError(f"{model_dir}/config.json declares torch_dtype {found}, which the engines do not run in; "
                         f"pass --dtype {'|'.join(ENGINE_DTYPES)}")
    return found


def mismatch_warning(run_dtype: str | None, checkpoint: str | None, model_name: str = "the checkpoint") -> str | None:
    """A warning when the checkpoint is stored in another dtype than the run computes in (it is cast on load)."""
    if not run_dtype or not checkpoint or checkpoint == run_dtype:
        return None
    return (f"{model_name} is stored in {checkpoint} but this run's engines computed in {run_dtype} (weights cast "
            f"on load): its verdicts speak for {run_dtype}, not for the checkpoint's own dtype")


def require(backend: str, requested: str, actual: object) -> str:
    """The canonical dtype an engine reports it runs in, or DtypeMismatch when it is not the requested one."""
    got = canonical(actual)
    if got != requested:
        raise DtypeMismatch(f"{backend} runs in {got or actual!r}, not the requested {requested}: it cannot honour "
                            f"--dtype {requested} here (no silent fallback; choose a dtype this engine supports)")
    return got
