"""The GitHub workflow is valid YAML and calls only commands the README documents."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "parity.yml"


def run_steps() -> list[str]:
    wf = yaml.safe_load(WORKFLOW.read_text())
    return [step["run"] for job in wf["jobs"].values() for step in job["steps"] if "run" in step]


def test_workflow_is_valid_yaml_with_jobs():
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert {"cpu", "generate", "score", "report"} <= set(wf["jobs"])
    for job in wf["jobs"].values():
        assert "runs-on" in job and job["steps"]


def test_every_run_step_is_a_documented_command():
    readme = ROOT.joinpath("README.md").read_text()
    documented = set(re.findall(r"^(?:[A-Z_]+=\S+ )?(\./dev [a-z]+(?: -s [a-z_]+)?(?: -- [a-z]+)?)", readme, re.M))
    assert documented, "README lists no ./dev commands"
    for cmd in run_steps():
        head = re.sub(r"\$\{\{[^}]+\}\}", "X", cmd).split(" --run")[0]
        prefix = re.match(r"(\./dev [a-z]+(?: -s [a-z_X]+)?(?: -- [a-z]+)?)", head).group(1)
        candidates = {prefix.replace("-s X", f"-s {b}") for b in ("reference", "vllm", "sglang_jax")} if "-s X" in prefix else {prefix}
        assert candidates <= documented, (cmd, candidates - documented)


def test_dev_help_exits_0_and_unknown_command_2():
    import subprocess

    ok = subprocess.run(["./dev", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "Exit codes pass through" in ok.stdout
    bad = subprocess.run(["./dev", "bogus"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown command: bogus" in bad.stderr


def test_report_step_gates_on_the_compare_session():
    """The gate is `./dev nox -s compare`, whose exit code (0/1/2) nox passes through (noxfile.run_harness)."""
    wf = yaml.safe_load(WORKFLOW.read_text())
    steps = [s.get("run", "") for s in wf["jobs"]["report"]["steps"]]
    assert any(s.startswith("./dev nox -s compare -- --run") for s in steps)
    noxfile = (ROOT / "noxfile.py").read_text()
    assert 'run_harness(venv, "compare", "--report"' in noxfile
