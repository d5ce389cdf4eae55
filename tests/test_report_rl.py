"""Reports of an RL run (`python -m harness.rl`): checks.json, summary.json, junit.xml and the band charts.

The run directory is built here as the RL driver leaves it (rl/plan.json, rl/runs/*.json,
records/rl/*.jsonl, rl/wall.json; no run.json, no records/*.jsonl), with synthetic training results: a
clean engine's reward rises and its trainer-vs-rollout mismatch sits at 1e-12 (sometimes exactly 0), a
stale-weights engine's reward stays flat and its k3 is ~1e1. The curves and verdicts are then produced
by the real `python -m harness.rl compare` (harness/rl/compare.py), so the report reads exactly what the
driver writes; no tunix, no engine.
"""

from __future__ import annotations

import itertools
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from harness.rundir import read_checks
from harness.report import plots, write_reports
from harness.report.data import load_run
from harness.report.summary import validate
from harness.report.plots import OUTCOME_COLORS
from harness.rl.cli import main as rl_main
from harness.rl.records import write_json, write_run_records

CLEAN, STALE = ("vanilla", "vllm"), "sglang_jax-stale"


def fake_result(algo: str, label: str, seed: int, steps: int) -> dict:
    """One training run's result file (the keys harness/rl/compare.py reads)."""
    rng = np.random.default_rng([seed, len(label), len(algo)])
    stale = label.endswith("-stale")
    out = []
    for s in range(steps):
        if stale:  # samples from the initial weights while the trainer moves on
            reward = 0.07 + rng.normal(0, 0.01)
            k3 = 10.0 * (1 + s) / steps * rng.uniform(0.5, 1.5)
            dmax = 40.0 * rng.uniform(0.5, 1.5)
        else:
            reward = 0.07 + 0.5 * s / steps + rng.normal(0, 0.02)
            k3 = 0.0 if s == 0 else 1e-12 * rng.uniform(0.1, 3)  # an exact 0: must sit on the log floor
            dmax = 1e-6 * rng.uniform(0.5, 5)
        m = {"k3_kl": k3, "logp_diff_max": dmax, "logp_diff_mean": dmax / 10, "kl": 0.0, "prob_diff_mean": 0.0,
             "prob_diff_max": 0.0, "probs_pearson_corr": 1.0, "chi2_token": 0.0, "tokens": 100.0}
        out.append({"step": s, "syncs_before": s, "reward_mean": float(reward), "reward_std": 0.1,
                    "completion_len_mean": 10.0, "identical_group_frac": 0.0, "sample": m, "score": m,
                    "example": "the girl and the <robot>"})
    return {"config": {"algo": algo, "engine": label.removesuffix("-stale"), "seed": seed, "steps": steps,
                       "stale_weights": stale},
            "label": label, "status": "ok", "steps": out, "syncs": steps, "syncs_skipped": steps if stale else 0,
            "warnings": [], "train_seconds": 2.0, "setup_seconds": 1.0, "versions": {"jax": "0.8.3"},
            "model": {"name": "tiny-test", "content_hash": "c" * 64, "path": "/nonexistent"}}


def make_rl_run(root: Path, *, labels=CLEAN + (STALE,), algos=("grpo", "ppo"), seeds: int = 4, steps: int = 8,
                broken: str | None = None) -> Path:
    """An RL run directory as `python -m harness.rl run` leaves it before its comparison.
    broken: that label's seed-1 run of every algorithm crashed (a result file with status error)."""
    run = root / "rl-test"
    for algo in algos:
        for label in labels:
            for seed in range(seeds):
                if label == broken and seed == 1:
                    write_json(run / "rl" / "runs" / f"{algo}.{label}.seed{seed}.json",
                               {"config": {"algo": algo, "engine": label, "seed": seed}, "label": label,
                                "status": "error", "error": "exit -9 (SIGKILL): <out of memory>"})
                    (run / "rl" / "logs").mkdir(parents=True, exist_ok=True)
                    (run / "rl" / "logs" / f"{algo}.{label}.seed{seed}.log").write_text(
                        "step 3\nKilled: out of memory\n")
                    continue
                r = fake_result(algo, label, seed, steps)
                write_json(run / "rl" / "runs" / f"{algo}.{label}.seed{seed}.json", r)
                write_run_records(run, r)  # records/rl/*.jsonl: must not be read as parity records
    write_json(run / "rl" / "plan.json", {"runs": [], "argv": ["harness/rl/__main__.py", "run"],
                                          "started": "2025-01-01T12:00:00"})
    write_json(run / "rl" / "wall.json", {"wall_seconds": 60.0, "runs": 1})
    return run


def compare(run: Path) -> int:
    """`python -m harness.rl compare --run RUN`: the statistics, checks.json and the reports."""
    return rl_main(["compare", "--run", str(run), "--window", "2"])


