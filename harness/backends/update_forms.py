"""The forms in which tunix hands a rollout new weights, and a probe of what each does to a live engine.

tunix calls `rollout.update_params(params, filter_types=None)` with (tunix 0.1.x, rl/rl_cluster.py):

- `nnx.state(actor, nnx.Param)` and `filter_types=(nnx.Param,)` (`RLCluster.sync_weights`, every step);
- `nnx.state(model)`, no filter (reloading an offloaded rollout model around generate / logps);
- `params` as given to `_update_models_sharing_weights`, possibly a part of the model.

The probe (harness/recorder.py, once per `tunix: true` case of an in-process engine rollout) gives the live
rollout weight set B in each form below, scores fixed tokens, and puts the live set back with the
harness's own swap (a model directory). Forms:

- `hf_named`: {HuggingFace name: numpy array}: what every non-tunix caller passes;
- `tunix_state`: the whole state in tunix's Qwen3 names and layouts (`nnx.state(model)`): an `nnx.State`
  of `nnx.Param` where flax is importable, else the nested dict `nnx.State.to_pure_dict()` gives;
- `tunix_state_filtered`: the same, with `filter_types=(nnx.Param,)`, as `sync_weights` calls it (needs
  flax: without it the form cannot be built and is recorded as such, never as a pass);
- `partial`: the tunix state in two calls (embedding + first layer, then the rest): an update of part of
  the model must change that part and keep the rest.

Each outcome is recorded with its distances (max |dlogp| of the probe tokens) to the harness's own swap to
B (`d_new`) and to the set that was live before (`d_old`), or the exception a refusing rollout raised;
`harness/checks/contract.py` (`rollout_contract_update_params`) judges them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

FORMS = ("hf_named", "tunix_state", "tunix_state_filtered", "partial")


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for name, v in flat.items():
        node = out
        parts = name.split(".")
        for p in parts[:-1]:
            node = node.setdefault(int(p) if p.isdigit() else p, {})
        node[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = v
    return out


def _state(flat: dict[str, Any]) -> tuple[Any, str]:
    """A tunix-named state as tunix hands it: nnx.State of nnx.Param where flax is importable."""
    try:
        from flax import nnx
    except ImportError:
        return _nest(flat), "dict (nnx.State.to_pure_dict() layout; flax is not installed here)"
    return nnx.State(_nest({k: nnx.Param(np.asarray(v)) for k, v in flat.items()})), "nnx.State of nnx.Param"


def build_forms(model_dir: str | Path) -> dict[str, tuple[list[tuple[Any, Any]], str] | str]:
    """The forms of a model directory's weights (forms_of)."""
    from safetensors.numpy import load_file

    d = Path(model_dir)
    hf: dict[str, np.ndarray] = {}
    for f in sorted(d.glob("*.safetensors")):
        hf.update(load_file(str(f)))
    return forms_of(hf, json.loads((d / "config.json").read_text()))


def forms_of(hf: dict[str, np.ndarray], config: dict) -> dict[str, tuple[list[tuple[Any, Any]], str] | str]:
    """form -> ([(params, filter_types) per update_params call], how it was built), or the reason the form
    cannot be built in this venv. `hf`: HuggingFace-named arrays of a Qwen3 model, `config` its config.json."""
    from harness.rl.weights import hf_to_tunix

    tunix = hf_to_tunix(hf, config)
    forms: dict[str, Any] = {"hf_named": ([(hf, None)], "dict HF name -> numpy array")}
    state, how = _state(tunix)
    forms["tunix_state"] = ([(state, None)], how)
    try:
        from flax import nnx

        forms["tunix_state_filtered"] = ([(state, (nnx.Param,))], f"{how}, filter_types=(nnx.Param,)")
    except ImportError:
        forms["tunix_state_filtered"] = "flax is not installed in this venv: nnx filter types cannot be built"
    first = {k: v for k, v in tunix.items() if k.startswith(("embedder.", "layers.0."))}
    rest = {k: v for k, v in tunix.items() if k not in first}
    forms["partial"] = ([(_state(first)[0], None), (_state(rest)[0], None)],
                        f"{how} in two calls: {len(first)} tensors (embedding, layer 0), then the other {len(rest)}")
    return forms


def _dist(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return float("inf")
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def probe(update: Callable[[Any, Any], Any], score: Callable[[], list[float]], swap_new: Callable[[], None],
          swap_old: Callable[[], None], forms: dict) -> dict:
    """Each form of the new weights (`forms`: forms_of) through `update` (the rollout's update_params), `score`
    after it, the old set put back with `swap_old` (the harness's own swap) after each; `swap_new` gives the
    expected scores.
    The engine ends on the old set, verified (a probe that cannot restore it raises)."""
    old = score()
    swap_new()
    new = score()
    swap_old()
    if _dist(score(), old) > 1e-4:
        raise RuntimeError("update_params probe: the harness's own swap back did not restore the live weights")
    out: dict[str, Any] = {"probe_tokens": len(old), "d_sets": _dist(old, new), "forms": {}}
    for name, form in forms.items():
        if isinstance(form, str):
            out["forms"][name] = {"outcome": "not_built", "reason": form}
            continue
        calls, how = form
        try:
            for params, filter_types in calls:
                update(params, filter_types)
        except Exception as e:  # noqa: BLE001 - a refusal is what the rollout answers; recorded, judged by the check
            got = {"outcome": "refused", "error": f"{type(e).__name__}: {str(e)[:300]}", "built_as": how}
        else:
            lp = score()
            got = {"outcome": "accepted", "d_new": _dist(lp, new), "d_old": _dist(lp, old), "built_as": how}
        swap_old()
        out["forms"][name] = got
    if _dist(score(), old) > 1e-4:
        raise RuntimeError("update_params probe: the live weights were not restored after the forms")
    return out
