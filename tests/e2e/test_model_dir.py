"""`--model DIR` without `--model-b`: the weight-set-B cases and update-back-a's weight_update verdict are
skipped with the reason, and the run exits 0 when everything else passes (a real reference run)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from harness.model import embedded

ROOT = Path(__file__).parent.parent.parent


def test_model_dir_alone_skips_the_update_cases_and_exits_0(tmp_path):
    model = tmp_path / "my-model"
    shutil.copytree(embedded("A").path, model)
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--out", str(tmp_path / "reports"),
                           "--run-id", "dir", "--model", str(model), "--backends", "reference", "--no-selftest"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "reports" / "dir" / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["provenance"]["model_b"] is None
    checks = summary["checks"]
    on_b = [c for c in checks if c["case"] == "update-b"]
    assert on_b and all(c["verdict"] == "skipped" for c in on_b)
    # pair checks are skipped first for want of a second backend in this reference-only run; the reference's
    # own checks name the missing weight set
    own = [c for c in on_b if c["backends"] == ["reference"]]
    assert own and all("pass --model-b" in c["detail"] for c in own)
    back = [c for c in checks if c["case"] == "update-back-a" and c["name"] == "weight_update"]
    assert back and all(c["verdict"] == "skipped" and "--model without --model-b" in c["detail"] for c in back)
    assert any(c["case"] == "update-back-a" and c["verdict"] == "pass" for c in checks)
