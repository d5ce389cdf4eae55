"""parity bench: the synthetic-record generator makes valid records, bench.json has the documented shape.

No engine and no timing here (speed is measured by `parity bench` only)."""

from __future__ import annotations

import json

from harness import bench_worker
from harness.bench import build_bench, format_table, make_synthetic_run
from harness.cli import build_parser
from harness.records import read_records
from harness.suite import load_suite


def test_synthetic_records_are_valid_and_match_the_suite(tmp_path):
    info = make_synthetic_run(tmp_path / "run", 1)  # smallest: one replica of the golden run
    assert info["replicas"] == 1
    run = tmp_path / "run"
    suite = load_suite(run / "suite.yaml")
    hashes = {c.id: c.content_hash() for c in suite.cases}
    total = 0
    for f in sorted((run / "records").glob("*.jsonl")):
        recs = read_records(f, tolerate_torn_tail=False)  # validates every record
        total += len(recs)
        for r in recs:
            key = getattr(r, "key", None)
            if key is not None:
                assert key.case_id.endswith("-s00000")
                assert hashes[key.case_id] == key.case_hash  # the checks will compare them
    assert total == info["records"] > 0
    assert json.loads((run / "run.json").read_text())["suite"].endswith("suite.yaml")


def test_synthetic_records_scale_with_replicas(tmp_path):
    one = make_synthetic_run(tmp_path / "a", 1)
    two = make_synthetic_run(tmp_path / "b", 2 * one["records"])
    assert two["replicas"] == 2
    ids = {c.id for c in load_suite(tmp_path / "b" / "suite.yaml").cases}
    assert len(ids) == 2 * len(load_suite(tmp_path / "a" / "suite.yaml").cases)


def _worker(backend: str, **over) -> dict:
    r = {"backend": backend, "device": "cpu", "engine_start_s": 3.0, "first_call_s": 2.0,
         "generate": {"greedy/lp": {"tokens_per_s": 100.0}, "greedy/nolp": {"tokens_per_s": 110.0},
                      "sampled/lp": {"tokens_per_s": 90.0}, "sampled/nolp": {"tokens_per_s": 99.0}},
         "logprob_on_off_ratio": {"greedy": 1.1, "sampled": 1.1}, "score": {"tokens_per_s": 500.0},
         "update_params": {"median_s": 0.5}, "suite_warm_s": 4.0, "recompiles_after_warmup": None}
    r.update(over)
    return r


def test_bench_json_has_the_documented_shape():
    results = {"vllm": _worker("vllm"), "sglang_jax": _worker("sglang_jax", recompiles_after_warmup=0,
                                                                 engine_start_s=6.0)}
    overhead = {"records": 100, "replicas": 1, "generate_records_s": 0.1, "compare_s": 1.0, "report_s": 2.0,
                "compare_report_s": 3.0, "verdicts": 10, "verdict": "pass"}
    bench = json.loads(json.dumps(build_bench(results, overhead, "test")))  # JSON-serialisable
    assert isinstance(bench["device"], str) and bench["note"] == "test"
    for f in bench["figures"]:  # docs/report.md: title, unit, lower_is_better, values, note
        assert set(f) >= {"title", "unit", "lower_is_better", "values", "note"}
        assert all(v is None or isinstance(v, (int, float)) for v in f["values"].values())
    by = {f["title"]: f for f in bench["figures"]}
    assert by["engine start"]["values"] == {"vllm": 3.0, "sglang_jax": 6.0}
    assert bench["ratios"]["engine start"] == 2.0
    assert by["JIT recompiles after warm-up"]["values"]["vllm"] is None  # n/a, said so
    assert "n/a for vllm" in by["JIT recompiles after warm-up"]["note"]
    assert any(t.startswith("harness compare + report") for t in by)
    table = format_table(bench)
    assert "n/a" in table and "sglang_jax/vllm" in table


def test_a_failed_backend_is_reported_not_dropped():
    bench = build_bench({"vllm": _worker("vllm"), "sglang_jax": {"backend": "sglang_jax", "error": "exit 1"}},
                        None, "")
    assert "FAILED" in format_table(bench)
    assert all(set(f["values"]) == {"vllm"} for f in bench["figures"])


def test_cli_has_bench():
    args = build_parser().parse_args(["bench", "--overhead-only", "--records", "10"])
    assert args.command == "bench" and args.records == 10 and args.backends == "vllm,sglang_jax"


def test_parity_run_shows_the_last_bench(tmp_path):
    """`parity run` copies OUT/bench/bench.json into the run directory (the report's bench section),
    dated; no bench run, nothing copied."""
    from harness.run import _bench_into

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _bench_into(run_dir, tmp_path)
    assert not (run_dir / "bench.json").exists()
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench.json").write_text(json.dumps({"figures": [], "note": "median of 3"}))
    _bench_into(run_dir, tmp_path)
    doc = json.loads((run_dir / "bench.json").read_text())
    assert doc["note"].startswith("from `parity bench`") and doc["note"].endswith("median of 3")


def test_bench_worker_takes_native_paths_from_the_runner():
    """bench_worker spells no engine: a runner's `bench` names its native paths; without one, generic calls."""
    from types import SimpleNamespace

    from harness.spec import SamplingSpec

    calls = []

    class Generic:
        bench = None

        def generate(self, prompts, spec):
            calls.append(("generate", len(prompts)))
            return [[SimpleNamespace(completion_ids=[1, 2])] for _ in prompts]

    spec = SamplingSpec(temperature=0.0)
    suite = SimpleNamespace(cases=[SimpleNamespace(id="a", repeats=2, alone=True, sampling=spec),
                                   SimpleNamespace(id="b", repeats=1, alone=False, sampling=spec)])
    prompt_ids = {"a": [[1], [2]], "b": [[3], [4], [5]]}
    ad = bench_worker.native_bench(Generic())
    assert type(ad) is bench_worker.NativeBench and not ad.can_turn_off
    assert ad.generate([[1]], spec, True) == [[[1, 2]]]
    calls.clear()
    _, misses = bench_worker.suite_pass(ad, suite, prompt_ids)
    # each repeat: the batch, then every prompt alone (case a); case b's batch once; no recompile count
    assert misses is None
    assert calls == [("generate", 2), ("generate", 1), ("generate", 1)] * 2 + [("generate", 3)]

    Generic.bench = f"{__name__}:CountingBench"
    ad = bench_worker.native_bench(Generic())
    assert isinstance(ad, CountingBench)
    assert bench_worker.suite_pass(ad, suite, prompt_ids)[1] == (20 + 10 + 10) * 2 + 30


class CountingBench(bench_worker.NativeBench):
    """Native paths that count recompiles: 10 per prompt of a call."""

    counts_recompiles = True

    def suite_call(self, prompts, spec):
        return 10 * len(prompts)


def test_synthetic_records_are_in_the_current_format(tmp_path):
    """The timing measures the records a run writes today, not the version-1 reader of an older template."""
    from harness.records import SCHEMA_VERSION

    make_synthetic_run(tmp_path / "run", 1)
    lines = [json.loads(line) for f in sorted((tmp_path / "run" / "records").glob("*.jsonl"))
             for line in f.read_text().splitlines() if line.strip()]
    assert lines and {d["schema_version"] for d in lines} == {SCHEMA_VERSION}
    assert any(d.get("other_weights") for d in lines)  # the template's weight-update scores, typed
