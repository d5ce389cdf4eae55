"""What the served-backend tests share: a small suite, `parity record` in a subprocess, the records of a
served backend side by side with its in-process engine's, and the processes a run left behind."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.records import SURFACE_VARIANTS
from harness.rundir import RunRecords

ROOT = Path(__file__).resolve().parents[2]
#: the default suite's logprob tolerance (cases/default.yaml, docs/checks.md): HTTP must agree to it
ATOL = 1e-4

SMALL_SUITE = """\
suite: http-small
description: A few cases through a served engine and its in-process twin.
defaults:
  sampling: {max_tokens: 6}
  checks: [prompt_logprobs, completion_logprobs, self_consistency]
cases:
  - id: greedy
    prompts: ["The robot", {ids: [3, 5, 383, 4]}]
    sampling: {temperature: 0}
    tunix: true
    checks: [greedy_tokens]
  - id: sampled-n2
    prompts: ["The girl said that"]
    sampling: {temperature: 0.8, seed: 1234, n: 2}
    checks: [n_samples]
  - id: update-b
    prompts: ["The robot"]
    weights: B
    sampling: {temperature: 0}
    checks: [greedy_tokens, weight_update]
"""


def small_suite(directory: Path) -> Path:
    path = directory / "http-small.yaml"
    path.write_text(SMALL_SUITE)
    return path


def record(backend: str, suite: Path, out: Path, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """`parity record` (supervised, as a nox session runs it) in this venv; output kept in OUT/BACKEND.log."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{backend}.log", "w") as log:
        return subprocess.run([sys.executable, "-m", "harness", "record", "--backend", backend, "--suite", str(suite),
                               "--out", str(out), "--quiet"], cwd=ROOT, env={**os.environ, **env}, stdout=log,
                              stderr=subprocess.STDOUT, timeout=timeout)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def servers_of(pid: int) -> list[int]:
    """Live processes of servers (leash, server, its children) started under process `pid`."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and _alive(int(p.name)):
            lineage = _environ(int(p.name)).get("PARITY_LEASH_ANCESTORS", "")
            if any(x.split(":")[0] == str(pid) for x in lineage.split(",") if x):
                out.append(int(p.name))
    return out


def wait_none(pid: int, within: float = 20.0) -> list[int]:
    end = time.monotonic() + within
    while (left := servers_of(pid)) and time.monotonic() < end:
        time.sleep(0.25)
    return left


def kill_tree_under(path: Path) -> None:
    """Kill what a test run left running whose command line names `path` (its run directory)."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                cmd = (p / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(path) in cmd:
                try:
                    os.kill(int(p.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass


class Pairs:
    """A served backend's records next to its in-process engine's, by (case, prompt, sample, variant)."""

    def __init__(self, run: Path, served: str, engine: str):
        recs = RunRecords.load(run)
        self.errors = {b: [r for r in recs.errors if r.backend == b] for b in (served, engine)}
        gen = recs.generation_index()  # (backend, case, prompt, sample, variant) -> record
        pairs = [(gen[(engine, *k[1:])], g) for k, g in sorted(gen.items()) if k[0] == served]
        self.gen = [(a, b) for a, b in pairs if b.key.variant not in SURFACE_VARIANTS]
        #: the rows of the greedy case through each side's tunix surface (generate, get_per_token_logps)
        self.surface = [(a, b) for a, b in pairs if b.key.variant == "tunix"]
        # both score the in-process engine's completions (recorded first): the same inputs on both paths
        # (scorer, source, case, prompt, sample) -> record: an engine scores main-variant completions only
        sc = {k[:5]: s for k, s in recs.score_index().items() if k[5] == "main"}
        self.score = [(sc[(engine, *k[1:])], s) for k, s in sorted(sc.items())
                      if k[0] == served and k[1] == engine and (engine, *k[1:]) in sc]

    def check_surface(self) -> float:
        """The tunix surface served as in-process: the same rows, pad/EOS ids and layouts; the largest
        |d| of generate's logprobs and get_per_token_logps between the two (the caller bounds it)."""
        assert len(self.surface) == 2, [b.key for _, b in self.surface]  # the greedy case's two prompts
        worst = 0.0
        for a, b in self.surface:
            for field in ("tokens", "left_padded_prompt", "pad_id", "eos_id"):
                assert b.tunix[field] == a.tunix[field], (field, b.key)
            assert b.completion_ids == a.completion_ids, b.key
            for x, y in ((a.completion_logprobs, b.completion_logprobs),
                         (a.tunix["per_token_logps"], b.tunix["per_token_logps"])):
                assert x is not None and y is not None and len(x) == len(y), b.key
                worst = max([worst, *(abs(u - v) for u, v in zip(x, y))])
        return worst

    def max_dlogp(self) -> dict[str, float]:
        def d(a, b):
            return max((abs(x - y) for x, y in zip(a, b) if x is not None and y is not None and
                        math.isfinite(x) and math.isfinite(y)), default=0.0)

        return {"completion": max((d(a.completion_logprobs, b.completion_logprobs) for a, b in self.gen), default=0.0),
                "prompt": max((d(a.prompt_logprobs, b.prompt_logprobs) for a, b in self.gen), default=0.0),
                "score": max((d(a.logprobs, b.logprobs) for a, b in self.score), default=0.0)}
