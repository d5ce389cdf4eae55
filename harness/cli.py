"""`parity`: record, compare, report, run. Exit codes: 0 all pass, 1 a parity check failed, 2 harness error.

    parity run                                   default suite, every backend, report in reports/latest/
    parity run --backends reference,vllm         deselect a backend (it is then not reported at all)
    parity run --model /path/to/hf-model         any local HuggingFace model directory
    parity run --dtype bfloat16                  the engines in bfloat16 (the reference stays float64)
    parity run --model zoo:qwen3-gqa-tied        a built-in model in a real checkpoint's shape (harness/model/zoo.py)
    parity tokenize --models embedded,zoo:qwen2-bias --out ids.json   how this venv tokenizes a suite
    parity record --backend vllm --suite cases/default.yaml --out reports/x   (inside that backend's venv)
    parity compare --run reports/x               checks -> reports/x/checks.json
    parity report --run reports/x                summary.json, junit.xml, index.html
    parity golden compare --run reports/x        regressions against golden/<hardware-class>/ -> reports/x/golden.json
    parity golden update --run reports/x [--yes] show the diff to the golden; write it only with --yes
    parity selftest [--run DIR | --golden DIR]   inject known defects into copies of a clean run: all must be caught
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.backends import registry
from harness.dtypes import CHOICES as DTYPE_CHOICES

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
DEFAULT_SUITE = "cases/default.yaml"


class HarnessError(RuntimeError):
    """A configuration or harness failure (exit 2), with a message that says how to fix it."""


def _add_backend_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend-opt", action="append", default=[], metavar="BACKEND.FIELD=VALUE",
                   help="a typed backend option, over the suite's `backends:` block (repeatable; e.g. "
                        "vllm.logprobs_mode=raw, vllm.profile=raw; fields: docs/extending.md and each backend's doc)")


def backend_options(backend: str, suite, items: list[str]) -> dict:
    """BACKEND's resolved options (harness.backends.options) as runner keywords; a bad one is a HarnessError."""
    from harness.backends.options import OptionsError, check_cli, parse_cli, resolve

    try:
        cli = parse_cli(items)
        check_cli(cli)
        return resolve(backend, suite.backends, cli, suite.path or "suite").model_dump(mode="json")
    except OptionsError as e:
        raise HarnessError(str(e)) from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="local HuggingFace model directory, or zoo:NAME for a model of the built-in zoo "
                        "(harness/model/zoo.py: zoo:qwen3-gqa-tied, zoo:llama-untied, zoo:qwen2-bias, "
                        "zoo:qwen3-special; default: the embedded tiny model, built on first use)")
    p.add_argument("--model-b", default=None,
                   help="second weight set of the same shape, for update_params checks "
                        "(default: the embedded or zoo model's set B; without it, cases with weights: B are skipped)")
    p.add_argument("--dtype", default=None, choices=DTYPE_CHOICES,
                   help="dtype the engines compute in (default: the suite's `dtype`, else auto = the checkpoint's "
                        "torch_dtype; the embedded model is float32). The reference always computes in float64; "
                        "an engine that cannot run in this dtype is an error")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="parity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="record every backend, compare, report (the main job)")
    run.add_argument("--suite", default=DEFAULT_SUITE, help=f"suite file (default {DEFAULT_SUITE})")
    run.add_argument("--backends", default=",".join(registry.default_backends()),
                     help=f"comma-separated backends to run (default: %(default)s; served engines: "
                          f"{', '.join(registry.served())}; a running server: NAME=URL or NAME=ENGINE:URL; any tunix "
                          "BaseRollout: NAME=module.path:Class, from PYTHONPATH or installed). "
                          "The reference is needed by most checks.")
    run.add_argument("--out", default="reports", help="parent directory of run directories (default reports/)")
    run.add_argument("--run-id", default=None, help="run directory name (default: UTC timestamp)")
    run.add_argument("--resume", action="store_true", help="continue --run-id, skipping cases already recorded")
    run.add_argument("--backend-python", action="append", default=[], metavar="NAME=WHERE",
                     help="where rollout backend NAME (--backends NAME=module.path:Class) runs: a named backend's "
                          "venv (e.g. sglang_jax), a venv directory or an interpreter (default: the reference's venv)")
    run.add_argument("--launcher", choices=["nox", "direct"], default="nox",
                     help="how to start a backend: its nox session (default; installs its venv) or this interpreter")
    run.add_argument("--timeout", type=float, default=1800.0, help="seconds per backend process (default 1800)")
    run.add_argument("--quiet", action="store_true", help="no per-case progress lines")
    run.add_argument("--fanout", type=int, default=None,
                     help=f"servers per served backend ({', '.join(registry.served())}) behind a round-robin client "
                          "(default 1; their typed option `fanout`)")
    run.add_argument("--no-selftest", action="store_true",
                     help="skip the detection matrix (defects injected into the golden run) in the report")
    _add_model_args(run)
    _add_backend_opt(run)

    rec = sub.add_parser("record", help="run a suite through one backend (inside its venv) and append records")
    rec.add_argument("--backend", required=True)
    rec.add_argument("--suite", default=DEFAULT_SUITE)
    rec.add_argument("--out", required=True, help="run directory; records go to OUT/records/")
    rec.add_argument("--phase", choices=["generate", "score", "all"], default="all")
    rec.add_argument("--run-id", default=None)
    rec.add_argument("--quiet", action="store_true")
    rec.add_argument("--case-timeout", type=float, default=900.0,
                     help="seconds one case may take before its worker is killed and the case recorded as an "
                          "error (default 900)")
    rec.add_argument("--no-isolate", action="store_true",
                     help="run the engine in this process (no crash/hang supervision; for debugging)")
    rec.add_argument("--check-only", action="store_true",
                     help="check the suite, models and prompts (tokenized) and exit; nothing is written")
    rec.add_argument("--hold", action="store_true",
                     help="with --phase all: one engine for both phases; after generating, keep it and wait for "
                          "OUT/state/BACKEND.score-go (`parity run` creates it once every backend has generated; "
                          "the generate phase's exit code is in OUT/state/BACKEND.generated.json)")
    rec.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    rec.add_argument("--state", default=None, help=argparse.SUPPRESS)
    _add_model_args(rec)
    _add_backend_opt(rec)

    cmp_ = sub.add_parser("compare", help="run the checks over a run directory's records")
    cmp_.add_argument("--run", required=True, help="run directory")
    cmp_.add_argument("--suite", default=None, help="suite file (default: the one recorded in run.json)")
    cmp_.add_argument("--report", action="store_true",
                      help="also write summary.json, junit.xml and index.html; the exit code is then the report's "
                           "verdict (what `nox -s compare` gates on)")

    rep = sub.add_parser("report", help="write summary.json, junit.xml and index.html for a compared run")
    rep.add_argument("--run", required=True)

    st = sub.add_parser("selftest", help="inject known defects into copies of a clean recorded run; every defect must "
                                         "be caught by its check and the clean run raise no alarm")
    src = st.add_mutually_exclusive_group()
    src.add_argument("--run", default=None, help="a clean recorded run directory (default: the committed golden run)")
    src.add_argument("--golden", default=None, help="a golden directory, e.g. golden/cpu-x86_64-float32")
    st.add_argument("--out", default="reports/selftest", help="where selftest.json goes (default reports/selftest/; "
                                                             "a run directory puts the matrix in its report)")
    st.add_argument("--targets", default=None, help="comma-separated engines to inject into (default: every engine)")
    st.add_argument("--defects", default=None, help="comma-separated defect names (default: all)")
    st.add_argument("--repeats", type=int, default=5, help="clean comparisons with fresh noise (default 5)")
    st.add_argument("--keep", default=None, help=argparse.SUPPRESS)

    gold = sub.add_parser("golden", help="golden baselines: compare a run with golden/<hardware-class>/, or refresh it")
    gsub = gold.add_subparsers(dest="golden_command", required=True, metavar="ACTION")
    gc = gsub.add_parser("compare", help="regressions of each backend against the golden -> RUN/golden.json")
    gc.add_argument("--run", required=True, help="run directory")
    gc.add_argument("--golden", default=None, help="golden directory (default golden/<the run's hardware class>)")
    gc.add_argument("--atol", type=float, default=None, help="logprob tolerance (default: each case's logprob_atol)")
    gu = gsub.add_parser("update", help="show what a run would change in the golden; write it with --yes")
    gu.add_argument("--run", required=True, help="a clean run directory")
    gu.add_argument("--golden", default=None, help="golden directory (default golden/<the run's hardware class>)")
    gu.add_argument("--yes", action="store_true", help="write without asking (after printing the diff)")
    gu.add_argument("--allow-failing", action="store_true",
                    help="store a run whose checks fail (the self-test then fails on it)")
    gu.add_argument("--no-derive", action="store_true",
                    help="skip the model-derived values (derived.json; needs the reference's interpreter)")

    bench = sub.add_parser("bench", help="throughput, compile, update_params and recompiles per backend, side by "
                                         "side, plus the harness's compare+report time over synthetic records")
    bench.add_argument("--backends", default=f"{registry.baseline_engine()},{registry.unit_under_test()}",
                       help="comma-separated (default %(default)s: the baseline engine and the unit under test)")
    bench.add_argument("--suite", default=DEFAULT_SUITE, help=f"suite file (default {DEFAULT_SUITE})")
    bench.add_argument("--out", default="reports/bench", help="where bench.json goes (default reports/bench/)")
    bench.add_argument("--model", default=None, help="local HF model directory (default: the embedded tiny model)")
    bench.add_argument("--new-tokens", type=int, default=32, help="new tokens per prompt (default 32)")
    bench.add_argument("--repeats", type=int, default=3, help="timed repeats per figure (default 3; median)")
    bench.add_argument("--attribution", choices=["on", "off", "only"], default="on",
                       help="the same batch through bare engine, engine + compat patches and rollout, steps timed "
                            "(docs/bench.md); only: nothing else (default on)")
    bench.add_argument("--records", type=int, default=100_000,
                       help="synthetic records for the compare+report timing (default 100000; 0 skips)")
    bench.add_argument("--overhead-only", action="store_true", help="no engines: only the compare+report timing")
    bench.add_argument("--keep-synthetic", action="store_true", help="keep OUT/synthetic-run/")
    bench.add_argument("--timeout", type=float, default=1800.0, help="seconds per backend process (default 1800)")
    bench.add_argument("--parity-run", default="reports/latest",
                       help="a recorded parity run whose wall time (run.json) is quoted (default reports/latest)")

    tok = sub.add_parser("tokenize", help="the suite's prompts as token ids with this interpreter's tokenizer "
                                          "(JSON: model -> case -> prompts), to compare tokenization across venvs")
    tok.add_argument("--suite", default=DEFAULT_SUITE, help=f"suite file (default {DEFAULT_SUITE})")
    tok.add_argument("--models", default="embedded",
                     help="comma-separated model specs: embedded, zoo:NAME or a directory (default embedded)")
    tok.add_argument("--out", required=True, help="JSON file to write")
    tok.add_argument("--backend", default=None, help="recorded in the output (nox backend sessions pass it)")

    sub.add_parser("build-model", help="build (or find) the embedded tiny model and print its hashes")
    sch = sub.add_parser("schema", help="print the record JSON schema (or the markdown of docs/records.md, or of "
                                        "docs/check-reference.md)")
    sch.add_argument("--markdown", action="store_true")
    sch.add_argument("--checks", action="store_true", help="the check reference (docs/check-reference.md)")
    return ap