def strict(path: Path):
    def no_constants(name):
        raise AssertionError(f"{path}: non-JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=no_constants)


def section(html: str, algo: str) -> str:
    start = html.index(f'id="rl-{algo}"')
    return html[start:html.index("</section>", start)]


@pytest.fixture(scope="module")
def stale_run(tmp_path_factory):
    run = make_rl_run(tmp_path_factory.mktemp("rl"))
    code = compare(run)
    return run, code


def test_summary_holds_the_rl_verdicts(stale_run):
    run, code = stale_run
    comparison = strict(run / "rl" / "comparison.json")
    verdicts = comparison["verdicts"]
    assert code == comparison["exit_code"]  # exit code semantics unchanged
    summary = strict(run / "summary.json")
    validate(summary)
    # the verdict follows the RL verdicts, and nothing about the run's layout counts against it
    outcomes = {v["verdict"] for v in verdicts}
    assert summary["verdict"] == ("error" if "error" in outcomes else "fail" if "fail" in outcomes else "pass")
    assert summary["verdict"] == "fail"  # the stale engine is flagged, nothing errored
    assert summary["problems"] == [] and summary["warnings"] == []
    got = [(c["name"], c["case"], c["backends"], c["verdict"]) for c in summary["checks"]]
    assert got == [(v["check"], v["case"], v["backends"], v["verdict"]) for v in verdicts]
    assert summary["counts"]["total"] == len(verdicts)
    # engines are the backends, each ran; every engine pair has its curve-parity verdicts
    labels = list(CLEAN + (STALE,))
    assert set(summary["backends"]) == set(labels)
    assert all(b["status"] == "ok" for b in summary["backends"].values())
    pairs = {tuple(sorted(p["backends"])) for p in summary["pairs"] if len(p["backends"]) == 2}
    assert pairs == {tuple(sorted(p)) for p in itertools.combinations(labels, 2)}
    stale_pairs = [p for p in summary["pairs"] if STALE in p["backends"] and len(p["backends"]) == 2]
    assert stale_pairs and all("rl.curve_parity" in p["checks"] for p in stale_pairs)
    assert summary["provenance"]["model"]["content_hash"] == "c" * 64
    assert summary["provenance"]["argv"] == ["harness/rl/__main__.py", "run"]


def test_checks_json_is_harness_compare_format(stale_run):
    run, _ = stale_run
    verdicts = read_checks(run)  # harness.compare's reader: schema_version and Verdict models
    assert [v.model_dump(mode="json") for v in verdicts] == strict(run / "rl" / "comparison.json")["verdicts"]


def test_junit_has_every_rl_verdict(stale_run):
    run, _ = stale_run
    verdicts = strict(run / "rl" / "comparison.json")["verdicts"]
    root = ET.parse(run / "junit.xml").getroot()
    cases = [tc for tc in root.iter("testcase") if tc.get("classname", "").startswith("rl.")]
    assert len(cases) == len(verdicts)
    assert sum(1 for tc in cases if tc.find("failure") is not None) == sum(v["verdict"] == "fail" for v in verdicts)
    names = {(tc.get("classname"), tc.get("name")) for tc in cases}
    for v in verdicts:
        assert (v["check"], f"{v['case']}[{'-vs-'.join(v['backends'])}]") in names


def test_html_has_band_charts_and_verdict_rows(stale_run):
    run, _ = stale_run
    html = (run / "index.html").read_text()
    assert 'data-verdict="fail"' in html
    assert "default-src 'none'" in html and "http://" not in html.replace("http://www.w3.org", "")
    assert 'id="dlogp"' not in html and 'id="cases"' not in html  # no parity records: no parity sections
    verdicts = strict(run / "rl" / "comparison.json")["verdicts"]
    for algo in ("grpo", "ppo"):
        sec = section(html, algo)
        svgs = re.findall(r"<svg.*?</svg>", sec, flags=re.S)
        titles = [re.search(r"<title>(.*?)</title>", s).group(1) for s in svgs]
        assert any("reward" in t for t in titles) and any("mismatch" in t for t in titles)
        bands = [s for t, s in zip(titles, svgs) if "curve parity" not in t]
        assert all(s.count("<polygon") >= 3 for s in bands)  # a band per engine
        assert any("completion length" in t for t in titles)
        # the equivalence chart: a row per engine pair and metric, the margins drawn at +-1
        parity = [s for t, s in zip(titles, svgs) if "curve parity" in t]
        assert len(parity) == 1
        n_rows = sum(len(v["data"]["metrics"]) for v in verdicts if v["case"] == algo and v["check"] == "rl.curve_parity")
        assert parity[0].count("<circle") == n_rows == 3 * 4
        assert parity[0].count("<title>margin</title>") == 2
        assert OUTCOME_COLORS["different"] in parity[0] and OUTCOME_COLORS["equivalent"] in parity[0]
        table = sec[sec.index(f'id="rl-verdicts-{algo}"'):]
        rows = re.findall(r'<tr class="(pass|fail|error|skipped)">', table)
        assert sorted(rows) == sorted(v["verdict"] for v in verdicts if v["case"] == algo)
    for label in CLEAN + (STALE,):
        assert f'id="backend-{label}"' in html


def test_stale_mismatch_on_the_log_axis():
    """A stale engine (k3 ~1e1) next to clean ones (1e-12 and exact zeros, t-intervals reaching below 0)."""
    steps = 8
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.1, 3, size=(2, steps)) * 1e-12
    clean[:, 0] = 0.0
    stale = rng.uniform(5, 20, size=(2, steps))

    def band(seeds):
        mean = seeds.mean(axis=0)
        half = 3 * seeds.std(axis=0)  # wide enough that lo < 0 somewhere
        return plots.Band("x", "#000", mean.tolist(), (mean - half).tolist(), (mean + half).tolist(),
                          [(str(i), s.tolist()) for i, s in enumerate(seeds)])

    b_clean, b_stale = band(clean), band(stale)
    assert min(b_clean.lo) < 0
    svg = plots.band_chart([b_clean._replace(name="vllm", color="#1f77b4"),
                            b_stale._replace(name=STALE, color="#d62728")],
                           title="k3", y_label="k3", log_y=True, threshold=1e-3)
    root = ET.fromstring(svg)  # well-formed
    height = float(root.get("height"))
    ys = {}
    for el in root.iter():
        if el.tag == "polyline":
            pts = [tuple(map(float, p.split(","))) for p in el.get("points").split()]
            assert all(0 <= y <= height for _, y in pts)
            name = el.find("title").text
            ys.setdefault(name, []).extend(y for _, y in pts)
    # every stale point is drawn above (smaller y) every clean point
    assert max(ys[f"{STALE}: mean"]) < min(ys["vllm: mean"])
    labels = [t.text for t in root.iter("text")]
    assert any(t.startswith("≤1e") for t in labels)  # the floor that holds zeros and negative band ends
    assert f"threshold {plots.fmt(1e-3)}" in labels


