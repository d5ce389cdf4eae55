"""harness/steptimer.py and bench attribution arithmetic: pure logic, fake classes, no timing assertions."""

from __future__ import annotations

import pytest

from harness import steptimer
from harness.bench import attribution, format_attribution


class Batch:
    def __init__(self, decode: bool):
        self.decode = decode


class FakeScheduler:
    def __init__(self, runner):
        self.runner = runner

    def run_batch(self, batch):
        self.runner.forward()
        self.runner.sample()
        return "out"


class FakeRunner:
    def forward(self):
        return "logits"

    def sample(self):
        return "ids"


def test_wrap_counts_steps_by_mode_and_the_forward_and_sample_inside_them():
    steptimer.wrap(FakeScheduler, "run_batch", "step", mode_of=lambda self, b: "decode" if b.decode else "prefill")
    steptimer.wrap(FakeRunner, "forward", "forward")
    steptimer.wrap(FakeRunner, "sample", "sample", block=lambda out: None)
    steptimer.wrap(FakeRunner, "sample", "sample")  # a second install is a no-op, not a double count
    steptimer.take()
    s = FakeScheduler(FakeRunner())
    assert s.run_batch(Batch(False)) == "out"
    for _ in range(3):
        s.run_batch(Batch(True))
    got = steptimer.take()
    assert got["prefill"]["steps"] == 1 and got["decode"]["steps"] == 3
    for m in got.values():
        assert m["step_s"] >= m["forward_s"] + m["sample_s"] >= 0
        assert m["forward_s"] > 0 and m["sample_s"] > 0
    assert steptimer.take() == {}  # take() resets


def test_breakdown_gives_medians_over_calls_and_splits_the_median_call():
    st = {"decode": {"steps": 4, "step_s": 0.4, "forward_s": 0.2, "sample_s": 0.1},
          "prefill": {"steps": 1, "step_s": 0.2, "forward_s": 0.15, "sample_s": 0.0}}
    slow = {"decode": {"steps": 4, "step_s": 4.0, "forward_s": 2.0, "sample_s": 1.0}}  # a call the machine slowed
    b = steptimer.breakdown([1.0, 1.2, 9.0], [st, st, slow])
    assert b["calls"] == 3 and b["call_s"] == pytest.approx(1.2)
    assert b["decode"]["steps_per_call"] == 4
    assert b["decode"]["step_ms"] == pytest.approx(100.0)  # the median, not the slow call's mean
    assert b["decode"]["forward_ms"] == pytest.approx(50.0) and b["decode"]["sample_ms"] == pytest.approx(25.0)
    assert b["decode"]["host_ms"] == pytest.approx(25.0)
    assert b["prefill"]["step_ms"] == pytest.approx(200.0)
    assert b["outside_steps_s"] == pytest.approx(0.6)  # median of 0.4, 0.6 and 5.0
    # the median call (1.2 s): device 0.45, host 0.15, outside 0.6
    assert b["shares"]["device"] == pytest.approx(0.45 / 1.2)
    assert b["shares"]["host"] == pytest.approx(0.15 / 1.2)
    assert b["shares"]["outside"] == pytest.approx(0.6 / 1.2)
    assert sum(b["shares"].values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        steptimer.breakdown([1.0], [])


def _layer(s: float) -> dict:
    st = {"decode": {"steps": 2, "step_s": s / 4, "forward_s": s / 8, "sample_s": 0.0}}
    return {"median_s": s, "steps": steptimer.breakdown([s], [st])}


def test_attribution_ratios_are_rollout_and_compat_over_the_bare_engine():
    results = {
        "sglang_jax": {"attribution": {"generate": {"bare_engine": _layer(2.0), "compat_engine": _layer(2.2),
                                                    "rollout": _layer(2.31)},
                                       "get_per_token_logps": {"bare_engine": _layer(1.0),
                                                               "compat_engine": _layer(1.0),
                                                               "rollout": _layer(1.5)}}},
        "vllm": {"attribution": {"generate": {"bare_engine": _layer(1.0), "rollout": _layer(1.02)}}},
        "reference": {"generate": {}},  # no attribution: left out
        "broken": {"error": "exit 1", "attribution": {"generate": {}}},
    }
    att = attribution(results)
    assert set(att) == {"sglang_jax", "vllm"}
    g = att["sglang_jax"]["generate"]
    assert g["rollout_overhead_ratio"] == pytest.approx(2.31 / 2.0)
    assert g["compat_overhead_ratio"] == pytest.approx(1.1)
    assert g["boundary_ratio"] == pytest.approx(2.31 / 2.2)
    assert att["sglang_jax"]["get_per_token_logps"]["rollout_overhead_ratio"] == pytest.approx(1.5)
    v = att["vllm"]["generate"]
    assert v["rollout_overhead_ratio"] == pytest.approx(1.02)
    assert v["compat_overhead_ratio"] is None and v["boundary_ratio"] is None  # no compat layer: n/a, not 1
    assert att["vllm"]["get_per_token_logps"]["rollout_overhead_ratio"] is None  # not measured: n/a
    text = "\n".join(format_attribution(att))
    assert "sglang_jax" in text and "1.16" in text and "decode" in text