def _model_refs(args) -> dict:
    from harness.model import is_built_in, resolve

    try:
        a = resolve(args.model, "A")
        if args.model_b:
            b = resolve(args.model_b, "B")
        elif is_built_in(args.model):
            b = resolve(args.model, "B")
        else:
            b = None
    except FileNotFoundError as e:
        raise HarnessError(str(e)) from None
    return {"A": a, "B": b}


def run_dtype(args, suite, model) -> str:
    """The engines' dtype: --dtype, else the suite's `dtype`, else auto (the checkpoint's)."""
    from harness.dtypes import resolve

    try:
        return resolve(args.dtype or suite.dtype, model.path)
    except ValueError as e:
        raise HarnessError(str(e)) from None


def _lock(run_dir: Path, backend: str) -> int:
    from harness.supervise import take_lock

    try:
        return take_lock(run_dir, backend)
    except RuntimeError as e:
        raise HarnessError(str(e)) from None


def cmd_record(args) -> int:
    import os

    from harness.recorder import tokenize_suite, validate_prompts
    from harness.suite import load_suite

    # Configuration errors surface here, before any engine starts or anything is written.
    suite = load_suite(args.suite)
    models = _model_refs(args)
    dtype = run_dtype(args, suite, models["A"])
    run_dir = Path(args.out)
    run_id = args.run_id or run_dir.name
    phases = ["generate", "score"] if args.phase == "all" else [args.phase]
    options = backend_options(args.backend, suite, args.backend_opt)
    if not args.worker:
        from harness.inputs import InputError, check_models

        try:
            check_models(models)
        except InputError as e:
            raise HarnessError(str(e)) from None
    prompt_ids = tokenize_suite(suite, models["A"])
    cfg = json.loads((models["A"].path / "config.json").read_text())
    validate_prompts(suite, prompt_ids, cfg["vocab_size"], cfg.get("max_position_embeddings", 1 << 30))
    if args.check_only:
        return EXIT_PASS
    if args.hold and (args.phase != "all" or args.no_isolate):
        raise HarnessError("--hold: only with --phase all and a supervised worker (not --no-isolate)")
    if not args.worker and not args.no_isolate:
        from harness.backends.base import is_backend
        from harness.recorder import pending
        from harness.supervise import repair, supervise

        if not is_backend(args.backend):
            raise HarnessError(f"unknown backend {args.backend!r}; known: {sorted(registry.BACKENDS)}")
        argv = ["record", "--backend", args.backend, "--suite", str(args.suite), "--out", str(run_dir),
                "--run-id", run_id, "--dtype", dtype]
        argv += ["--model", args.model] if args.model else []
        argv += ["--model-b", args.model_b] if args.model_b else []
        argv += ["--quiet"] if args.quiet else []
        argv += [a for o in args.backend_opt for a in ("--backend-opt", o)]
        lock = _lock(run_dir, args.backend)
        repair(run_dir, args.backend, phases)
        if not args.hold and not pending(run_dir, args.backend, suite, phases):
            print(f"[{args.backend}] {'+'.join(phases)}: every case already recorded", file=sys.stderr, flush=True)
            return EXIT_PASS
        return supervise(argv, lock=lock, run_dir=run_dir, backend=args.backend, run_id=run_id,
                         suite_name=suite.suite, case_timeout=args.case_timeout, phase=args.phase, hold=args.hold,
                         todo=lambda phase: pending(run_dir, args.backend, suite, [phase]))
    lock = None
    if args.worker:
        from harness import proctree

        def supervisor_gone() -> None:  # never a second writer: the worker goes with its supervisor
            proctree.kill_descendants()
            proctree.kill_group(os.getpgid(0))
            os._exit(2)

        proctree.watch_owner(proctree.identity(os.getppid()), supervisor_gone)
    else:
        from harness.supervise import repair

        lock = _lock(run_dir, args.backend)
        repair(run_dir, args.backend, phases)
    try:
        return _record(args, suite, models, dtype, run_dir, run_id, prompt_ids, phases, options)
    finally:
        if lock is not None:
            os.close(lock)


