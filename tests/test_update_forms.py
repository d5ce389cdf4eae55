"""rollout_contract_update_params on pure logic: the forms tunix passes weights in, the probe that feeds each
through a rollout's update_params, and the verdict. The engine is a numpy stand-in whose probe scores are a
function of every weight, with update_params implementations that take effect, stay silently stale on tunix
states, reset what a partial update leaves out, or refuse; the real rollouts are probed by the default run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from harness.backends.update_forms import FORMS, forms_of, probe
from harness.checks.contract import _update_params
from harness.checks.data import Unavailable
from harness.rl.weights import flatten_state, looks_like_tunix, to_hf_named

CONFIG = {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "hidden_size": 8,
          "num_hidden_layers": 2}


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, h, kv, hd, inter, vocab = 8, 2, 1, 4, 16, 10
    w = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,), "lm_head.weight": (vocab, d)}
    for i in range(2):
        p = f"model.layers.{i}."
        w.update({p + "self_attn.q_proj.weight": (h * hd, d), p + "self_attn.k_proj.weight": (kv * hd, d),
                  p + "self_attn.v_proj.weight": (kv * hd, d), p + "self_attn.o_proj.weight": (d, h * hd),
                  p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,),
                  p + "mlp.gate_proj.weight": (inter, d), p + "mlp.up_proj.weight": (inter, d),
                  p + "mlp.down_proj.weight": (d, inter), p + "input_layernorm.weight": (d,),
                  p + "post_attention_layernorm.weight": (d,)})
    return {k: rng.normal(size=s).astype(np.float32) for k, s in w.items()}


A, B = _weights(0), _weights(1)


class Engine:
    """Live weights and a probe score that moves with every tensor."""

    def __init__(self, how: str):
        self.w, self.how = dict(A), how

    def score(self) -> list[float]:
        return [float(sum(np.sum(np.sin(v * (k + 1))) for _, v in sorted(self.w.items()))) for k in range(4)]

    def swap(self, which: dict) -> None:  # the harness's own swap: a whole model directory
        self.w = dict(which)

    def update_params(self, params, filter_types=None) -> None:
        if self.how == "refuses" and looks_like_tunix(flatten_state(params)):
            raise KeyError("update_params takes HuggingFace names only: no mapping for tunix parameter names")
        new = {k: np.asarray(v) for k, v in to_hf_named(params, filter_types).items()}
        if self.how == "stale_on_tunix" and looks_like_tunix(flatten_state(params)):
            return  # ignores names it does not know: the old weights stay live
        if self.how == "resets_rest":
            self.w = {**A, **new}  # reloads the model from its checkpoint, then the given tensors
            return
        self.w.update(new)


def _probe(how: str) -> dict:
    e = Engine(how)
    got = probe(update=e.update_params, score=e.score, swap_new=lambda: e.swap(B), swap_old=lambda: e.swap(A),
                forms=forms_of(B, CONFIG))
    assert e.w.keys() == A.keys() and all(np.array_equal(e.w[k], A[k]) for k in A)  # left on the old set
    return {"from": "A", "to": "B", **got}


def _verdict(pa: dict, pb: dict):
    rows = {"x": {(0, 0): SimpleNamespace(tunix={"update_params": pa})},
            "y": {(0, 0): SimpleNamespace(tunix={"update_params": pb})}}
    return _update_params(None, "x", "y", rows["x"], rows["y"], [(0, 0)], 1e-4)


def test_forms_carry_exactly_the_new_weights():
    forms = forms_of(B, CONFIG)
    assert set(forms) == set(FORMS)
    for name, form in forms.items():
        if isinstance(form, str):  # no flax here: the filtered nnx form cannot be built, and says why
            assert name == "tunix_state_filtered" and "flax" in form
            continue
        calls, how = form
        got = {}
        for params, ft in calls:
            got.update({k: np.asarray(v) for k, v in to_hf_named(params, ft).items()})
        assert got.keys() == B.keys() and all(np.array_equal(got[k], B[k]) for k in B), name
    assert len(forms["partial"][0]) == 2


def test_a_rollout_that_takes_every_form_passes():
    pa = _probe("good")
    assert pa["d_sets"] > 1e-2
    assert all(f["outcome"] in ("accepted", "not_built") for f in pa["forms"].values())
    assert all(f["d_new"] == 0.0 for f in pa["forms"].values() if f["outcome"] == "accepted")
    data, diffs = _verdict(pa, _probe("good"))
    assert diffs == [] and "hf_named: takes effect on both" in data["explained"]
    assert "partial" in data["compared"]


def test_silent_staleness_fails_naming_the_form():
    data, diffs = _verdict(_probe("good"), _probe("stale_on_tunix"))
    assert any(d.startswith("tunix_state: y accepted") and "kept the old weights" in d for d in diffs)
    assert data["forms"]["tunix_state"]["y"]["verdict"] == "silently stale"
    assert not any(d.startswith("hf_named") for d in diffs)


def test_a_partial_update_that_resets_the_rest_fails():
    data, diffs = _verdict(_probe("resets_rest"), _probe("good"))
    assert any(d.startswith("partial: x accepted") and "runs neither weight set" in d for d in diffs)
    assert data["forms"]["tunix_state"]["x"]["verdict"] == "takes effect"  # whole states are fine


def test_refused_by_one_rollout_only_fails_and_by_both_passes():
    data, diffs = _verdict(_probe("good"), _probe("refuses"))
    assert any(d.startswith("tunix_state: x takes effect, y refused") and "KeyError" in d for d in diffs)
    assert not any(d.startswith("hf_named") for d in diffs)
    data, diffs = _verdict(_probe("refuses"), _probe("refuses"))
    assert diffs == [] and "tunix_state: refused on both" in data["explained"]


def test_missing_or_blind_probe_is_never_a_pass():
    with pytest.raises(Unavailable) as e:
        _verdict(_probe("good"), None)
    assert e.value.outcome == "skipped" and "no update_params probe" in str(e.value)
    blind = {**_probe("good"), "d_sets": 0.0}
    with pytest.raises(Unavailable) as e:
        _verdict(_probe("good"), blind)
    assert e.value.outcome == "error"
