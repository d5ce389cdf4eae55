"""Exit codes the way CI sees them: `./dev parity` and `./dev nox -s compare` from the shell.

0 every check passed, 1 a parity check failed, 2 a harness, configuration or data
error. Configuration errors must create no run directory and leave reports/latest
alone. The failing verdicts are real: records of the reference and vLLM on
tests/e2e/data/tiny.yaml, compared under tiny-strict.yaml (the same cases, so the
same records, with a logprob tolerance far below float32 noise), or a record file
cut short as a killed writer leaves it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.model import embedded

ROOT = Path(__file__).parent.parent.parent
DATA = ROOT / "tests" / "e2e" / "data"
TIMEOUT = 3000


def dev(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["./dev", *args], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


def tree(d: Path) -> dict:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in sorted(d.rglob("*"))} if d.exists() else {}


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("reports")
    (d / "latest").mkdir()
    (d / "latest" / "summary.json").write_text("{}\n")  # an earlier run's report, which errors must not replace
    return d


@pytest.fixture(scope="module")
def recorded(out) -> subprocess.CompletedProcess:
    """The pass: both real engines' records of the tiny suite (used again by the failure cases)."""
    return dev("parity", "--suite", str(DATA / "tiny.yaml"), "--backends", "reference,vllm", "--out", str(out),
               "--run-id", "ok", "--no-selftest", "--quiet")


def bad_suite(tmp_path: Path) -> list[str]:
    p = tmp_path / "bad.yaml"
    p.write_text((DATA / "tiny.yaml").read_text().replace("max_tokens: 8}", 'max_tokens: 8, seed: "42"}'))
    return ["--suite", str(p)]


def bad_model(tmp_path: Path) -> list[str]:
    d = tmp_path / "model"
    shutil.copytree(embedded("A").path, d)
    with (d / "model.safetensors").open("r+b") as fh:  # an interrupted download
        fh.truncate((d / "model.safetensors").stat().st_size // 2)
    return ["--suite", str(DATA / "tiny.yaml"), "--model", str(d)]


def bad_prompt(tmp_path: Path) -> list[str]:
    p = tmp_path / "bad.yaml"
    p.write_text((DATA / "tiny.yaml").read_text().replace("{ids: [100, 7]}", "{ids: [100, 7, 99999]}"))
    return ["--suite", str(p)]


def long_text_prompt(tmp_path: Path) -> list[str]:
    """Text: only the model's tokenizer (in a backend's venv) can tell; it is asked before anything is written."""
    p = tmp_path / "bad.yaml"
    p.write_text((DATA / "tiny.yaml").read_text().replace("{ids: [100, 7]}", '"' + "the robot walked on " * 300 + '"'))
    return ["--suite", str(p)]


@pytest.mark.parametrize("make, said", [(bad_suite, "field 'sampling.seed'"),
                                        (bad_model, "model.safetensors: truncated"),
                                        (bad_prompt, "field 'prompts.1': token id 99999 >= vocab_size"),
                                        (long_text_prompt, "new tokens exceed the model's context of 512")])
def test_parity_configuration_errors_exit_2_and_write_nothing(out, tmp_path, make, said):
    before = tree(out)
    p = dev("parity", *make(tmp_path), "--backends", "reference", "--out", str(out), "--run-id", "bad",
            "--no-selftest")
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert said in p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert tree(out) == before  # no run directory, reports/latest untouched


def test_parity_pass_exits_0(recorded, out):
    assert recorded.returncode == 0, recorded.stderr[-4000:]
    assert (out / "latest" / "index.html").is_file()


def test_parity_failure_exits_1(recorded, out):
    """The recorded run again under the strict tolerances: nothing left to record, the checks fail."""
    assert recorded.returncode == 0
    p = dev("parity", "--suite", str(DATA / "tiny-strict.yaml"), "--backends", "reference,vllm", "--out", str(out),
            "--run-id", "ok", "--resume", "--no-selftest", "--quiet")
    assert p.returncode == 1, p.stderr[-4000:]
    assert "verdict FAIL" in p.stdout + p.stderr  # nox passes the harness's stderr on as its stdout


@pytest.fixture
def run_copy(recorded, out, tmp_path) -> Path:
    assert recorded.returncode == 0
    d = tmp_path / "run"
    shutil.copytree(out / "ok", d, ignore=shutil.ignore_patterns("state"))
    return d


def compare(run_dir: Path, suite: Path) -> subprocess.CompletedProcess:
    return dev("nox", "-s", "compare", "--", "--run", str(run_dir), "--suite", str(suite))


def test_compare_pass_exits_0(run_copy):
    p = compare(run_copy, DATA / "tiny.yaml")
    assert p.returncode == 0, p.stdout[-3000:]
    assert (run_copy / "summary.json").is_file()


def test_compare_failure_exits_1(run_copy):
    p = compare(run_copy, DATA / "tiny-strict.yaml")
    assert p.returncode == 1, p.stdout[-3000:]


def test_compare_bad_suite_exits_2(run_copy, tmp_path):
    p = compare(run_copy, Path(bad_suite(tmp_path)[1]))
    assert p.returncode == 2 and "field 'sampling.seed'" in p.stdout, p.stdout[-3000:]


def test_compare_bad_prompt_exits_2(run_copy, tmp_path):
    """A suite whose prompt the run's model cannot have is a configuration error, not a case without records."""
    p = compare(run_copy, Path(bad_prompt(tmp_path)[1]))
    assert p.returncode == 2 and "field 'prompts.1': token id 99999 >= vocab_size" in p.stdout, p.stdout[-3000:]
    assert not (run_copy / "checks.json").exists()


@pytest.mark.parametrize("defect, said", [
    (lambda text: text[:-40], "last line cut off"),
    (lambda text: text.replace('"finish_reason":', '"finish_reason_x":', 1), "field 'finish_reason'"),
])
def test_compare_bad_record_file_exits_2(run_copy, defect, said):
    f = run_copy / "records" / "vllm.generate.jsonl"
    f.write_text(defect(f.read_text()))
    p = compare(run_copy, DATA / "tiny.yaml")
    assert p.returncode == 2, p.stdout[-3000:]
    assert "vllm.generate.jsonl:" in p.stdout and said in p.stdout, p.stdout[-3000:]
    assert not (run_copy / "checks.json").exists()  # no verdicts from a run that could not be read