def _record(args, suite, models, dtype, run_dir, run_id, prompt_ids, phases, options: dict) -> int:
    """The engine in this process: every phase's cases through it, records appended."""
    import os

    from harness.backends.base import BackendUnavailable, runner_class
    from harness.dtypes import DtypeMismatch
    from harness.dtypes import require as require_dtype
    from harness.recorder import Recorder

    try:
        cls = runner_class(args.backend)
    except (KeyError, BackendUnavailable) as e:
        raise HarnessError(str(e)) from None
    errors = 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PARITY_SERVER_LOG_DIR", str(run_dir / "logs"))  # served backends' server logs
    try:
        runner = cls(models["A"], dtype=dtype, **options)
    except BackendUnavailable as e:  # e.g. a rollout whose engine cannot run on this machine: said, not a crash
        raise HarnessError(f"backend {args.backend} unavailable: {e}") from None
    runner.backend_options = options
    with runner:
        if args.backend != registry.reference():  # the reference is float64 by design, whatever the run's dtype
            try:
                require_dtype(args.backend, dtype, runner.dtype())
            except DtypeMismatch as e:
                raise HarnessError(str(e)) from None
        rec = Recorder(runner, suite, run_dir, run_id, models, prompt_ids, quiet=args.quiet)
        rec.state_path = Path(args.state) if args.state else None
        for phase in phases:
            if phase == "score" and args.hold:  # the generate phase's errors went to the supervisor's report
                rec.hold_for_score(errors, args.backend)
                errors = 0
            errors += rec.run_generate() if phase == "generate" else rec.run_score()
        if rec.state_path is not None:
            rec.state_path.unlink(missing_ok=True)  # tells the supervisor every phase finished
    return EXIT_ERROR if errors else EXIT_PASS


