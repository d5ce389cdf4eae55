"""`--model DIR` without `--model-b`: the weight-update cases are skipped with the reason, never an error."""

from pathlib import Path

from harness.checks.data import RunData
from harness.checks.weights import weight_update
from harness.records import SessionRecord
from harness.suite import load_suite

ROOT = Path(__file__).parent.parent


def _session(backend: str, models: dict) -> SessionRecord:
    return SessionRecord(run_id="r", backend=backend, phase="score", versions={}, device="cpu", model=models["A"],
                         models=models, started_at=0.0)


def test_weight_update_is_skipped_without_weight_set_b(tmp_path):
    suite = load_suite(ROOT / "cases" / "default.yaml")
    back = suite.case("update-back-a")
    a = {"path": "/m", "content_hash": "h", "name": "m"}
    manifest = {"backends": ["reference", "vllm"], "model": a, "model_b": None}
    ctx = RunData(tmp_path, suite, manifest, [])
    vs = weight_update(ctx, back)
    assert [v.verdict for v in vs] == ["skipped", "skipped"]
    assert all("no weight set B (--model without --model-b)" in v.detail for v in vs)
    # a bare record directory (no run.json): the session records say which sets there were
    bare = RunData(tmp_path, suite, {}, [_session("reference", {"A": a})])
    assert [v.verdict for v in weight_update(bare, back)] == ["skipped"]
    # with B in the run the check runs (here: errors for lack of records, as it should)
    with_b = RunData(tmp_path, suite, {**manifest, "model_b": a}, [])
    assert {v.verdict for v in weight_update(with_b, back)} == {"error"}
