"""Read the installed engines' sampling-parameter classes: `python -m harness.sampling.introspect`.

Run it with each backend venv's interpreter (each sees only its own engine):

    ~/.cache/rollout-parity/nox/vllm/bin/python -m harness.sampling.introspect            # JSON on stdout
    ~/.cache/rollout-parity/nox/sglang_jax/bin/python -m harness.sampling.introspect --check
    ... -m harness.sampling.introspect --write      # refresh harness/sampling/fields/<engine>.json

What is read, per engine (absent ones are left out), is declared by each engine's sampling dialect
(`SamplingDialect.introspect`, in the engine's backend module, named by its registry entry): vLLM's
`SamplingParams` struct fields, sglang-jax's SamplingParams signature and `Engine.generate`'s request-level
arguments, tunix's `RolloutConfig` fields.

`--check` compares with the mapping table (harness.sampling.table) and exits 1, naming every field
the table does not cover and every covered field the engine no longer has, and every default that
changed. The committed snapshots in fields/ let the driver (which has no engine) build the table.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
from importlib import metadata
from pathlib import Path

FIELDS_DIR = Path(__file__).parent / "fields"


def plain(v):
    """A JSON-able spelling of a default value."""
    if isinstance(v, enum.Enum):
        return f"{type(v).__name__}.{v.name}"
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if callable(v) or type(v).__name__ == "Factory":
        return "<factory>"
    return repr(v)


def version(*dists: str) -> tuple[str, str] | None:
    for d in dists:
        try:
            return d, metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def readers() -> dict:
    """engine -> its reader (the engine's sampling dialect declares it: harness.backends.*)."""
    from harness.sampling.mapping import dialects

    return {name: d.introspect for name, d in dialects().items() if d.introspect is not None}


def read(engine: str) -> dict | None:
    """ENGINE's installed sampling-parameter class, read by its dialect's reader (None: not installed here)."""
    return readers()[engine]()


def introspect(engines: list[str] | None = None) -> dict[str, dict]:
    out = {}
    found = readers()
    for name in engines or list(found):
        try:
            got = found[name]()
        except ImportError:
            got = None
        if got is not None:
            out[name] = got
    return out


def snapshot_path(engine: str) -> Path:
    return FIELDS_DIR / f"{engine}.json"


def load_snapshots() -> dict[str, dict]:
    """The committed introspection results (what the driver builds the table from)."""
    out = {}
    for p in sorted(FIELDS_DIR.glob("*.json")):
        doc = json.loads(p.read_text())
        out[doc["engine"]] = doc
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.sampling.introspect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", action="append", choices=sorted(readers()), help="only these (default: all importable)")
    ap.add_argument("--check", action="store_true", help="exit 1 when the table does not cover what is installed")
    ap.add_argument("--write", action="store_true", help="write fields/<engine>.json snapshots")
    args = ap.parse_args(argv)
    found = introspect(args.engine)
    if not args.check:
        print(json.dumps(found, indent=1))
    if args.write:
        FIELDS_DIR.mkdir(exist_ok=True)
        for name, doc in found.items():
            snapshot_path(name).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
            print(f"wrote {snapshot_path(name)}", file=sys.stderr)
    if args.check:
        from harness.sampling.table import coverage_problems

        problems = {name: coverage_problems(doc) for name, doc in found.items()}
        for name, probs in problems.items():
            doc = found[name]
            status = "OK" if not probs else f"{len(probs)} problem(s)"
            print(f"{name} {doc['version']}: {len(doc['fields'])} fields"
                  + (f" + {len(doc.get('request_fields', {}))} request fields" if doc.get("request_fields") else "")
                  + f": {status}")
            for p in probs:
                print(f"  - {p}")
        if not found:
            print("no engine importable in this interpreter", file=sys.stderr)
            return 2
        return 1 if any(problems.values()) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