def cmd_compare(args) -> int:
    from harness.compare import compare

    run_dir = Path(args.run)
    if not (run_dir / "records").is_dir():
        raise HarnessError(f"--run {run_dir}: not a run directory (no records/ in it)")
    compared = compare(run_dir, args.suite)
    if args.report:
        return cmd_report(args, compared)
    outcomes = {v.verdict for v in compared.verdicts}
    return EXIT_ERROR if "error" in outcomes else EXIT_FAIL if "fail" in outcomes else EXIT_PASS


def cmd_report(args, compared=None) -> int:
    from harness.report import write_reports

    if not (Path(args.run) / "checks.json").is_file():
        raise HarnessError(f"--run {args.run}: no checks.json there (run `parity compare --run {args.run}` first)")
    summary = write_reports(Path(args.run), compared)
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL}.get(summary["verdict"], EXIT_ERROR)


def cmd_run(args) -> int:
    from harness.run import run_all

    return run_all(args)


def cmd_bench(args) -> int:
    from harness.bench import run_bench

    return run_bench(args)


def cmd_tokenize(args) -> int:
    from harness.model import resolve
    from harness.recorder import tokenize_suite
    from harness.suite import load_suite

    suite = load_suite(args.suite)
    out = {"backend": args.backend, "models": {}}
    for spec in [m.strip() for m in args.models.split(",") if m.strip()]:
        try:
            model = resolve(spec, "A")
        except FileNotFoundError as e:
            raise HarnessError(str(e)) from None
        out["models"][spec] = tokenize_suite(suite, model)
    Path(args.out).write_text(json.dumps(out, sort_keys=True) + "\n")
    return EXIT_PASS


