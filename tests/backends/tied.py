"""update_params on a tied-embedding model (zoo:qwen3-gqa-tied), shared by the engine test modules:
record the engine and the exact reference on tests/backends/data/tied_update.yaml (A, then B, then A
again), then the harness's own checks must pass for the engine, and its logprobs must be the live
set's within float32 tolerance (and far from the other set's: a stale output head shows)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harness.compare import compare_run

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tests" / "backends" / "data" / "tied_update.yaml"
MODEL = "zoo:qwen3-gqa-tied"
ATOL = 1e-4


def record(python: Path | str, backend: str, out: Path, env: dict | None = None) -> None:
    """Both phases through one engine (`--phase all`): the generate phase, then the score phase over every
    generation in OUT at that point (an engine recorded first scores its own; the reference after it scores
    the engine's and its own), as two `--phase` runs would, with one engine start instead of two."""
    log = out / f"{backend}.all.log"
    out.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        rc = subprocess.run([str(python), "-m", "harness", "record", "--backend", backend, "--suite", str(SUITE),
                             "--out", str(out), "--phase", "all", "--model", MODEL, "--quiet"], cwd=ROOT,
                            stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            timeout=1200).returncode
    assert rc == 0, f"{backend} exited {rc}:\n{log.read_text()[-4000:]}"


def assert_update_reaches_the_head(run: Path, engine: str) -> dict[str, float]:
    """Every check of the tied-update suite passes for `engine`; returns weight_update's measurements."""
    verdicts = [v for v in compare_run(run, str(SUITE)) if engine in v.backends]
    bad = [f"{v.check} {v.case} {v.backends}: {v.verdict}: {v.detail}" for v in verdicts if v.verdict != "pass"]
    assert not bad, "\n".join(bad)
    wu = {v.case: v for v in verdicts if v.check == "weight_update" and v.backends[0] == engine}
    assert set(wu) == {"before-a", "update-b", "update-back-a"}
    for v in wu.values():
        assert v.data["max_abs_vs_live"] <= ATOL < 100 * ATOL < v.data["max_abs_vs_stale"], v.detail
    return {case: v.data["max_abs_vs_live"] for case, v in wu.items()}