def test_linear_band_chart_is_well_formed():
    b = plots.Band("vanilla", "#2ca02c", [0.1, None, 0.3], [0.05, None, 0.2], [0.15, None, 0.4],
                   [("0", [0.1, 0.2, 0.3])])
    root = ET.fromstring(plots.band_chart([b], title="reward", y_label="reward"))
    assert len(root.findall("polygon")) == 2  # the missing step splits the band


def test_failed_training_run_is_an_error_from_its_verdict(tmp_path):
    run = make_rl_run(tmp_path, labels=("vanilla", "vllm"), algos=("grpo",), seeds=3, broken="vllm")
    assert compare(run) == 2
    summary = strict(run / "summary.json")
    validate(summary)
    assert summary["verdict"] == "error" and summary["problems"] == []
    runs = [c for c in summary["checks"] if c["name"] == "rl.run"]
    assert [(c["backends"], c["verdict"]) for c in runs] == [(["vllm"], "error")]
    assert summary["backends"]["vllm"]["status"] == "failed" and summary["backends"]["vanilla"]["status"] == "ok"
    html = (run / "index.html").read_text()
    assert "Killed: out of memory" in html  # the failed run's log tail
    failing = html[html.index('id="failing-table"'):html.index('id="backends"')]
    assert "rl.run" in failing and "&lt;out of memory&gt;" in failing  # listed, not folded away


def test_load_run_of_an_rl_directory(stale_run, tmp_path):
    run, _ = stale_run
    data = load_run(run)
    assert data.kind == "rl" and data.backends[0] == "vanilla"  # the driver's order: the baseline first
    assert set(data.backends) == set(CLEAN + (STALE,))
    assert data.problems == [] and data.warnings == []
    assert not data.generations and not data.sessions  # records/rl/ is not read as parity records
    assert {c["algo"] for c in data.extras["rl_curves"]} == {"grpo", "ppo"}
    # not compared yet: the hint names the RL compare, not `parity compare`
    fresh = make_rl_run(tmp_path, algos=("grpo",))
    data = load_run(fresh)
    assert any("python -m harness.rl compare" in p for p in data.problems)


def test_driver_files_are_not_figures_and_plain_figures_still_show(stale_run, tmp_path):
    run, _ = stale_run
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(run, copy)
    (copy / "rl" / "extra.json").write_text(json.dumps({"series": {"vllm": [[0, 0.1], [1, 0.2]]}, "verdict": "pass"}))
    (copy / "rl" / "comparison.json").write_text("not json")  # never read by the report
    summary = write_reports(copy)
    assert summary["problems"] == [] and summary["warnings"] == []
    html = (copy / "index.html").read_text()
    assert "<b>extra</b>" in html and 'id="rl-grpo"' in html