def cmd_build_model(args) -> int:
    from harness.model import embedded

    for ws in "AB":
        m = embedded(ws)
        print(f"{m.name}: {m.path}  sha256 {m.content_hash}")
    return EXIT_PASS


def cmd_schema(args) -> int:
    from harness.records import json_schema, schema_markdown

    if args.checks:
        from harness.checks.catalog import reference_markdown

        print(reference_markdown())
    else:
        print(schema_markdown() if args.markdown else json.dumps(json_schema(), indent=2))
    return EXIT_PASS


def cmd_selftest(args) -> int:
    from harness.golden import GoldenError, default_golden
    from harness.selftest import SelftestError, format_matrix, run_selftest, write_result

    try:
        source = Path(args.run or args.golden or default_golden())
        result = run_selftest(source, targets=args.targets.split(",") if args.targets else None,
                              defects=args.defects.split(",") if args.defects else None, repeats=args.repeats,
                              workdir=Path(args.keep) if args.keep else None)
    except (GoldenError, SelftestError) as e:
        raise HarnessError(str(e)) from None
    print(format_matrix(result))
    print(f"selftest.json: {write_result(Path(args.out), result)}")
    return EXIT_PASS if result["passed"] else EXIT_FAIL


def cmd_golden(args) -> int:
    from harness.golden import GoldenError, compare_golden, outcome, update_golden, write_golden_result
    from harness.verdict import OUTCOMES

    try:
        if args.golden_command == "update":
            return update_golden(Path(args.run), Path(args.golden) if args.golden else None, args.yes,
                                 derived=not args.no_derive, allow_failing=args.allow_failing)
        verdicts, info = compare_golden(Path(args.run), Path(args.golden) if args.golden else None, args.atol)
    except GoldenError as e:
        raise HarnessError(str(e)) from None
    path = write_golden_result(Path(args.run), verdicts, info)
    for v in verdicts:
        if v.verdict != "pass":
            print(f"{v.verdict.upper():7} {v.test_id}: {v.detail}")
    counts = {o: sum(v.verdict == o for v in verdicts) for o in OUTCOMES}
    result = outcome(verdicts)
    print(f"golden {result.upper()} against {info['golden']} ({info['hardware_class']}): {counts} -> {path}")
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL}.get(result, EXIT_ERROR)


COMMANDS = {"run": cmd_run, "record": cmd_record, "compare": cmd_compare, "report": cmd_report,
            "selftest": cmd_selftest, "golden": cmd_golden, "build-model": cmd_build_model, "bench": cmd_bench,
            "schema": cmd_schema, "tokenize": cmd_tokenize}


def main(argv: list[str] | None = None) -> int:
    from harness.records import RecordFileError
    from harness.suite import SuiteError

    import os

    # No hub is reachable on CI or here: never let a library try.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (SuiteError, HarnessError, RecordFileError, FileNotFoundError) as e:
        print(f"parity {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
