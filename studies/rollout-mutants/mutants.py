"""Bugs put into the rollouts, one at a time, and which checks of the default run catch each.

Each mutant is a one-line edit of a realistic bug in a rollout (SglangJaxRollout, its engine wrapper and
compat layer, or VllmRollout). The study makes one copy of the checkout per mutant (`git archive HEAD`,
then the edit), runs the main job in each copy with the default suite and the default backends, one run per
engine-lock acquisition, and tabulates the verdicts that fail in a mutant's run and not in the clean run.

    python studies/rollout-mutants/mutants.py list
    python studies/rollout-mutants/mutants.py prepare --dest DIR [NAME ...]   # DIR/<name>: copy + edit
    # then, per copy (one engine run each; see README.md):
    #   (cd DIR/<name> && ./dev parity --out DIR/runs --run-id <name> --no-selftest)
    python studies/rollout-mutants/mutants.py table DIR/runs [--json results.json]

`prepare` refuses an edit whose text does not occur exactly once (the code moved: update MUTANTS), so a
mutant never runs as a silent no-op. `baseline` is the unedited copy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SGL = "harness/backends/sglang_jax/rollout.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # what a user of the rollout would see
    path: str
    old: str
    new: str


MUTANTS = [
    Mutant("no_flush_after_swap", "no cache flush after a weight swap (sglang-jax radix cache keeps the old KV)",
           "harness/backends/sglang_jax/engine.py", "        if flush:\n            compat.flush_cache(",
           "        if False:\n            compat.flush_cache("),
    Mutant("sampler_key_reused", "seeded sampler reuses its random key at every position",
           "harness/backends/sglang_jax/compat.py", "key = jax.random.fold_in(jax.random.PRNGKey(s), p)",
           "key = jax.random.PRNGKey(s)"),
    Mutant("top_k_dropped", "top_k not sent to the engine", SGL, "        if base_seed is not None:\n",
           '        p.pop("top_k", None)\n        if base_seed is not None:\n'),
    Mutant("top_p_dropped", "top_p not sent to the engine", SGL, "        if base_seed is not None:\n",
           '        p.pop("top_p", None)\n        if base_seed is not None:\n'),
    Mutant("min_p_dropped", "min_p not sent to the engine", SGL, "        if base_seed is not None:\n",
           '        p.pop("min_p", None)\n        if base_seed is not None:\n'),
    Mutant("same_seed_every_row", "every row of a tunix batch given the batch seed (GRPO groups collapse)", SGL,
           'p["sampling_seed"] = row_seed(seed, i, len(ids))', 'p["sampling_seed"] = seed'),
    Mutant("row_gets_previous_params", "row i of a batch sent row i-1's sampling parameters", SGL,
           "params = [dict(p or {}) for p in params]",
           "params = [dict(params[i - 1] or {}) for i in range(len(params))]"),
    Mutant("n_samples_reversed", "n > 1 samples returned in reverse order", SGL, "res.samples.append(sample)",
           "res.samples.insert(0, sample)"),
    Mutant("left_pad_kept", "get_per_token_logps keeps the left pads as prompt tokens", SGL,
           "        scored = self.score_batch(prompts, completions)\n",
           "        prompts = [[int(t) for t in row] for row in np.asarray(prompt_tokens)]\n"
           "        scored = self.score_batch(prompts, completions)\n"),
    Mutant("eos_id_is_pad", "eos_id() returns the pad id", SGL,
           "return int(eid if eid is not None else self._eos_ids[0])", "return int(tok.pad_token_id)"),
    Mutant("one_default_seed", "every unseeded request given one default seed", SGL,
           "seed = random.SystemRandom().randrange(SEED_MASK + 1)", "seed = 42"),
    Mutant("vllm_no_prefix_reset", "VllmRollout does not reset vLLM's prefix cache after a weight update",
           "harness/backends/vllm_rollout.py", "        if not self.llm.reset_prefix_cache():", "        if False:"),
]
BY_NAME = {m.name: m for m in MUTANTS}


def apply(m: Mutant, tree: Path) -> None:
    """Edit the copy at `tree`; the edit's text must occur exactly once."""
    f = tree / m.path
    src = f.read_text()
    if src.count(m.old) != 1:
        raise SystemExit(f"mutant {m.name}: {m.path} contains its text {src.count(m.old)} times, not once "
                         "(the code moved: update MUTANTS)")
    f.write_text(src.replace(m.old, m.new))


def prepare(dest: Path, names: list[str]) -> None:
    for name in names:
        if name != "baseline" and name not in BY_NAME:
            raise SystemExit(f"unknown mutant {name!r} (list: {', '.join(BY_NAME)})")
        tree = dest / name
        if tree.exists():
            raise SystemExit(f"{tree} exists: remove it or choose another --dest")
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        if name != "baseline":
            apply(BY_NAME[name], tree)
        print(f"{tree}: {name}")


def _failing(run: Path) -> tuple[dict, set[tuple[str, str, str]]]:
    """The run's counts (from checks.json: a re-compare rewrites it, not always summary.json) and its
    failing or erroring verdicts."""
    verdicts = json.loads((run / "checks.json").read_text())["verdicts"]
    bad = {(v["check"], v["case"], ",".join(v["backends"])) for v in verdicts if v["verdict"] in ("fail", "error")}
    counts = {o: sum(v["verdict"] == o for v in verdicts) for o in ("pass", "fail", "error", "skipped", "measured")}
    run_json = json.loads((run / "run.json").read_text())
    wall = run_json.get("finished_at", 0) - run_json.get("started_at", 0)
    return {"verdict": "fail" if bad else "pass", "counts": {**counts, "total": len(verdicts)},
            "wall_s": round(wall)}, bad


def table(runs: Path, out: Path | None) -> None:
    """Per mutant run: the verdicts failing (or erroring) in it and not in the baseline run."""
    base_info, base_bad = _failing(runs / "baseline")
    rows = {"baseline": {**base_info, "new_failures": sorted(base_bad)}}
    print(f"baseline: {base_info}")
    for m in MUTANTS:
        if not (runs / m.name / "checks.json").exists():
            print(f"{m.name}: not run")
            continue
        info, bad = _failing(runs / m.name)
        new = sorted(bad - base_bad)
        rows[m.name] = {**info, "bug": m.bug, "new_failures": new}
        print(f"{m.name}: {info}")
        for c, case, b in new:
            print(f"    {c} {case} [{b}]")
        if not new:
            print("    NOT CAUGHT")
    if out:
        out.write_text(json.dumps(rows, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    p = sub.add_parser("prepare")
    p.add_argument("--dest", type=Path, required=True)
    p.add_argument("names", nargs="*")
    t = sub.add_parser("table")
    t.add_argument("runs", type=Path)
    t.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "list":
        for m in MUTANTS:
            print(f"{m.name:26s} {m.path}: {m.bug}")
    elif a.cmd == "prepare":
        prepare(a.dest, a.names or ["baseline", *BY_NAME])
    else:
        table(a.runs, a.json)


if __name__ == "__main__":
    sys.exit(main())
