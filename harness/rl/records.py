"""RL record kinds and where RL results live in a run directory.

    RUN/rl/runs/<algo>.<label>.seed<k>.json   one training run, every step (written by `train`)
    RUN/records/rl/<algo>.<label>.seed<k>.jsonl   the same steps as typed records (below)
    RUN/rl/<algo>.json                        curves per engine per seed per step, plus bands
    RUN/rl/comparison.json                    verdicts (harness.verdict.Verdict) and test details

Records: one `rl_run` line per training run, then one `rl_step` line per step.
They follow harness.records' conventions (schema_version, kind, run_id,
backend; one fsync'd write per batch through its RecordWriter), but live in
`records/rl/`: harness.records.read_run globs `records/*.jsonl` and validates
every line against its own union, which does not know these kinds. Adding
`RLRunRecord | RLStepRecord` to that union would let them move to
`records/rl.<...>.jsonl` (RECORDS_SUBDIR below is the only place to change).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
RECORDS_SUBDIR = "records/rl"


class _RLBase(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")
    schema_version: int = SCHEMA_VERSION
    run_id: str
    backend: str = Field(description="engine label: vanilla, sglang_jax, vllm, or <engine>-stale")
    algo: Literal["grpo", "ppo"]
    seed: int


class RLRunRecord(_RLBase):
    kind: Literal["rl_run"] = "rl_run"
    status: Literal["ok", "error"]
    config: dict
    model: dict[str, str] = {}
    versions: dict[str, str] = {}
    syncs: int = 0
    syncs_skipped: int = 0
    warnings: list[str] = []
    setup_seconds: float | None = None
    train_seconds: float | None = None
    error: str = ""


class RLStepRecord(_RLBase):
    kind: Literal["rl_step"] = "rl_step"
    step: int
    syncs_before: int = Field(description="update_params calls before this step's generate")
    reward_mean: float
    reward_std: float
    completion_len_mean: float | None = None
    identical_group_frac: float | None = None
    sample: dict[str, float] | None = Field(
        None, description="generate's logprobs vs the trainer's (harness.rl.metrics names)")
    score: dict[str, float] | None = Field(
        None, description="the engine's get_per_token_logps vs the trainer's, same tokens")
    timings: dict[str, float] = {}
    example: str = ""


def run_name(algo: str, label: str, seed: int) -> str:
    return f"{algo}.{label}.seed{seed}"


def run_path(run_dir: Path, cfg) -> Path:
    return Path(run_dir) / "rl" / "runs" / f"{run_name(cfg.algo, cfg.label, cfg.seed)}.json"


def write_json(path: Path, obj, sort_keys: bool = True) -> None:
    """Atomic: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=sort_keys, allow_nan=True) + "\n")
    os.replace(tmp, path)


def step_records(run_id: str, result: dict) -> list[BaseModel]:
    cfg = result["config"]
    base = dict(run_id=run_id, backend=result["label"], algo=cfg["algo"], seed=cfg["seed"])
    out: list[BaseModel] = [RLRunRecord(
        **base, status=result.get("status", "ok"), config=cfg, model=result.get("model", {}),
        versions=result.get("versions", {}), syncs=result.get("syncs", 0),
        syncs_skipped=result.get("syncs_skipped", 0), warnings=result.get("warnings", []),
        setup_seconds=result.get("setup_seconds"), train_seconds=result.get("train_seconds"),
        error=result.get("error", ""))]
    for s in result.get("steps", []):
        timings = {k: float(s[k]) for k in ("generate_s", "trainer_logps_s", "engine_logps_s") if k in s}
        out.append(RLStepRecord(
            **base, step=s["step"], syncs_before=s["syncs_before"], reward_mean=s["reward_mean"],
            reward_std=s["reward_std"], completion_len_mean=s.get("completion_len_mean"),
            identical_group_frac=s.get("identical_group_frac"), sample=s.get("sample"), score=s.get("score"),
            timings=timings, example=s.get("example", "")))
    return out


def write_run_records(run_dir: Path, result: dict) -> Path:
    from harness.records import RecordWriter

    cfg = result["config"]
    label = result["label"]
    path = Path(run_dir) / RECORDS_SUBDIR / f"{run_name(cfg['algo'], label, cfg['seed'])}.jsonl"
    if path.exists():
        path.unlink()  # a rerun of the same run replaces it
    run_id = Path(run_dir).name
    with RecordWriter(path) as w:
        w.write_many(step_records(run_id, result))
    return path


def read_step_records(run_dir: Path) -> list:
    """Every RL record of a run directory, validated."""
    from pydantic import TypeAdapter

    adapter = TypeAdapter(RLRunRecord | RLStepRecord)
    out = []
    for path in sorted((Path(run_dir) / RECORDS_SUBDIR).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                out.append(adapter.validate_json(line))
    return out
